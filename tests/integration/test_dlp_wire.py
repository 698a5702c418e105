"""DLP on the wire: a real egress in front of an upstream (TLS, a test CA trusted through
BOTTLE_EXTRA_CA_CERTS, as credentials go only over verified TLS) that echoes what it got.

The upstream hands back every request header (so the credential egress injected) and the
body, plainly, gzip-compressed, and split across two chunks of a chunked response; the agent
must see none of it. A known secret after the first MiB of a request body is refused.
One instance for the whole module.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for, write
from tests.integration.conftest import UPSTREAM_HOST, WORKSPACE_OWNER, _leftovers
from tests.integration.test_wire import _pem_pair

pytestmark = pytest.mark.docker

TOKEN = "wire-tok-" + "5d1c9e7a3b" * 3  # injected by egress; the agent never holds it
EXTRA = "wire-extra-" + "a8f2c6e0" * 3  # a dlp_secrets value the agent got hold of
MARKER = "[bottle:scrubbed]"
ECHO_NAME: dict[str, str] = {}  # compose project -> its echo upstream's container

BOTTLE = """---
agent: {provider: shell}
supervise: false
egress:
  routes:
    - host: upstream.test   # bulk data: no scan, so its bodies stream
      paths: ["/bulk/"]
      methods: [POST]
      dlp: "off"
      private: true
    - host: upstream.test
      methods: [GET, POST]
      auth: {scheme: bearer, token_ref: DLPW_TOKEN}
      private: true   # upstream.test is a container on the bottle's network
  dlp_secrets: [DLPW_EXTRA]
---
"""

# Echoes the request: headers then body; /gzip compresses the answer, /chunks sends it as
# two chunks cut in the middle of the Authorization header, with a pause between them.
ECHO = r"""
import gzip, http.server as h, os, ssl, time
with open("/tmp/up.pem", "w") as f:
    f.write(os.environ["UP_CERT"] + os.environ["UP_KEY"])
class H(h.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def body(self):
        if "chunked" not in self.headers.get("transfer-encoding", "").lower():
            n = int(self.headers.get("content-length") or 0)
            return self.rfile.read(n) if n else b""
        parts = []
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            parts.append(self.rfile.read(size)); self.rfile.readline()
            if not size:
                return b"".join(parts)
    def do_GET(self):
        body = self.body()
        print("GOT", self.path, len(body), flush=True)  # what reached upstream, for the tests
        echo = ("".join(f"{k}: {v}\n" for k, v in self.headers.items())).encode() + body
        if self.path.startswith("/chunks"):
            self.send_response(200); self.send_header("transfer-encoding", "chunked"); self.end_headers()
            cut = echo.index(b"Bearer ") + 12
            for part in (echo[:cut], echo[cut:]):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part)); self.wfile.flush(); time.sleep(0.3)
            self.wfile.write(b"0\r\n\r\n"); return
        if self.path.startswith("/reason"):  # the token in the reason phrase
            self.send_response(200, "OK " + self.headers.get("authorization", ""))
            self.send_header("content-length", str(len(echo))); self.end_headers()
            self.wfile.write(echo); return
        if self.path.startswith("/gzip-chunks"):  # declared gzip, in 5-byte chunks
            packed = gzip.compress(echo)
            self.send_response(200); self.send_header("content-encoding", "gzip")
            self.send_header("transfer-encoding", "chunked"); self.end_headers()
            for i in range(0, len(packed), 5):
                part = packed[i:i + 5]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part)); self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n"); return
        if self.path.startswith("/undeclared"):  # gzip, no content-encoding: a "download"
            self.send_response(200); self.send_header("content-type", "application/gzip")
            packed = gzip.compress(os.urandom(3 << 20) + echo)  # past the 1 MiB held whole
            self.send_header("content-length", str(len(packed))); self.end_headers()
            self.wfile.write(packed); return
        if self.path.startswith("/partial"):  # the token partly URL-encoded
            token = self.headers.get("authorization", "").split()[-1]
            echo = ("".join(f"%{ord(c):02X}" for c in token[:6]) + token[6:]).encode()
        if self.path.startswith("/mime"):  # MIME base64: 76 columns, CRLF
            import base64
            echo = base64.encodebytes(echo).replace(b"\n", b"\r\n")
        if self.path.startswith("/gzip"):
            echo = gzip.compress(echo)
        self.send_response(200)
        self.send_header("x-echo-auth", self.headers.get("authorization", ""))
        if self.path.startswith("/gzip"):
            self.send_header("content-encoding", "gzip")
        self.send_header("content-length", str(len(echo))); self.end_headers(); self.wfile.write(echo)
    do_POST = do_GET
