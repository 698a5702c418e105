"""``ls``, ``stop --all`` and ``cleanup`` through the CLI, from state directories.

Docker's side (what compose lists) is the integration tests'; here the engine answers
"nothing of ours is up", and what the commands make of the state directories is checked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bottle.instances import InstanceInfo
from bottle.state import InstanceStatus
from tests.conftest import CliResult, run_cli_here
from tests.unit.test_lifecycle import make_state


@pytest.fixture
def quiet_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    from bottle import instances

    monkeypatch.setattr(instances.engine, "containers", lambda *_a: [])
    monkeypatch.setattr(instances.engine, "labelled", lambda *_a, **_k: ({}, {}))


@pytest.fixture
def bottle(
    monkeypatch: pytest.MonkeyPatch, home: Path, repo: Path, quiet_engine: None
) -> Callable[..., CliResult]:
    def run(*args: str, **env: str) -> CliResult:
        return run_cli_here(
            *args, cwd=repo, env={"BOTTLE_HOME": str(home), **env}, monkeypatch=monkeypatch
        )

    return run


LONG = "reviewer-claude-github-0a1b2c3d4e5f"


def _row(slug: str, **fields: object) -> InstanceInfo:
    values: dict[str, object] = {
        "agent": "reviewer",
        "bottle": "github-with-a-long-name",
        "status": "running",
        "recorded_status": None,
        "compose_project": f"bottle-{slug}",
        "running": 3,
        "started_at": datetime(2026, 12, 2, 9, 30, tzinfo=UTC),
        "cwd": "/home/someone/src/a/very/long/path/to/a/repository/checkout",
        "state_dir": f"/tmp/state/{slug}",
    }
    return InstanceInfo(slug=slug, **(values | fields))  # type: ignore[arg-type]


@pytest.fixture
def rows(monkeypatch: pytest.MonkeyPatch) -> list[InstanceInfo]:
    from bottle import instances

    listed = [_row(LONG), _row("shell-9f8e7d", agent="shell", bottle="default")]
    monkeypatch.setattr(instances, "instances", lambda _settings=None: listed)
    return listed


def test_ls_at_80_columns_never_cuts_the_slug(
    bottle: Callable[..., CliResult], rows: list[InstanceInfo]
) -> None:
    done = bottle("ls", COLUMNS="80")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), lines
    slugs = [line.split()[0] for line in lines[1:] if line and not line.startswith(" ")]
    assert slugs == [LONG, "shell-9f8e7d"]


def test_ls_quiet_prints_slugs_only(
    bottle: Callable[..., CliResult], rows: list[InstanceInfo]
) -> None:
    for flag in ("-q", "--quiet"):
        done = bottle("ls", flag, COLUMNS="20")
        assert done.returncode == 0 and done.stdout == f"{LONG}\nshell-9f8e7d\n"


def test_ls_json_stays(bottle: Callable[..., CliResult], rows: list[InstanceInfo]) -> None:
    import json

    listed = json.loads(bottle("ls", "--json").stdout)
    assert [r["slug"] for r in listed] == [LONG, "shell-9f8e7d"] and listed[0]["running"] == 3


def test_stop_all_with_nothing_running_is_a_quiet_success(
    bottle: Callable[..., CliResult], home: Path
) -> None:
    make_state(home, "shell-done11", InstanceStatus.FINISHED)
    done = bottle("stop", "--all")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    nothing = bottle("stop")
    assert nothing.returncode == 2 and "--all" in nothing.stderr


@pytest.fixture
def ended(home: Path) -> Path:
    make_state(home, "shell-fin111", InstanceStatus.FINISHED)
    make_state(home, "shell-stp222", InstanceStatus.STOPPED)
    make_state(home, "shell-fai333", InstanceStatus.FAILED)
    return home / "state"


def test_cleanup_removes_finished_and_keeps_stopped_and_failed(
    bottle: Callable[..., CliResult], ended: Path
) -> None:
    done = bottle("cleanup", "--yes")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in ended.iterdir()) == ["shell-fai333", "shell-stp222"]
    assert "keeping the state of 2 stopped/failed" in done.stderr
    assert "bottle cleanup --all" in done.stderr


def test_cleanup_all_removes_stopped_and_failed_too(
    bottle: Callable[..., CliResult], ended: Path
) -> None:
    done = bottle("cleanup", "--yes", "--all")
    assert done.returncode == 0, done.stderr
    assert list(ended.iterdir()) == []
    assert "remove dir  shell-stp222" in done.stderr


@pytest.mark.parametrize(("answer", "left"), [("y", []), ("n", ["shell-fai333", "shell-stp222"])])
def test_cleanup_on_a_terminal_asks_before_removing_stopped_state(
    bottle: Callable[..., CliResult],
    ended: Path,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    left: list[str],
) -> None:
    import io
    import sys

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal(f"{answer}\ny\n"))
    done = bottle("cleanup")
    assert done.returncode == 0, done.stderr
    assert "Also remove the state of 2 stopped/failed instance(s)" in done.stderr
    assert sorted(p.name for p in ended.iterdir()) == left


def test_cleanup_without_a_terminal_never_removes_stopped_state(
    bottle: Callable[..., CliResult], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import sys

    make_state(home, "shell-stp444", InstanceStatus.STOPPED)
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))  # not a terminal: no one to ask
    done = bottle("cleanup")
    assert done.returncode == 0, done.stderr
    assert "warning: keeping the state of 1 stopped/failed instance(s) (shell-stp444)" in (
        done.stderr
    )
    assert "nothing to clean up" in done.stderr
    assert (home / "state" / "shell-stp444").is_dir()
