"""The protocol v2 fetch tee against real git: ``git upload-pack`` answers, ``git
index-pack`` takes the pack the tee pulls out, and the forwarded bytes stay identical."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

from bottle.runtime.git_gate import pktline
from bottle.runtime.git_gate.pktline import DELIM, FLUSH, ProtocolError, pkt

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


def request(*args: bytes, caps: tuple[bytes, ...] = (b"agent=git/2.39.5",)) -> bytes:
    lines = [pkt(b"command=fetch\n"), *(pkt(c + b"\n") for c in caps), DELIM]
    return b"".join(lines + [pkt(a + b"\n") for a in args] + [FLUSH])


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("upstream")
    git(repo, "init", "-q", "-b", "main")
    for index in range(3):
        (repo / f"f{index}.txt").write_bytes(os.urandom(20000).hex().encode())
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", f"c{index}")
    git(repo, "tag", "-a", "v1", "-m", "tag")
    return repo


def upload_pack(repo: Path, body: bytes) -> bytes:
    return git(repo, "upload-pack", "--stateless-rpc", ".", data=body, GIT_PROTOCOL="version=2")


def tee_into(mirror: Path, answer: bytes) -> tuple[bytes, bool]:
    """The tee between an upload-pack answer and index-pack in ``mirror``."""
    out = io.BytesIO()
    index = subprocess.Popen(
        ["git", "index-pack", "--stdin", "--fix-thin"], cwd=mirror, stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL, env=ENV,
    )  # fmt: skip
    assert index.stdin is not None
    try:
        packed = pktline.tee_fetch_response(io.BytesIO(answer), out, index.stdin)
    finally:
        index.stdin.close()
        assert index.wait() == 0 or not packed
    return out.getvalue(), packed


def test_a_clone_answer_is_forwarded_unchanged_and_lands_in_the_mirror(
    upstream: Path, tmp_path: Path
) -> None:
    tips = git(upstream, "rev-parse", "main", "v1").decode().split()
    body = request(*(b"want " + t.encode() for t in tips), b"ofs-delta", b"no-progress", b"done")
    parsed = pktline.parse_fetch_request(body)
    assert parsed is not None and parsed.wants == tuple(tips) and parsed.raw == body
    answer = upload_pack(upstream, body)
    git(tmp_path, "init", "-q", "--bare")
    forwarded, packed = tee_into(tmp_path, answer)
    assert packed and forwarded == answer
    # Every object upstream has is now in the mirror, and they connect.
    assert git(tmp_path, "rev-list", "--objects", "--all") == b""
    listed = git(tmp_path, "rev-list", "--objects", *tips)
    assert listed == git(upstream, "rev-list", "--objects", *tips)


def test_a_thin_incremental_answer_is_completed_against_the_mirror(
    upstream: Path, tmp_path: Path
) -> None:
    old = git(upstream, "rev-parse", "main~1").decode().strip()
    git(tmp_path, "init", "-q", "--bare")
    first = upload_pack(upstream, request(b"want " + old.encode(), b"done"))
    assert tee_into(tmp_path, first)[1]
    new = git(upstream, "rev-parse", "main").decode().strip()
    body = request(b"want " + new.encode(), b"have " + old.encode(), b"thin-pack", b"done")
    answer = upload_pack(upstream, body)
    forwarded, packed = tee_into(tmp_path, answer)
    assert packed and forwarded == answer
    assert git(tmp_path, "cat-file", "-t", new) == b"commit\n"
    git(tmp_path, "rev-list", "--objects", new)  # connected: nothing missing


def test_an_answer_without_a_pack_is_forwarded_and_says_so(upstream: Path, tmp_path: Path) -> None:
    tip = git(upstream, "rev-parse", "main").decode().strip()
    # Without "done", upload-pack answers acknowledgments only when nothing is common yet.
    answer = upload_pack(upstream, request(b"want " + tip.encode(), b"have " + b"1" * 40))
    git(tmp_path, "init", "-q", "--bare")
    forwarded, packed = tee_into(tmp_path, answer)
    assert forwarded == answer
    assert not packed


@pytest.mark.parametrize(
    "body",
    [
        request(b"want " + b"a" * 40, b"shallow " + b"b" * 40, b"done"),
        request(b"want " + b"a" * 40, b"deepen 1", b"done"),
        request(b"want " + b"a" * 40, b"filter blob:none", b"done"),
        request(b"want-ref refs/heads/main", b"done"),
        request(b"want " + b"a" * 40, b"sideband-all", b"done"),
        request(b"want " + b"a" * 40, b"packfile-uris https", b"done"),
        request(b"want " + b"A" * 40, b"done"),  # not an object id git writes
        request(b"want " + b"a" * 64, b"done"),
        request(b"done"),  # nothing wanted
        request(b"want " + b"a" * 40, caps=(b"object-format=sha256",)),
        request(b"want " + b"a" * 40, caps=(b"server-option=x",)),
        request(b"want " + b"a" * 40) + b"0000",  # trailing bytes
        request(b"want " + b"a" * 40)[:-2],  # truncated
        pkt(b"command=ls-refs\n") + DELIM + FLUSH,
        b"zzzz",
        b"0003",
        b"",
    ],
)
def test_anything_but_a_plain_fetch_request_falls_back(body: bytes) -> None:
    assert pktline.parse_fetch_request(body) is None


def band(number: int, data: bytes) -> bytes:
    return pkt(bytes([number]) + data)


PACKFILE = pkt(b"packfile\n")


@pytest.mark.parametrize(
    ("answer", "forwarded"),
    [
        (PACKFILE + band(1, b"NOPE....") + FLUSH, PACKFILE),
        (PACKFILE + band(1, b"PA") + band(1, b"CX") + FLUSH, PACKFILE + band(1, b"PA")),
        (PACKFILE + band(7, b"PACK") + FLUSH, PACKFILE),
        (pkt(b"wanted-refs\n") + FLUSH, b""),
        (pkt(b"shallow-info\n") + FLUSH, b""),
        (PACKFILE + DELIM + FLUSH, PACKFILE),
        (PACKFILE + band(1, b"PACK"), PACKFILE + band(1, b"PACK")),  # cut off
        (PACKFILE + b"fff1" + b"x" * 10, PACKFILE),  # longer than git ever writes
        (PACKFILE + b"00g5x", PACKFILE),
        (pktline.RESPONSE_END, b""),
        (PACKFILE + band(3, b"upstream: denied"), PACKFILE + band(3, b"upstream: denied")),
    ],
)
def test_a_response_it_does_not_understand_raises_before_forwarding_the_doubt(
    answer: bytes, forwarded: bytes
) -> None:
    out, pack = io.BytesIO(), io.BytesIO()
    with pytest.raises(ProtocolError):
        pktline.tee_fetch_response(io.BytesIO(answer), out, pack)
    # Only whole pkt-lines before the doubt reach the agent (and upstream's own error).
    assert out.getvalue() == forwarded


def test_pack_data_split_across_pkt_lines_is_checked_and_passed_whole() -> None:
    answer = pkt(b"packfile\n") + band(2, b"progress\n") + band(1, b"PA") + band(1, b"CKrest")
    answer += FLUSH
    out, pack = io.BytesIO(), io.BytesIO()
    assert pktline.tee_fetch_response(io.BytesIO(answer + b"next"), out, pack)
    assert out.getvalue() == answer
    assert pack.getvalue() == b"PACKrest"


def ls_refs(*args: bytes) -> bytes:
    head = [pkt(b"command=ls-refs\n"), pkt(b"agent=git/2.39.5"), DELIM]
    return b"".join(head + [pkt(a + b"\n") for a in args] + [FLUSH])


def test_an_ls_refs_for_branches_and_tags_is_plain() -> None:
    body = ls_refs(b"peel", b"symrefs", b"unborn", b"ref-prefix HEAD", b"ref-prefix refs/heads/")
    assert pktline.is_plain_ls_refs(body)
    assert pktline.is_plain_ls_refs(ls_refs(b"ref-prefix refs/tags/v1"))


@pytest.mark.parametrize(
    "body",
    [
        ls_refs(b"symrefs"),  # no prefix: every ref upstream has
        ls_refs(b"ref-prefix refs/"),
        ls_refs(b"ref-prefix refs/pull/"),
        ls_refs(b"ref-prefix refs/heads/", b"ref-prefix refs/notes/"),
        ls_refs(b"ref-prefix refs/heads/", b"server-option=x"),
        ls_refs(b"ref-prefix refs/heads/") + b"0000",
        ls_refs(b"ref-prefix refs/heads/")[:-4],
        request(b"want " + b"a" * 40, b"done"),
    ],
)
def test_any_other_ls_refs_is_not(body: bytes) -> None:
    assert not pktline.is_plain_ls_refs(body)
