"""The relay against real git: a stateful ``git upload-pack`` stands in for upstream (it is
what ``ssh … git-upload-pack`` runs), the agent's request is a real clone's."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from bottle.runtime.git_gate import pktline, relay
from bottle.runtime.git_gate.pktline import DELIM, FLUSH, pkt

ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str, data: bytes | None = None, **env: str) -> bytes:
    return subprocess.run(
        ["git", *args], cwd=cwd, input=data, capture_output=True, check=True, env={**ENV, **env}
    ).stdout


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("upstream")
    git(repo, "init", "-q", "-b", "trunk")
    for index in range(3):
        (repo / f"f{index}.txt").write_bytes(os.urandom(20000).hex().encode())
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", f"c{index}")
    git(repo, "tag", "-a", "v1", "-m", "tag")
    git(repo, "branch", "side", "HEAD~1")
    return repo


def channel(repo: Path, cwd: Path, version: str = "version=2") -> relay.Channel:
    return relay.Channel(["git", "upload-pack", str(repo)], {**ENV, "GIT_PROTOCOL": version}, cwd)


def request(*args: bytes) -> bytes:
    lines = [pkt(b"command=fetch\n"), pkt(b"agent=git/2.39.5\n"), DELIM]
    return b"".join(lines + [pkt(a + b"\n") for a in args] + [FLUSH])


def test_a_cold_clone_is_relayed_stored_and_then_served_from_the_mirror(
    upstream: Path, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "init", "-q", "--bare", str(mirror))
    conn = channel(upstream, mirror)
    try:
        refs, head = conn.ls_refs()
        assert head == "refs/heads/trunk"
        assert set(refs) == {"refs/heads/trunk", "refs/heads/side", "refs/tags/v1"}
        wants = sorted(set(refs.values()))
        body = request(*(b"want " + w.encode() for w in wants), b"ofs-delta", b"done")
        parsed = pktline.parse_fetch_request(body)
        assert parsed is not None
        out = io.BytesIO()
        assert relay.relay_fetch(parsed, conn, mirror, out)
    finally:
        conn.close()
    # The pack the agent got is byte for byte the one the mirror stored.
    sent = io.BytesIO()
    assert pktline.tee_fetch_response(io.BytesIO(out.getvalue()), io.BytesIO(), sent)
    (stored,) = (mirror / "objects" / "pack").glob("*.pack")
    assert stored.read_bytes() == sent.getvalue()
    assert stored.with_suffix(".keep").is_file()
    assert relay.store_refs(mirror, refs, head) == []
    assert git(mirror, "for-each-ref", "--format=%(objectname) %(refname)") == git(
        upstream, "for-each-ref", "--format=%(objectname) %(refname)"
    )
    assert git(mirror, "symbolic-ref", "HEAD") == b"refs/heads/trunk\n"
    # The mirror now serves a clone by itself, whole and checked.
    git(tmp_path, "clone", "-q", str(mirror), str(tmp_path / "work"))
    git(tmp_path / "work", "fsck", "--strict")
    assert (tmp_path / "work" / "f2.txt").read_bytes() == (upstream / "f2.txt").read_bytes()


def test_an_upstream_that_speaks_v0_falls_back(upstream: Path, tmp_path: Path) -> None:
    with pytest.raises(relay.Fallback, match="v2"):
        channel(upstream, tmp_path, version="")


def test_refs_without_their_history_or_with_bad_names_are_not_stored(
    upstream: Path, tmp_path: Path
) -> None:
    git(tmp_path, "init", "-q", "--bare")
    tip = git(upstream, "rev-parse", "trunk").decode().strip()
    # An empty mirror: upstream "listed" a tip whose objects never arrived.
    assert relay.store_refs(tmp_path, {"refs/heads/trunk": tip}, "refs/heads/trunk") == [
        "refs/heads/trunk"
    ]
    assert git(tmp_path, "for-each-ref") == b""
    # Only the first commit arrived: its branch is stored, the newer tip is not.
    first = git(upstream, "rev-list", "--max-parents=0", "trunk").decode().strip()
    pack = git(upstream, "pack-objects", "--stdout", "--revs", data=first.encode() + b"\n")
    git(tmp_path, "index-pack", "--stdin", data=pack)
    missing = relay.store_refs(
        tmp_path,
        {"refs/heads/old": first, "refs/heads/trunk": tip, "refs/heads/a..b": first},
        None,
    )
    assert sorted(missing) == ["refs/heads/a..b", "refs/heads/trunk"]
    assert git(tmp_path, "for-each-ref", "--format=%(refname)") == b"refs/heads/old\n"


def test_a_pack_index_pack_refuses_is_not_stored_and_raises(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "--bare")
    # A "pack" with the right magic and a wrong checksum, relayed by an upstream stand-in.
    bogus = b"PACK\x00\x00\x00\x02\x00\x00\x00\x01" + b"\x00" * 30
    answer = pkt(b"packfile\n") + pkt(b"\x01" + bogus) + FLUSH
    script = tmp_path / "upstream.sh"
    advert = pkt(b"version 2\n") + pkt(b"ls-refs\n") + pkt(b"fetch\n") + FLUSH
    (tmp_path / "answer").write_bytes(advert + answer)
    script.write_text(f"#!/bin/sh\ncat {tmp_path / 'answer'}\ncat >/dev/null\n")
    script.chmod(0o755)
    conn = relay.Channel([str(script)], ENV, tmp_path)
    parsed = pktline.parse_fetch_request(request(b"want " + b"a" * 40, b"done"))
    assert parsed is not None
    try:
        with pytest.raises(pktline.ProtocolError, match="did not index"):
            relay.relay_fetch(parsed, conn, tmp_path, io.BytesIO())
    finally:
        conn.close()
    assert list((tmp_path / "objects" / "pack").iterdir()) == []  # nor a temporary one
