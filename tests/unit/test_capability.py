"""The transcript snapshot taken before a capability replaces the agent (no Docker needed)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bottle.capability import snapshot_transcript
from bottle.instance import Instance
from bottle.state import StateDir


def test_snapshot_copies_the_transcript_and_skips_what_cannot_be_copied(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "slug")
    state.create()
    (state.transcript / "session").mkdir()
    (state.transcript / "session" / "log.jsonl").write_text('{"turn": 1}\n')
    os.mkfifo(state.transcript / "pipe")  # the agent writes here: a FIFO must not hang us
    (state.transcript / "passwd").symlink_to("/etc/passwd")
    said: list[str] = []
    target = snapshot_transcript(Instance(state), said.append)
    assert (target / "session" / "log.jsonl").read_text() == '{"turn": 1}\n'
    assert not (target / "pipe").exists()
    # A link is copied as a link, never as the host file it points at.
    assert (target / "passwd").is_symlink() and os.readlink(target / "passwd") == "/etc/passwd"
    assert target.parent == state.path / "snapshots"
    assert len(said) == 1 and "pipe" in said[0]  # what was skipped is named


def test_snapshot_is_bounded_in_bytes_and_depth(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent writes transcript/: a sparse file costs it nothing, and the host copied it
    # byte by byte (`truncate -s 1T` filled the host's disk at every approval); a deep
    # tree ended the approval with a RecursionError.
    import bottle.capability

    monkeypatch.setattr(bottle.capability, "SNAPSHOT_MAX_BYTES", 1 << 20)
    state = StateDir(tmp_path / "slug")
    state.create()
    (state.transcript / "a.jsonl").write_text("kept\n")
    with open(state.transcript / "huge", "wb") as handle:
        handle.truncate(1 << 40)  # 1 TiB, sparse
    deep = state.transcript / "d"
    deep.mkdir()
    fd = os.open(deep, os.O_RDONLY)
    for _ in range(1500):  # by descriptor: the path would pass PATH_MAX
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    said: list[str] = []
    target = snapshot_transcript(Instance(state), said.append)
    assert (target / "a.jsonl").read_text() == "kept\n"
    assert not (target / "huge").exists()
    assert "huge" in said[0] and "snapshot incomplete" in said[0]
