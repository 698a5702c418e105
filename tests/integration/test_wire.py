"""Credentials on the wire, through a real instance: the token goes only over verified TLS
to the route's port.

One upstream container answers as ``upstream.test`` (TLS on 443 and 8443, plain HTTP on 80,
a certificate from a test CA made for this run and trusted through BOTTLE_EXTRA_CA_CERTS)
and as ``untrusted.test`` (TLS on 9443, a certificate from a CA nobody trusts). It writes
every request it receives, headers included, to a file: what it received is the proof of
what left egress, whatever the response scanning does to the echo.
"""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import user_owned, wait_for, write

pytestmark = pytest.mark.docker

TOKEN = "wire-" + "5c1d9e2f7a3b8c4d" * 2
ROUTES_BOTTLE = """---
agent: {provider: shell}
supervise: false
egress:
  routes:
    - host: upstream.test
      auth: {scheme: bearer, token_ref: IT_WIRE_TOKEN}
      private: true   # a container on the bottle's egress network
    - host: untrusted.test
      port: 9443
      auth: {scheme: bearer, token_ref: IT_WIRE_TOKEN}
      private: true
---
"""

SERVER = r"""
import http.server as h, json, os, ssl, threading
for name in ("GOOD", "BAD"):
    with open(f"/tmp/{name}.pem", "w") as f:
        f.write(os.environ[name + "_CERT"] + os.environ[name + "_KEY"])
lock = threading.Lock()
class H(h.BaseHTTPRequestHandler):
    def do_GET(self):
        seen = {"port": self.server.server_address[1], "path": self.path,
                "headers": [[k, v] for k, v in self.headers.items()]}
        with lock, open("/tmp/seen.jsonl", "a") as f:
            f.write(json.dumps(seen) + "\n")
        body = json.dumps(seen).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_POST = do_GET
    def log_message(self, *args):
        pass
def serve(port, pem):
    srv = h.ThreadingHTTPServer(("", port), H)
    if pem:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pem)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
serve(80, None)
serve(443, "/tmp/GOOD.pem")
serve(8443, "/tmp/GOOD.pem")
serve(9443, "/tmp/BAD.pem")
threading.Event().wait()
"""

PROBE = r"""
import socket, ssl, sys
for port in (80, 443, 8443, 9443):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.close()
"""


# -- a CA made for this run --------------------------------------------------------------------


