"""The relay over smart HTTP: a loopback TLS server runs ``git http-backend`` as upstream,
with its own CA and a Basic-auth token, as an https remote does."""

from __future__ import annotations

import base64
import http.server
import os
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bottle.runtime.git_gate import GateRemote, relay
from bottle.runtime.git_gate import server as gate_server
from bottle.runtime.git_gate.upstream import Target
from tests.process.test_git_gate_relay import ENV, gate_for, git, records, refs_of, wait_for_record

TOKEN = "tok-" + os.urandom(8).hex()


def openssl(cwd: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, check=True)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA and a certificate for git.test it signed; another CA that signed nothing here."""
    d = tmp_path_factory.mktemp("certs")
    for ca in ("ca", "other"):
        openssl(d, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem", "-days", "2",
                "-subj", f"/CN={ca}")  # fmt: skip
    openssl(d, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=git.test")  # fmt: skip
    (d / "ext").write_text("subjectAltName=DNS:git.test\n")
    openssl(d, "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "ext")  # fmt: skip
    return d


@pytest.fixture(scope="module")
def https_upstream(
    certs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[int, Path, list[str]]]:
    root = tmp_path_factory.mktemp("srv")
    repo = root / "up.git"
    work = tmp_path_factory.mktemp("up-work")
    git(work, "init", "-q", "-b", "trunk")
    for index in range(3):
        (work / f"f{index}.txt").write_bytes(os.urandom(30000).hex().encode())
        git(work, "add", ".")
        git(work, "commit", "-q", "-m", f"c{index}")
    git(work, "tag", "-a", "v1", "-m", "tag")
    git(root, "clone", "-q", "--bare", str(work), str(repo))
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            return

        def do_POST(self) -> None:
            seen.append(self.headers.get("Git-Protocol", ""))
            scheme, _, value = self.headers.get("Authorization", "").partition(" ")
            if scheme != "Basic" or base64.b64decode(value).decode() != f"x-access-token:{TOKEN}":
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            path, _, query = self.path.partition("?")
            done = subprocess.run(
                ["git", "http-backend"], input=body, capture_output=True, check=True,
                env={**ENV, "GIT_PROJECT_ROOT": str(root), "GIT_HTTP_EXPORT_ALL": "1",
                     "PATH_INFO": path, "QUERY_STRING": query, "REQUEST_METHOD": "POST",
                     "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                     "CONTENT_LENGTH": str(len(body)),
                     "GIT_PROTOCOL": self.headers.get("Git-Protocol", "")},
            )  # fmt: skip
            head, _, rest = done.stdout.partition(b"\r\n\r\n")
            self.send_response(200)
            for line in head.decode().split("\r\n"):
                key, _, value = line.partition(":")
                if key and key.lower() != "status":
                    self.send_header(key, value.strip())
            self.send_header("Content-Length", str(len(rest)))
            self.end_headers()
            self.wfile.write(rest)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1], repo, seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def https_channel(
    port: int, cafile: Path, host: str = "git.test", token: str = TOKEN
) -> relay.HttpChannel:
    target = Target("https", host, port, None, "/up.git")
    return relay.HttpChannel(target, "127.0.0.1", str(cafile), ("x-access-token", token))


def test_the_listing_over_https_is_the_listing_over_ssh(
    https_upstream: tuple[int, Path, list[str]], certs: Path, tmp_path: Path
) -> None:
    port, repo, seen = https_upstream
    conn = https_channel(port, certs / "ca.pem")
    try:
        listing = conn.ls_refs()
    finally:
        conn.close()
    pipe = relay.PipeChannel(
        ["git", "upload-pack", str(repo)], {**ENV, "GIT_PROTOCOL": "version=2"}, tmp_path
    )
    try:
        assert listing == pipe.ls_refs()
    finally:
        pipe.close()
    assert seen[-1] == "version=2"


@pytest.mark.parametrize(
    ("host", "ca", "token"),
    [
        ("other.test", "ca.pem", TOKEN),  # a certificate for another name
        ("git.test", "other.pem", TOKEN),  # a CA the gate does not trust for it
        ("git.test", "ca.pem", "wrong"),  # upstream refuses the credential: HTTP 401
    ],
)
def test_an_https_upstream_the_gate_cannot_trust_or_enter_falls_back(
    https_upstream: tuple[int, Path, list[str]], certs: Path, host: str, ca: str, token: str
) -> None:
    port, _repo, _seen = https_upstream
    conn = https_channel(port, certs / ca, host, token)
    try:
        with pytest.raises(relay.Fallback):
            conn.ls_refs()
    finally:
        conn.close()


def test_a_cold_clone_over_https_is_relayed_and_stored(
    https_upstream: tuple[int, Path, list[str]], certs: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    port, repo, _seen = https_upstream
    with gate_for(repo, tmp_path, monkeypatch) as (url, fetched, mirror, log):
        opened: list[str] = []

        def channel(self: gate_server.Gate, remote: GateRemote) -> relay.Channel:
            opened.append(remote.name)
            return https_channel(port, certs / "ca.pem")

        monkeypatch.setattr(gate_server.Gate, "channel", channel)
        git(tmp_path, "-c", "protocol.version=2", "clone", "-q", url, "a")
        assert fetched == []
        git(tmp_path / "a", "fsck", "--strict")
        assert git(tmp_path / "a", "rev-parse", "HEAD") == git(repo, "rev-parse", "trunk")
        wait_for_record(log)
        (line,) = records(log)
        assert str(line["reason"]).startswith("relayed:") and line["decision"] == "allow"
        assert refs_of(mirror) == refs_of(repo)
        assert git(mirror, "symbolic-ref", "HEAD") == b"refs/heads/trunk\n"
        assert opened == ["origin"]
