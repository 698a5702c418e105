"""The relay's bounds against a hostile or broken upstream: time, sizes, listings, and the
remote's lock (each bound here failed open before it was set)."""

from __future__ import annotations

import io
import re
import socket
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bottle.runtime.git_gate import pktline, relay
from bottle.runtime.git_gate.pktline import FLUSH, pkt
from bottle.runtime.git_gate.upstream import Target
from tests.process.test_git_gate_relay import (
    ENV,
    Scripted,
    failed_clone,
    gate_for,
    git,
    listing_of,
    real_answer,
    records,
    refs_of,
    request,
    upstream,
)
from tests.process.test_git_gate_relay_https import certs

__all__ = ["certs", "upstream"]  # module fixtures shared with the relay's other tests

A = "a" * 40


# -- store_refs: one walk per clone, not one per tag, and never past its deadline ---------


@pytest.fixture
def single_branch(upstream: Path, tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A mirror holding only trunk's pack (a --single-branch clone's) and upstream's whole
    listing: branches and tags beyond the pack, so the one check of all tips fails."""
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "init", "-q", "--bare", str(mirror))
    pack = git(upstream, "pack-objects", "--stdout", "--revs", data=b"trunk\n")
    git(mirror, "index-pack", "--stdin", data=pack)
    tips = {
        line.split()[1].decode(): line.split()[0].decode()
        for line in refs_of(upstream).splitlines()
    }
    tips["refs/heads/gone"] = A  # never arrived
    for index in range(5):  # tags on trunk's history: checked against it, not walked again
        tips[f"refs/tags/t{index}"] = tips["refs/heads/trunk"]
    return mirror, dict(sorted(tips.items()))


def test_each_verified_ref_is_stored_before_the_next_is_checked(
    single_branch: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror, tips = single_branch
    run = subprocess.run
    seen: list[tuple[str, bytes]] = []

    def spy(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        if argv[:2] == ["git", "rev-list"] and argv.count("--not") == 1 and len(argv) == 7:
            stored = run(["git", "for-each-ref", "--format=%(refname)"], cwd=mirror,
                         capture_output=True, check=True).stdout  # fmt: skip
            seen.append((argv[4], stored))
        return run(argv, *args, **kwargs)

    monkeypatch.setattr(relay.subprocess, "run", spy)
    missing = relay.store_refs(mirror, tips, "refs/heads/trunk")
    monkeypatch.undo()
    assert missing == ["refs/heads/gone", "refs/tags/v1"]  # the tag object is not in trunk's pack
    assert set(git(mirror, "for-each-ref", "--format=%(refname)").decode().split()) == (
        set(tips) - set(missing)
    )
    # Every check after trunk's ran with trunk (and every ref verified before) in --all.
    trunk = tips["refs/heads/trunk"]
    after = [stored for oid, stored in seen[[o for o, _ in seen].index(trunk) + 1 :]]
    assert after and all(b"refs/heads/trunk\n" in stored for stored in after)
    assert git(mirror, "symbolic-ref", "HEAD") == b"refs/heads/trunk\n"


def test_a_ref_check_past_its_deadline_stores_only_verified_refs(
    single_branch: tuple[Path, dict[str, str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror, tips = single_branch
    with pytest.raises(relay.RefsTimedOut) as nothing:
        relay.store_refs(mirror, tips, "refs/heads/trunk", timeout=0)
    assert sorted(nothing.value.missing) == sorted(tips)
    assert git(mirror, "for-each-ref") == b""
    # Cut off mid-way (the third check's git "takes too long"): what was checked stays.
    run = subprocess.run
    checks = 0

    def slow(argv: list[str], *args: Any, **kwargs: Any) -> Any:
        nonlocal checks
        assert kwargs.get("timeout") is not None  # every git the lock waits on is bounded
        if argv[:2] == ["git", "rev-list"]:
            checks += 1
            if checks == 4:
                raise subprocess.TimeoutExpired(argv, kwargs["timeout"])
        return run(argv, *args, **kwargs)

    monkeypatch.setattr(relay.subprocess, "run", slow)
    with pytest.raises(relay.RefsTimedOut) as partial:
        relay.store_refs(mirror, tips, "refs/heads/trunk")
    monkeypatch.undo()
    stored = git(mirror, "for-each-ref", "--format=%(refname)").decode().split()
    # The whole check, gone's (missing), side's (stored), then trunk's cut off.
    assert stored == ["refs/heads/side"] and "refs/heads/gone" in partial.value.missing
    assert sorted(stored + partial.value.missing) == sorted(tips)
    git(mirror, "fsck", "--connectivity-only")


# -- listings: endless HEAD lines are no way past MAX_REFS --------------------------------


def test_a_second_head_line_is_not_taken() -> None:
    head = f"{A} HEAD symref-target:refs/heads/m".encode()
    with pytest.raises(relay.Fallback, match="HEAD twice"):
        relay.read_listing(io.BytesIO(listing_of(head, head, f"{A} refs/heads/m".encode())))


# -- ssh: the watchdog times one operation, and a parked channel goes when unused ---------


def test_the_ssh_watchdog_does_not_count_the_pause_between_operations(
    upstream: Path, tmp_path: Path
) -> None:
    conn = relay.PipeChannel(
        ["git", "upload-pack", str(upstream)], {**ENV, "GIT_PROTOCOL": "version=2"}, tmp_path,
        timeout=0.2,
    )  # fmt: skip
    try:
        first = conn.ls_refs()
        time.sleep(0.6)  # the agent's pause between ls-refs and fetch, past the timeout
        assert conn.alive()
        assert conn.ls_refs() == first
    finally:
        conn.close()


def test_a_parked_channel_is_closed_once_the_mirror_is_warm(
    upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[relay.PipeChannel] = []

    class Recorded(relay.PipeChannel):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    with gate_for(upstream, tmp_path, monkeypatch, Recorded) as (url, _fetched, mirror, _log):
        body = pkt(b"command=ls-refs\n") + pktline.DELIM + pkt(b"ref-prefix HEAD\n") + FLUSH
        req = urllib.request.Request(url + "/git-upload-pack", data=body, headers={
            "Git-Protocol": "version=2", "Content-Type": "application/x-git-upload-pack-request",
        })  # fmt: skip
        with urllib.request.urlopen(req, timeout=60) as answer:
            assert b"HEAD" in answer.read()
        (parked,) = made
        assert parked.alive()  # kept for the agent's fetch
        git(mirror, "fetch", "-q", str(upstream), "+refs/heads/*:refs/heads/*")  # warm now
        get = urllib.request.Request(url + "/info/refs?service=git-upload-pack",
                                     headers={"Git-Protocol": "version=2"})  # fmt: skip
        with urllib.request.urlopen(get, timeout=60) as answer:
            answer.read()
        assert not parked.alive()


# -- https: http.client's errors, a deadline, and the spool's bound ------------------------


@pytest.fixture
def tls_server(certs: Path) -> Iterator[Callable[[Callable[[ssl.SSLSocket], None]], int]]:
    """A loopback TLS server for git.test answering each connection with ``serve``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certs / "server.pem", certs / "server.key")
    listener = socket.create_server(("127.0.0.1", 0))
    threads: list[threading.Thread] = []

    def start(serve: Callable[[ssl.SSLSocket], None]) -> int:
        def run() -> None:
            raw, _ = listener.accept()
            with context.wrap_socket(raw, server_side=True) as conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                while len(rest) < length:
                    rest += conn.recv(65536)
                serve(conn)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        threads.append(thread)
        return int(listener.getsockname()[1])

    try:
        yield start
    finally:
        listener.close()
        for thread in threads:
            thread.join(timeout=15)


HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-result\r\n"
PACK_START = pkt(b"packfile\n") + pkt(b"\x01PACK\x00\x00\x00\x02")


def fetch_over(port: int, certs: Path, tmp_path: Path, **kwargs: float) -> None:
    target = Target("https", "git.test", port, None, "/up.git")
    conn = relay.HttpChannel(target, "127.0.0.1", str(certs / "ca.pem"), None, **kwargs)
    parsed = pktline.parse_fetch_request(request(b"want " + A.encode(), b"done"))
    assert parsed is not None
    try:
        relay.relay_fetch(parsed, conn, tmp_path, relay.Held(io.BytesIO))
    finally:
        conn.close()


@pytest.mark.parametrize(
    "answer",
    [
        # A chunk cut short: IncompleteRead (a short Content-Length body reads as an end).
        HEADERS + b"Transfer-Encoding: chunked\r\n\r\n1000\r\n" + PACK_START,
        HEADERS + b"Transfer-Encoding: chunked\r\n\r\n" + b"1" * 70000 + b"\r\n",  # LineTooLong
    ],
    ids=["incomplete-read", "line-too-long"],
)
def test_http_clients_own_errors_are_protocol_errors(
    tls_server: Callable[[Callable[[ssl.SSLSocket], None]], int], certs: Path, tmp_path: Path,
    answer: bytes,
) -> None:  # fmt: skip
    port = tls_server(lambda conn: conn.sendall(answer))
    with pytest.raises(pktline.ProtocolError):
        fetch_over(port, certs, tmp_path)
    assert list(tmp_path.glob("relayed-*")) == []


def test_a_trickling_https_upstream_is_cut_off_at_the_deadline(
    tls_server: Callable[[Callable[[ssl.SSLSocket], None]], int], certs: Path, tmp_path: Path
) -> None:
    cut = threading.Event()

    def trickle(conn: ssl.SSLSocket) -> None:
        section = pkt(b"packfile\n")
        conn.sendall(HEADERS + b"Transfer-Encoding: chunked\r\n\r\n")
        conn.sendall(b"%x\r\n%s\r\n" % (len(section), section))
        end = time.monotonic() + 10  # without a deadline the test fails here, not hangs
        try:
            while time.monotonic() < end:
                line = pkt(b"\x02.\n")  # progress: every socket read gets something
                conn.sendall(b"%x\r\n%s\r\n" % (len(line), line))
                time.sleep(0.05)
        except OSError:
            cut.set()

    port = tls_server(trickle)
    with pytest.raises(pktline.ProtocolError) as e:
        fetch_over(port, certs, tmp_path, timeout=30, deadline=0.5)
    assert re.search("broke off|ended", str(e.value))  # the stream cut, no framing error
    assert cut.wait(timeout=15)
    assert list(tmp_path.glob("relayed-*")) == []


def test_a_pack_past_its_bound_fails_the_clone_and_stores_nothing(
    upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay, "MAX_PACK", 4096)
    monkeypatch.setattr(
        Scripted, "answer", staticmethod(lambda body: real_answer(upstream, body)),
        raising=False,
    )  # fmt: skip
    with gate_for(upstream, tmp_path, monkeypatch, Scripted) as (url, fetched, mirror, log):
        assert "git-gate: the relayed clone broke off" in failed_clone(url, tmp_path, "c")
        assert refs_of(mirror) == b"" and fetched == []
        assert list(mirror.glob("relayed-*")) == []
        (line,) = records(log)
        assert line["decision"] == "error" and "larger than 4096" in str(line["reason"])