srv = h.ThreadingHTTPServer(("", 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("/tmp/up.pem")
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"""


@contextlib.contextmanager
def echo_upstream(project: str, image: str, cert: tuple[str, str]) -> Iterator[str]:
    name = f"bottle-it-echo-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [
            *("docker", "run", "-d", "--name", name, "--network", f"{project}_egress"),
            *("--network-alias", UPSTREAM_HOST, "--label", "bottle.test=upstream"),
            *("-e", "UP_CERT", "-e", "UP_KEY", image, "python", "-c", ECHO),
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "UP_CERT": cert[0], "UP_KEY": cert[1]},
    )
    probe = "import socket; socket.create_connection(('127.0.0.1', 443), timeout=2).close()"
    try:
        wait_for(
            lambda: (
                subprocess.run(
                    ["docker", "exec", name, "python", "-c", probe],
                    capture_output=True,
                    check=False,
                ).returncode
                == 0
                or None
            ),
            60,
            "the echo upstream to listen",
            poll=0.2,
        )
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[Any]:
    from bottle import Bottle

    home = tmp_path_factory.mktemp("dlp-home")
    workdir = tmp_path_factory.mktemp("dlp-work")
    if os.getuid() == 0:  # the agent runs as the workspace's owner, never as root
        os.chown(workdir, *WORKSPACE_OWNER)
    ca_pem, _, ca_cert, ca_key = _pem_pair("bottle dlp test CA", [], None)
    cert, key, _, _ = _pem_pair(UPSTREAM_HOST, [UPSTREAM_HOST], (ca_cert, ca_key))
    ca_file = write(tmp_path_factory.mktemp("dlp-ca") / "test-ca.pem", ca_pem)
    write(home / "bottles" / "dlpw.md", BOTTLE)
    write(home / "agents" / "dlpw.md", "---\nbottle: dlpw\n---\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BOTTLE_HOME", str(home))
        mp.setenv("DLPW_TOKEN", TOKEN)
        mp.setenv("DLPW_EXTRA", EXTRA)
        mp.setenv("BOTTLE_EXTRA_CA_CERTS", str(ca_file))
        with Bottle("dlpw", cwd=workdir).start() as instance:
            meta = instance.metadata
            with echo_upstream(meta.compose_project, meta.images["sidecar"], (cert, key)) as name:
                ECHO_NAME[instance.metadata.compose_project] = name  # for _upstream_got
                yield instance
        leftovers = _leftovers(Path(home))
        assert leftovers is None, f"containers/networks left behind: {leftovers}"


def agent_curl(instance: Any, *args: str) -> str:
    result = instance.exec(["curl", "-sS", "-i", "--compressed", *args], capture=True)
    assert result.exit_code == 0, result.stderr
    out: str = result.stdout
    return out


@pytest.mark.parametrize("path", ["/plain", "/gzip", "/chunks"])
def test_injected_token_never_reaches_the_agent(wire: Any, path: str) -> None:
    out = agent_curl(wire, f"https://{UPSTREAM_HOST}{path}")
    assert "200" in out.splitlines()[0]
    assert TOKEN not in out
    # The upstream got the real token (egress injected it) and echoed it: the agent sees the
    # marker where it stood, in the echoed body, and in the header for the plain answer.
    assert f"Bearer {MARKER}" in out
    if path != "/chunks":
        assert f"x-echo-auth: Bearer {MARKER}" in out
    if path == "/gzip":
        assert "content-encoding" not in out.lower()
    # The decision log says what was removed, and never the token itself.
    log = wire.state.egress_log.read_text()
    assert TOKEN not in log
    lines = [json.loads(line) for line in log.splitlines()]
    (entry,) = [e for e in lines if e["path"] == path]
    assert "secret:DLPW_TOKEN in body" in entry["scrubbed"]


def test_an_echo_in_the_reason_phrase_never_reaches_the_agent(wire: Any) -> None:
    # Trailers are scrubbed too (tests/unit/test_scrub.py), but only HTTP/2 brings them:
    # mitmproxy 12 reads none from an HTTP/1 upstream (it drops the connection instead).
    # HTTP/1.1 to egress too: HTTP/2 has no reason phrase to carry it on.
    out = agent_curl(wire, "--http1.1", f"https://{UPSTREAM_HOST}/reason")
    assert TOKEN not in out
    status, _ = _final(out)
    assert status == f"HTTP/1.1 200 OK Bearer {MARKER}", out[:300]
    lines = [json.loads(line) for line in wire.state.egress_log.read_text().splitlines()]
    (entry,) = [e for e in lines if e["path"] == "/reason"]
    assert "secret:DLPW_TOKEN in reason phrase" in entry["scrubbed"], entry


def _visible(data: bytes) -> list[Any]:
    """What DLP still finds of the token in ``data``: every form, decoded views, compression
    (a cut gzip body decoded as far as it goes)."""
    from bottle.runtime.egress import dlp

    secrets = dlp.known_secrets(["T"], {"T": TOKEN})
    found = dlp.scan_body(data, "", secrets)[0]
    packed = data.split(b"\n[bottle: the rest of this response was withheld")[0]
    with contextlib.suppress(zlib.error):
        found += dlp.scan_body(zlib.decompressobj(31).decompress(packed), "", secrets)[0]
    return found


@pytest.mark.parametrize("path", ["/gzip-chunks", "/undeclared", "/partial", "/mime"])
def test_an_encoded_or_compressed_echo_never_reaches_the_agent(wire: Any, path: str) -> None:
    fetch = f"curl -sS -o /tmp/got https://{UPSTREAM_HOST}{path} && base64 -w0 /tmp/got"
    result = wire.exec(["sh", "-c", fetch], capture=True)
    assert result.exit_code == 0, result.stderr
    got = base64.b64decode(result.stdout)
    assert got and not _visible(got), (path, got[-300:])
    lines = [json.loads(line) for line in wire.state.egress_log.read_text().splitlines()]
    (entry,) = [e for e in lines if e["path"] == path]
    assert "secret:DLPW_TOKEN in body" in entry["scrubbed"], entry
    if path == "/undeclared":  # passed on as it came until the secret: then cut, and said so
        assert got[:2] == b"\x1f\x8b" and b"[bottle: the rest of this response was withheld" in got
        assert "secret was found in its gzip data" in entry["reason"]
    if path == "/gzip-chunks":
        assert f"Bearer {MARKER}".encode() in got  # decoded, scrubbed, sent on as identity


def test_secret_after_the_first_mib_of_a_request_body_is_refused(wire: Any) -> None:
    make = f"import sys; sys.stdout.write('a' * (2 << 20) + '{EXTRA}')"
    result = wire.exec(
        [
            "sh",
            "-c",
            f'python3 -c "{make}" > /tmp/big && curl -sS -w " %{{http_code}}" '
            f"--data-binary @/tmp/big https://{UPSTREAM_HOST}/post",
        ],
        capture=True,
    )
    assert result.stdout.endswith(" 403"), result.stdout[-300:]
    assert "egress_dlp" in result.stdout and EXTRA not in result.stdout
    # The same size without the secret goes through: the refusal is about the secret.
    clean = wire.exec(
        [
            "sh",
            "-c",
            "head -c 2097152 /dev/zero | tr '\\0' a > /tmp/clean && curl -sS -o /dev/null "
            f'-w "%{{http_code}}" --data-binary @/tmp/clean https://{UPSTREAM_HOST}/post',
        ],
        capture=True,
    )
    assert clean.stdout == "200", clean.stdout


def _egress_memory(instance: Any) -> tuple[int, int]:
    """(usage now, peak since start) of the egress container's memory cgroup, in bytes."""
    project = instance.metadata.compose_project
    cid = subprocess.run(
        [
            *("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"),
            *("--filter", "label=com.docker.compose.service=egress"),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[0]
    read = (
        "d=/sys/fs/cgroup; if [ -f $d/memory.peak ]; then cat $d/memory.current $d/memory.peak; "
        "else cat $d/memory/memory.usage_in_bytes $d/memory/memory.max_usage_in_bytes; fi"
    )
    out = subprocess.run(
        ["docker", "exec", cid, "sh", "-c", read], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1])


MIB = 1 << 20
BULK = 256 * MIB


def test_a_large_upload_and_download_stream_through_in_bounded_memory(wire: Any) -> None:
    """256 MiB up (dlp off: streamed) and the same echoed back (scrubbed as it streams):
    egress's memory peak grows by far less than the body, which it never holds."""
    wire.exec(["sh", "-c", f"head -c {BULK} /dev/zero | tr '\\0' b > /tmp/bulk"])
    before, _ = _egress_memory(wire)
    result = wire.exec(
        [
            "sh",
            "-c",
            "curl -sS -X POST -T /tmp/bulk -H 'content-type: application/octet-stream' "
            f"-o /tmp/back -w '%{{http_code}} ' https://{UPSTREAM_HOST}/bulk/up "
            "&& wc -c < /tmp/back && tail -c 5 /tmp/back",
        ],
        capture=True,
    )
    assert len(result.stdout.split()) == 3, (result.stdout, result.stderr)
    code, size, tail = result.stdout.split()
    assert code == "200", result.stdout
    assert int(size) > BULK and tail == "bbbbb"  # the echo: headers, then the whole body
    _, peak = _egress_memory(wire)
    assert peak - before < 96 * MIB, f"egress grew by {(peak - before) >> 20} MiB"


def _upstream_got(wire: Any) -> str:
    """What the echo upstream printed: one ``GOT <path> <body length>`` line per request."""
    name = ECHO_NAME[wire.metadata.compose_project]
    return subprocess.run(
        ["docker", "logs", name], capture_output=True, text=True, check=True
    ).stdout


def _final(out: str) -> tuple[str, str]:
    """(status line, rest) of the final answer in ``curl -i`` output, past the proxy's CONNECT
    answer and any ``100 Continue``."""
    while out.startswith(("HTTP/1.1 200 Connection established", "HTTP/1.1 100", "HTTP/2 100")):
        out = out.split("\r\n\r\n", 1)[1]
    status, _, rest = out.partition("\r\n")
    return status, rest


def _refusal(out: str) -> dict[str, Any]:
    status, rest = _final(out)
    assert " 403" in status, out[:500]
    data: dict[str, Any] = json.loads(rest.partition("\r\n\r\n")[2])
    return data


def test_a_declared_body_too_long_to_scan_is_refused_before_it_is_read(wire: Any) -> None:
    # 40 MiB to the credentialed route (dlp: block holds at most 32 MiB to scan): a 403 with
    # the JSON reason, answered before the body is read; upstream never sees the request.
    wire.exec(["sh", "-c", "head -c 41943040 /dev/zero > /tmp/long"])
    out = agent_curl(wire, "-X", "POST", "-T", "/tmp/long", f"https://{UPSTREAM_HOST}/long")
    refusal = _refusal(out)
    assert refusal["error"] == "egress_dlp" and TOKEN not in out
    assert "cannot be scanned before it is sent" in refusal["reason"]
    lines = [json.loads(line) for line in wire.state.egress_log.read_text().splitlines()]
    (entry,) = [e for e in lines if e["path"] == "/long"]
    assert entry["decision"] == "dlp-block" and "was not read" in entry["reason"]
    assert "GOT /long " not in _upstream_got(wire)
    # Within the bound, the same route holds and scans the body, then sends it.
    ok = wire.exec(
        [
            "sh",
            "-c",
            "head -c 8388608 /dev/zero > /tmp/mid && curl -sS -o /dev/null -w '%{http_code}' "
            f"-X POST -T /tmp/mid https://{UPSTREAM_HOST}/mid",
        ],
        capture=True,
    )
    assert ok.stdout == "200", ok.stdout
    assert "GOT /mid 8388608" in _upstream_got(wire)


def _chunked(wire: Any, source: str, path: str, *flags: str) -> str:
    """POST of ``source``'s output with no length declared (curl -T -: chunked on HTTP/1,
    DATA frames with no content-length on HTTP/2)."""
    result = wire.exec(
        [
            "sh",
            "-c",
            f"{source} | curl -sS -i {' '.join(flags)} -X POST -T - https://{UPSTREAM_HOST}{path}",
        ],
        capture=True,
    )
    out: str = result.stdout
    return out


@pytest.mark.parametrize("flags", [("--http1.1",), ("--http2",)], ids=["http1-chunked", "h2"])
def test_a_body_of_undeclared_length_is_held_bounded_and_refused_unsent(
    wire: Any, flags: tuple[str, ...]
) -> None:
    tag = flags[0].strip("-")
    # Clean and within the bound: held, scanned, then sent whole.
    out = _chunked(wire, "head -c 3000000 /dev/zero", f"/held-{tag}", *flags)
    status, _ = _final(out)
    assert status.startswith("HTTP/2 200" if tag == "http2" else "HTTP/1.1 200"), out[:300]
    assert f"GOT /held-{tag} 3000000" in _upstream_got(wire)
    # A secret after 2 MiB: refused, and upstream got nothing (not even the headers).
    make = f"python3 -c \"import sys; sys.stdout.write('a' * (2 << 20) + '{EXTRA}')\""
    refusal = _refusal(_chunked(wire, make, f"/secret-{tag}", *flags))
    assert refusal["error"] == "egress_dlp" and "secret:DLPW_EXTRA" in refusal["reason"]
    # Past the bound (160 MiB, no length): refused as the held part passes 32 MiB; egress's
    # memory grows by far less than the body (read whole, it would grow by 160 MiB), and
    # nothing of it reached upstream.
    before, _ = _egress_memory(wire)
    refusal = _refusal(_chunked(wire, f"head -c {160 * MIB} /dev/zero", f"/over-{tag}", *flags))
    assert "of undeclared length cannot be scanned" in refusal["reason"]
    _, peak = _egress_memory(wire)
    assert peak - before < 96 * MIB, f"egress grew by {(peak - before) >> 20} MiB"
    got = _upstream_got(wire)
    assert f"GOT /secret-{tag}" not in got and f"GOT /over-{tag}" not in got
    # A body that holds a whole request reaches upstream as a body, never as a request of
    # its own (HTTP/2 to an HTTP/1 upstream: framed, streamed on dlp: off as well as held).
    smuggle = "printf 'GET /smuggled HTTP/1.1\\r\\nHost: upstream.test\\r\\n\\r\\n'"
    for path in (f"/bulk/{tag}", f"/smuggle-{tag}"):
        assert "200" in _final(_chunked(wire, smuggle, path, *flags))[0]
    got = _upstream_got(wire)
    assert f"GOT /bulk/{tag} 47" in got and f"GOT /smuggle-{tag} 47" in got, got
    assert "GOT /smuggled" not in got
    # The connection and egress are still fine for the next request.
    assert "200" in agent_curl(wire, f"https://{UPSTREAM_HOST}/plain").splitlines()[0]


def test_a_kept_alive_connection_carries_many_requests(wire: Any) -> None:
    # One curl, one HTTP/1.1 connection: each request after the first reuses egress's upstream
    # connection. Before, every one opened another, and the sixth waited forever on
    # mitmproxy's limit of 5 connections per address.
    urls = [f"https://{UPSTREAM_HOST}/keep/{i}" for i in range(10)]
    outputs = [arg for url in urls for arg in ("-o", "/dev/null", url)]  # -o is per URL
    result = wire.exec(
        ["curl", "-sS", "--http1.1", "--max-time", "60", "-w", "%{http_code}\n", *outputs],
        capture=True,
    )
    assert result.stdout.split() == ["200"] * 10, (result.stdout, result.stderr)
    got = _upstream_got(wire)
    assert all(f"GOT /keep/{i} 0" in got for i in range(10)), got


def test_a_method_field_on_a_post_only_dlp_off_route_is_read_before_any_of_it_leaves(
    wire: Any,
) -> None:
    """/bulk/ allows POST alone and does not scan (its bodies stream): a form's
    ``_method=DELETE``, which Rails or Laravel would run as a DELETE, is refused and
    upstream never sees it; a form without one, and a binary body, still go through."""
    url = f"https://{UPSTREAM_HOST}/bulk"
    refusal = _refusal(agent_curl(wire, "-d", "a=1&_method=DELETE", f"{url}/override"))
    assert refusal["error"] == "egress_refused" and "body field _method" in refusal["reason"]
    json_body = '{"_method": "PATCH"}'
    refusal = _refusal(agent_curl(wire, "-H", "content-type: application/vnd.api+json",
                                  "-d", json_body, f"{url}/override-json"))  # fmt: skip
    assert "body field _method" in refusal["reason"]
    assert "200" in _final(agent_curl(wire, "-d", "a=1&b=2", f"{url}/form"))[0]
    binary = ["-H", "content-type: application/octet-stream", "--data-binary", "_method=DELETE"]
    assert "200" in _final(agent_curl(wire, *binary, f"{url}/binary"))[0]
    got = _upstream_got(wire)
    assert "GOT /bulk/override" not in got and "GOT /bulk/form 7" in got, got
    assert "GOT /bulk/binary 14" in got


def test_a_method_field_in_a_multipart_a_query_or_a_gzip_body_is_refused_unsent(
    wire: Any,
) -> None:
    """The other places a server reads ``_method`` from, on the same POST-only route: a
    multipart part (Rack, Laravel, Spring's filter), the query (Express method-override),
    and a form whose bytes are gzipped (Rack's inflater, PHP's zlib input). A plain file
    upload by curl still goes through."""
    url = f"https://{UPSTREAM_HOST}/bulk"
    multipart = ["-F", "_method=DELETE", "-F", "file=@/etc/hostname"]
    refusal = _refusal(agent_curl(wire, *multipart, f"{url}/override-multipart"))
    assert refusal["error"] == "egress_refused" and "body field _method" in refusal["reason"]
    refusal = _refusal(agent_curl(wire, "-d", "a=1", f"{url}/override-query?_method=DELETE"))
    assert "query parameter _method" in refusal["reason"], refusal
    gzipped = wire.exec(
        ["sh", "-c", "printf 'a=1&_method=DELETE' | gzip -c > /tmp/override.gz"], capture=True
    )
    assert gzipped.exit_code == 0, gzipped.stderr
    refusal = _refusal(agent_curl(wire, "-H", "content-encoding: gzip",
                                  "-H", "content-type: application/x-www-form-urlencoded",
                                  "--data-binary", "@/tmp/override.gz",
                                  f"{url}/override-gzip"))  # fmt: skip
    assert "body field _method" in refusal["reason"], refusal
    assert "200" in _final(agent_curl(wire, "-F", "file=@/etc/hostname", f"{url}/upload"))[0]
    got = _upstream_got(wire)
    assert "GOT /bulk/override" not in got, got
    assert "GOT /bulk/upload " in got, got
