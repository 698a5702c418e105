"""Transcripts read back from a state dir: Claude's JSONL, refusals and proposals by time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bottle.state import InstanceStatus, StateDir
from bottle.transcripts import events, reader
from tests.conftest import write

LINES = [
    {
        "type": "user",
        "timestamp": "2026-01-01T10:00:00.000Z",
        "message": {"role": "user", "content": "fix \x1b[31mthe build"},
    },
    {
        "type": "assistant",
        "timestamp": "2026-01-01T10:00:01.000Z",
        "message": {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "looking"},
                {
                    "type": "tool_use",
                    "id": "t1",
                    "name": "Bash",
                    "input": {"command": "curl x.test"},
                },
            ],
        },
    },
    {
        "type": "user",
        "timestamp": "2026-01-01T10:00:03.000Z",
        "message": {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "403 refused"}],
        },
    },
    {"type": "summary", "summary": "not a turn"},
]


def _state(tmp_path: Path) -> StateDir:
    state = StateDir(tmp_path / "state" / "s1")
    project = state.transcript / "claude" / "projects" / "-workspace"
    body = "\n".join(json.dumps(line) for line in LINES) + "\nnot json\n"
    write(project / "session.jsonl", body)
    refusal = {
        "time": "2026-01-01T10:00:02.000+00:00",
        "method": "GET",
        "host": "x.test",
        "path": "/",
        "decision": "refuse",
        "reason": "no route",
    }
    allowed = {**refusal, "decision": "allow", "time": "2026-01-01T10:00:02.500+00:00"}
    write(state.egress_log, json.dumps(refusal) + "\n" + json.dumps(allowed) + "\n")
    proposal = {
        "id": 1,
        "tool": "egress-block",
        "created_at": "2026-01-01T10:00:04+00:00",
        "status": "pending",
        "justification": "needed",
        "payload": {"host": "x.test"},
    }
    write(state.proposals / "1.json", json.dumps(proposal))
    return state


def test_events_interleave_the_conversation_with_refusals_and_proposals(tmp_path: Path) -> None:
    found = events(_state(tmp_path), "claude")
    assert [e.kind for e in found] == [
        "user",
        "assistant",
        "tool_call",
        "egress",
        "tool_result",
        "proposal",
    ]
    assert "curl x.test" in found[2].text
    assert found[3].text.startswith("egress refused GET x.test/")
    assert "egress-block" in found[5].text


def test_refusals_of_rotated_egress_logs_are_events_and_so_is_the_drop_note(
    tmp_path: Path,
) -> None:
    state = _state(tmp_path)
    older = {
        "time": "2026-01-01T09:59:00.000+00:00",
        "method": "GET",
        "host": "old.test",
        "decision": "refuse",
        "reason": "no route",
    }
    write(state.egress_log.with_name("egress.jsonl.1"), json.dumps(older) + "\n")
    note = {"time": "2026-01-01T09:59:30.000+00:00", "method": "LOG", "decision": "note",
            "reason": "older records were dropped: the log keeps 4 files of 16 MiB"}  # fmt: skip
    current = state.egress_log.read_text()
    state.egress_log.write_text(json.dumps(note) + "\n" + current)
    found = [e for e in events(state, "claude") if e.kind in ("egress", "note")]
    assert [e.kind for e in found] == ["egress", "note", "egress"]
    assert "old.test" in found[0].text and "older records were dropped" in found[1].text


def test_a_linked_projects_dir_is_not_followed(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "state" / "s1")
    outside = tmp_path / "outside" / "-workspace"
    write(outside / "s.jsonl", json.dumps(LINES[0]) + "\n")
    (state.transcript / "claude").mkdir(parents=True)
    (state.transcript / "claude" / "projects").symlink_to(outside.parent)
    read = reader("claude")
    assert read is not None
    assert read(state.transcript, state.path) == []


def _finished_claude(state: StateDir) -> None:
    """The metadata of a finished claude instance for ``state``."""
    from bottle.files import now
    from bottle.state import Metadata

    stamp = now()
    state.write_metadata(
        Metadata(
            slug=state.slug,
            agent="a",
            bottle="b",
            provider="claude",
            cwd=str(state.path),
            compose_project=f"bottle-{state.slug}",
            images={},
            services=[],
            status=InstanceStatus.FINISHED,
            started_at=stamp,
            updated_at=stamp,
        )
    )


def test_cli_shows_the_transcript_inert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import run_cli_here

    _finished_claude(_state(tmp_path))
    done = run_cli_here(
        "transcript",
        "s1",
        cwd=tmp_path,
        env={"BOTTLE_HOME": str(tmp_path)},
        monkeypatch=monkeypatch,
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "fix \\x1b[31mthe build" in done.stdout.replace(
        "\\u001b", "\\x1b"
    )
    lines = run_cli_here(
        "transcript",
        "s1",
        "--json",
        cwd=tmp_path,
        env={"BOTTLE_HOME": str(tmp_path)},
        monkeypatch=monkeypatch,
    )
    kinds = [json.loads(line)["kind"] for line in lines.stdout.splitlines()]
    assert kinds[0] == "user" and "proposal" in kinds


def test_a_line_nested_past_the_parser_is_skipped_not_fatal(tmp_path: Path) -> None:
    # The agent writes its own transcript: one line json.loads cannot nest into
    # (RecursionError, not a ValueError) made `bottle transcript` fail, hiding every turn.
    state = StateDir(tmp_path / "state" / "s1")
    deep = "[" * 100_000 + "]" * 100_000
    body = "\n".join([json.dumps(LINES[0]), deep, json.dumps(LINES[2])]) + "\n"
    write(state.transcript / "claude" / "projects" / "-workspace" / "s.jsonl", body)
    rollout = state.transcript / "codex" / "sessions" / "2026" / "01" / "01" / "rollout-1.jsonl"
    item = {
        "timestamp": "2026-01-01T10:00:00Z",
        "type": "response_item",
        "payload": {"type": "message", "role": "user", "content": "hi codex"},
    }
    write(rollout, deep + "\n" + json.dumps(item) + "\n")
    write(state.proposals / "2.json", deep)
    assert [e.kind for e in events(state, "claude")] == ["user", "tool_result"]
    assert [e.text for e in events(state, "codex")] == ["hi codex"]


def test_the_events_of_one_transcript_are_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Files are bounded one by one, but 200 sessions of tiny lines would be hundreds of
    # millions of events on the host: the reader stops at a bound and says so.
    import bottle.transcripts

    monkeypatch.setattr(bottle.transcripts, "MAX_EVENTS", 5)
    state = StateDir(tmp_path / "state" / "s1")
    line = json.dumps(LINES[0]) + "\n"
    for n in range(3):
        write(state.transcript / "claude" / "projects" / "-w" / f"{n}.jsonl", line * 4)
    found = events(state, "claude")
    assert [e.kind for e in found] == ["user"] * 5 + ["note"]
    assert "only the first 5 events" in found[-1].text


def test_cli_shows_a_hostile_timestamp_inert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The clock column is the writer's timestamp cut to 8 characters: room enough for a
    # screen clear or a window title, printed raw before.
    from tests.conftest import run_cli_here

    state = StateDir(tmp_path / "state" / "s2")
    line = {**LINES[0], "timestamp": "2026-01-01T\x1b[2J\x1b]0;\x07ZZZ"}
    write(state.transcript / "claude" / "projects" / "-w" / "s.jsonl", json.dumps(line) + "\n")
    _finished_claude(state)
    done = run_cli_here(
        "transcript",
        "s2",
        cwd=tmp_path,
        env={"BOTTLE_HOME": str(tmp_path)},
        monkeypatch=monkeypatch,
    )
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout


def test_a_session_file_too_long_or_not_regular_is_a_note_not_a_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Review 5, F3: one session file past the bound (a long real session, or the agent's
    # doing), or a FIFO in its place, made `bottle transcript` fail with an internal error.
    import os

    import bottle.transcripts

    monkeypatch.setattr(bottle.transcripts, "MAX_FILE_BYTES", 1024)
    state = StateDir(tmp_path / "state" / "s1")
    projects = state.transcript / "claude" / "projects" / "-w"
    write(projects / "a.jsonl", json.dumps(LINES[0]) + "\n")
    line = json.dumps(LINES[2]) + "\n"
    write(projects / "b.jsonl", line * (2048 // len(line) + 1))  # past the bound
    os.mkfifo(projects / "c.jsonl")  # not a regular file: not even listed
    state.egress_log.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(state.egress_log)
    found = events(state, "claude")
    notes = [e.text for e in found if e.kind == "note"]
    assert [e.kind for e in found if e.kind != "note"][:2] == ["user", "tool_result"]
    assert any("only the first 1,024 bytes of b.jsonl" in n for n in notes), notes
    assert any(n.startswith("egress log: egress.jsonl was not read") for n in notes), notes