def _pem_pair(
    common_name: str, sans: list[str], issuer: tuple[Any, Any] | None
) -> tuple[str, str, Any, Any]:
    """(cert PEM, key PEM, cert, key): a CA when ``issuer`` is None, else a server cert."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    issuer_cert, issuer_key = issuer if issuer is not None else (None, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
    )
    if issuer is None:
        builder = builder.add_extension(
            x509.BasicConstraints(ca=True, path_length=0), critical=True
        ).add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
            .add_extension(
                x509.SubjectAlternativeName([x509.DNSName(name) for name in sans]), False
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        )
    cert = builder.sign(issuer_key, hashes.SHA256())
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert_pem, key_pem, cert, key


class Wire:
    def __init__(self, instance: Any, upstream: str) -> None:
        self.instance = instance
        self.upstream = upstream

    def curl(self, url: str, *extra: str) -> tuple[str, str]:
        """(body, status) of ``url`` fetched by the agent, through egress."""
        out = self.instance.exec(
            ["curl", "-sS", "-m", "20", "-w", "\n%{http_code}", *extra, url], capture=True
        ).stdout
        body, _, code = out.rpartition("\n")
        return body, code

    def received(self) -> list[dict[str, Any]]:
        """Every request the upstream received (on any port), in order."""
        out = subprocess.run(
            ["docker", "exec", self.upstream, "sh", "-c", "cat /tmp/seen.jsonl 2>/dev/null; true"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def received_at(self, path: str) -> list[dict[str, Any]]:
        return [seen for seen in self.received() if seen["path"].startswith(path)]


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[Wire]:
    from bottle import Bottle

    root = tmp_path_factory.mktemp("wire")
    ca_pem, _, ca_cert, ca_key = _pem_pair("bottle wire test CA", [], None)
    good_cert, good_key, _, _ = _pem_pair("upstream.test", ["upstream.test"], (ca_cert, ca_key))
    # Signed by a CA egress does not trust: a man in the middle, as egress sees it.
    _, _, rogue_cert, rogue_key = _pem_pair("rogue CA", [], None)
    bad_cert, bad_key, _, _ = _pem_pair(
        "untrusted.test", ["untrusted.test"], (rogue_cert, rogue_key)
    )
    ca_file = write(root / "test-ca.pem", ca_pem)
    home = root / "home"
    write(home / "bottles" / "wire.md", ROUTES_BOTTLE)
    write(home / "agents" / "wire.md", "---\nbottle: wire\n---\n")
    workdir = root / "work"
    workdir.mkdir()
    user_owned(workdir)  # the agent runs as the workspace's owner, never root
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("BOTTLE_HOME", str(home))
        patch.setenv("BOTTLE_EXTRA_CA_CERTS", str(ca_file))
        patch.setenv("IT_WIRE_TOKEN", TOKEN)
        with Bottle("wire", cwd=workdir).start() as instance:
            name = f"bottle-it-wire-{uuid.uuid4().hex[:8]}"
            env = {
                "GOOD_CERT": good_cert,
                "GOOD_KEY": good_key,
                "BAD_CERT": bad_cert,
                "BAD_KEY": bad_key,
            }
            argv = ["docker", "run", "-d", "--name", name, "--label", "bottle.test=upstream"]
            argv += ["--network", f"{instance.metadata.compose_project}_egress"]
            argv += ["--network-alias", "upstream.test", "--network-alias", "untrusted.test"]
            for key in env:
                argv += ["-e", key]
            argv += [instance.metadata.images["sidecar"], "python", "-c", SERVER]
            subprocess.run(argv, check=True, capture_output=True, env={**os.environ, **env})
            try:
                wait_for(
                    lambda: (
                        subprocess.run(
                            ["docker", "exec", name, "python", "-c", PROBE],
                            capture_output=True,
                            check=False,
                        ).returncode
                        == 0
                    ),
                    60,
                    "the upstream to listen on 80, 443, 8443 and 9443",
                    poll=0.2,
                )
                yield Wire(instance, name)
            finally:
                subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def _authorization(seen: dict[str, Any]) -> list[str]:
    return [value for name, value in seen["headers"] if name.lower() == "authorization"]


def test_the_token_goes_only_over_tls_to_port_443(wire: Wire) -> None:
    body, code = wire.curl(
        "https://upstream.test/wire/tls", "-H", "Authorization: Bearer agent-made-this-up"
    )
    assert code == "200", body
    (seen,) = wire.received_at("/wire/tls")
    assert seen["port"] == 443
    assert _authorization(seen) == [f"Bearer {TOKEN}"]


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://upstream.test/wire/plain", ["plain HTTP", "https://upstream.test/"]),
        ("https://upstream.test:8443/wire/port", ["port 8443", "port 443"]),
        ("http://upstream.test:443/wire/plain443", ["plain HTTP"]),
    ],
)
def test_plain_http_and_other_ports_get_a_403_and_no_token(
    wire: Wire, url: str, words: list[str]
) -> None:
    body, code = wire.curl(url)
    assert code == "403", body
    refusal = json.loads(body)
    assert refusal["error"] == "egress_refused"
    for word in words:
        assert word in refusal["reason"]
    assert TOKEN not in body
    # Nothing reached the upstream at all on that way: not the token, not the request.
    path = url.split("upstream.test", 1)[1].split("/", 1)[1]
    assert wire.received_at("/" + path) == []
    assert all(TOKEN not in json.dumps(seen) for seen in wire.received() if seen["port"] != 443)


def test_an_upstream_with_an_untrusted_certificate_gets_no_token(wire: Wire) -> None:
    body, code = wire.curl("https://untrusted.test:9443/wire/rogue")
    assert code == "502", body
    assert TOKEN not in body
    assert "certificate" in body.lower()
    assert wire.received_at("/wire/rogue") == []
    assert all(seen["port"] != 9443 for seen in wire.received())


def test_the_token_is_never_in_the_agent_or_the_state(wire: Wire) -> None:
    instance = wire.instance
    env = instance.exec(
        ["sh", "-c", "cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'"], capture=True
    )
    assert "IT_WIRE_TOKEN=bottle-egress-injects-this" in env.stdout
    assert TOKEN not in env.stdout
    files = instance.exec(
        [
            "sh",
            "-c",
            "grep -rl --exclude-dir=proc --exclude-dir=sys " + TOKEN + " / 2>/dev/null; true",
        ],
        capture=True,
    )
    assert files.stdout.strip() == ""
    # A request carrying the token itself is refused by DLP, and the token is not echoed.
    body, code = wire.curl(f"https://upstream.test/wire/leak?q={TOKEN}")
    assert code == "403" and TOKEN not in body and "egress_dlp" in body
    assert wire.received_at("/wire/leak") == []
    instance.save_compose_log()
    for path in Path(instance.state.path).rglob("*"):
        if path.is_file() and path.parent.name != "ca-private":
            assert TOKEN.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("X-Original-URL: /repo.git/git-receive-pack", "git push"),
        ("x-REWRITE-url: http://169.254.169.254/latest/meta-data/", "another path"),
        ("X-Envoy-Original-Path: /wire/..;/admin", "another path"),
        ("X-Forwarded-Path: wire/relative", "another path"),
    ],
    ids=["git-push", "absolute-url", "ambiguous", "relative"],
)
def test_a_path_override_header_egress_cannot_match_is_refused_unsent(
    wire: Wire, header: str, why: str
) -> None:
    # From inside the agent: a front end that takes the path from such a header would serve
    # what no route was checked against; egress refuses before anything leaves.
    marker = f"/wire/override-{abs(hash(header)) % 10**8}"
    body, code = wire.curl(f"https://upstream.test{marker}", "-H", header)
    assert code == "403", body
    refusal = json.loads(body)
    assert refusal["error"] == "egress_refused" and why in refusal["reason"], refusal
    assert wire.received_at(marker) == []
