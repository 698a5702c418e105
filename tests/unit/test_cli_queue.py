"""``bottle queue`` (and --watch, --json) and the editor file of ``approve --edit``.

The queue reads liveness from the state directories, so these need no Docker: an instance
is live when its metadata says running, its owner (if any) runs, and supervise listens.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bottle.files import now
from bottle.proposals import ProposalQueue
from bottle.state import InstanceStatus, Metadata, StateDir
from tests.conftest import CliResult, run_cli_here

AGENT = "bottle-agent:test"
HOSTILE = "GET /\x1b[2K\x1b[1A\r\x1b]0;owned\x07\u202eevil\x9b2J"
UNTERMINATED_OSC = "hide the rest \x1b]8;;"


@pytest.fixture
def bottle(monkeypatch: pytest.MonkeyPatch, home: Path, repo: Path) -> Callable[..., CliResult]:
    def run(*args: str) -> CliResult:
        return run_cli_here(
            *args, cwd=repo, env={"BOTTLE_HOME": str(home)}, monkeypatch=monkeypatch
        )

    return run


def _instance(
    home: Path,
    slug: str,
    *,
    status: InstanceStatus = InstanceStatus.RUNNING,
    pid: int | None = None,
    supervise: bool = True,
) -> ProposalQueue:
    state = StateDir(home / "state" / slug)
    state.create()
    state.write_metadata(
        Metadata(
            slug=slug,
            agent="shell",
            bottle="default",
            provider="shell",
            cwd="/",
            compose_project=f"bottle-{slug}",
            images={},
            services=["agent", "egress", "supervise"],
            status=status,
            started_at=now(),
            updated_at=now(),
            pid=pid,
        )
    )
    if supervise:
        state.status_file("supervise").write_text('{"service": "supervise"}\n')
    return ProposalQueue(state.proposals)


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def _ask(queue: ProposalQueue, host: str, justification: str = "the build needs it") -> int:
    return queue.create("egress-block", {"host": host}, justification).id


def test_queue_lists_the_pending_proposals_of_live_instances_only(
    bottle: Callable[..., CliResult], home: Path
) -> None:
    live = _instance(home, "shell-live1")
    _ask(live, "one.example.com")
    decided = _ask(live, "two.example.com")
    live.decide(decided, approved=False, by="op", reason="no")
    _ask(live, "three.example.com")
    for slug, kw in {
        "shell-stopd": {"status": InstanceStatus.STOPPED},
        "shell-deadp": {"pid": _dead_pid()},
        "shell-nosup": {"supervise": False},
    }.items():
        _ask(_instance(home, slug, **kw), f"{slug}.example.com")

    done = bottle("queue", "--json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["slug"], r["id"], r["payload"]["host"]) for r in rows] == [
        ("shell-live1", 1, "one.example.com"),
        ("shell-live1", 3, "three.example.com"),
    ]
    table = bottle("queue")
    assert table.returncode == 0, table.stderr
    assert "one.example.com" in table.stdout and "three.example.com" in table.stdout
    assert "two.example.com" not in table.stdout
    for slug in ("shell-stopd", "shell-deadp", "shell-nosup"):
        assert slug not in table.stdout


def test_queue_shows_agent_text_inert_and_bounded(
    bottle: Callable[..., CliResult], home: Path
) -> None:
    queue = _instance(home, "shell-hostl")
    _ask(queue, "first.example.com", UNTERMINATED_OSC)
    _ask(queue, "second.example.com", HOSTILE + "\n" + "x" * 3000)
    _ask(queue, "third.example.com", "y" * 3000)
    table = bottle("queue")
    assert table.returncode == 0, table.stderr
    assert not any(c in table.stdout for c in "\x1b\x07\r\x9b\u202e"), repr(table.stdout)
    # The OSC hides nothing: every proposal after it is still on the screen.
    assert "\\x1b]8;;" in table.stdout
    assert all(f"{n}.example.com" in table.stdout for n in ("first", "second", "third"))
    # A row shows a summary, never the whole text.
    assert "x" * 200 not in table.stdout.replace("\n", "")
    assert len(table.stdout) < 3000
    assert "…" in table.stdout
    done = bottle("queue", "--json")
    assert not any(c in done.stdout for c in "\x1b\x07\r\x9b\u202e")
    rows = json.loads(done.stdout)
    assert rows[1]["justification"] == HOSTILE + "\n" + "x" * 3000  # --json is whole, escaped


def test_queue_reports_a_bad_file_and_lists_the_rest(
    bottle: Callable[..., CliResult], home: Path
) -> None:
    queue = _instance(home, "shell-badfl")
    _ask(queue, "one.example.com")
    _ask(queue, "two.example.com")
    queue.path(1).write_text('{"id": 1, "justification": "\x1b]0;x"')
    done = bottle("queue")
    assert done.returncode == 0, done.stderr
    assert "two.example.com" in done.stdout
    assert "shell-badfl" in done.stderr and "1.json: not JSON" in done.stderr
    assert "\x1b" not in done.stderr


def test_queue_watch_prints_each_new_proposal_once(
    bottle: Callable[..., CliResult], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle_cli import decisions

    queue = _instance(home, "shell-watch")
    _ask(queue, "one.example.com")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            _ask(queue, "two.example.com", HOSTILE)
        elif len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(decisions.time, "sleep", sleep)
    done = bottle("queue", "--watch", "--json")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["payload"]["host"] for r in rows] == ["one.example.com", "two.example.com"]
    assert "\x1b" not in done.stdout and rows[1]["justification"] == HOSTILE
    sleeps.clear()
    table = bottle("queue", "--watch")
    assert table.stdout.count("one.example.com") == 1
    assert "\x1b" not in table.stdout


def _edited(proposal: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    from bottle_cli import decisions, editor

    shown: list[str] = []

    def edit_text(text: str, *, extension: str) -> str | None:
        shown.append(text)
        return None

    monkeypatch.setattr(editor, "edit_text", edit_text)
    assert decisions.edited_payload(proposal, "shell-edits") is None
    return shown


def test_the_editor_file_shows_the_justification_inert(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = _instance(home, "shell-edits")
    proposal = queue.get(_ask(queue, "one.example.com", HOSTILE + "\nline two\x1b[8m"))
    (text,) = _edited(proposal, monkeypatch)
    assert not any(c in text for c in "\x1b\x07\r\x9b\u202e"), repr(text)
    assert "\\x1b[2K" in text and "\\nline two\\x1b[8m" in text
    assert "host: one.example.com" in text


def test_edit_refuses_a_request_with_invisible_characters(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle.errors import ApplyError

    queue = _instance(home, "shell-edits")
    dockerfile = f"FROM {AGENT}\nRUN echo safe \u202e ;hctef lruc\n"
    proposal = queue.get(
        queue.create("capability-block", {"dockerfile": dockerfile}, "tools", base_ref=AGENT).id
    )
    with pytest.raises(ApplyError, match="control or invisible characters") as refused:
        _edited(proposal, monkeypatch)
    assert "bottle reject shell-edits 1" in (refused.value.hint or "")


@pytest.mark.parametrize(
    ("tool", "payload"),
    [
        ("egress-block", {"host": "api.example.com"}),
        ("egress-block", {"host": "api.example.com", "paths": ["/v1/", "^/a"], "methods": ["get"]}),
        ("pipelock-block", {"url": "https://Files.Example.com/x?y"}),
        ("capability-block", {"dockerfile": f"FROM {AGENT}\nRUN true\nRUN \\\n  echo hi\n"}),
    ],
)
def test_a_row_says_what_the_model_says(home: Path, tool: str, payload: dict[str, Any]) -> None:
    from bottle.proposals import MAX_PAYLOAD_BYTES
    from bottle.proposals.rows import MAX_FILE_BYTES, read_row

    queue = _instance(home, "shell-rowss")
    proposal = queue.create(tool, payload, "why", base_ref=AGENT)
    row = read_row(queue.path(proposal.id), proposal.id)
    assert row is not None
    assert row.what == proposal.payload.summary()
    assert row.data == proposal.model_dump(mode="json")
    # The queue reads its files through rows.load_file: one bound for both readers.
    assert MAX_FILE_BYTES == 16 * MAX_PAYLOAD_BYTES
    decided = queue.decide(proposal.id, approved=False, by="op", reason="no")
    assert read_row(queue.path(decided.id), decided.id) is None


@pytest.mark.parametrize(
    "change",
    [
        {"id": 7},
        {"status": "maybe"},
        {"tool": "shell-block"},
        {"payload": ["x"]},
        {"payload": {"tool": "pipelock-block", "url": "https://a.example.com", "host": "b.com"}},
        {"payload": {"tool": "egress-block", "host": "a.example.com", "paths": "/v1/"}},
        {"justification": 3},
        {"decision": {"by": "x"}},
    ],
)
def test_a_row_refuses_what_it_cannot_show(home: Path, change: dict[str, Any]) -> None:
    from bottle.proposals.rows import read_row

    queue = _instance(home, "shell-rowsb")
    proposal = queue.create("egress-block", {"host": "a.example.com"}, "why")
    data = {**proposal.model_dump(mode="json"), **change}
    if "payload" in change and isinstance(change["payload"], dict):
        data["tool"] = change["payload"]["tool"]
    queue.path(proposal.id).write_text(json.dumps(data))
    with pytest.raises(ValueError):
        read_row(queue.path(proposal.id), proposal.id)


def test_the_approve_confirmation_shows_the_numbered_bytes_inert(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    import typer

    from bottle_cli import decisions, output

    monkeypatch.setattr(output, "err", output.Console(stderr=True, highlight=False))
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    asked: list[str] = []

    def confirm(question: str, **_: Any) -> bool:
        asked.append(question)
        return False

    monkeypatch.setattr(typer, "confirm", confirm)
    queue = _instance(home, "shell-cnfrm")
    dockerfile = f"FROM {AGENT}\nRUN apt-get install -y jq \u202e;lmth.x lruc\nRUN true\n"
    proposal = queue.get(
        queue.create("capability-block", {"dockerfile": dockerfile}, HOSTILE, base_ref=AGENT).id
    )
    with pytest.raises(typer.Exit):
        decisions._confirm_build(proposal, "shell-cnfrm")
    shown = capsys.readouterr().err
    assert not any(c in shown for c in "\x1b\x07\r\x9b\u202e"), repr(shown)
    assert f"1 | FROM {AGENT}" in shown
    assert "2 | RUN apt-get install -y jq \\u202e;lmth.x lruc" in shown
    assert "3 | RUN true" in shown
    assert "Justification: GET /\\x1b[2K" in shown
    assert "proposal 1 left pending" in shown and asked
    assert queue.get(1).status == "pending"
