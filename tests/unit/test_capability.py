"""The transcript snapshot taken before a capability replaces the agent (no Docker needed)."""

from __future__ import annotations

import os
from pathlib import Path

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
