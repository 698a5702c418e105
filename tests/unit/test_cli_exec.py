"""``exec`` is recorded where only the host writes; a ``down`` that left a network stays visible.

The engine is the fake behind the ``Engine`` seam (what compose does is the integration
tests'); what the instance records and shows is checked through the CLI.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bottle.engine.compose import ExecResult
from bottle.errors import DownIncomplete
from bottle.state import InstanceStatus, StateDir
from tests.conftest import CliResult, run_cli_here
from tests.fakes import FakeEngine, FakeProject
from tests.unit.test_lifecycle import make_state


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """Every instance the CLI opens talks to this engine; compose lists nothing."""
    from bottle import instance, instances

    engine = FakeEngine()
    monkeypatch.setattr(instance, "DockerEngine", lambda: engine)
    monkeypatch.setattr(instances.engine, "containers", lambda *_a: [])
    monkeypatch.setattr(instances.engine, "labelled", lambda *_a, **_k: ({}, {}))
    return engine


@pytest.fixture
def bottle(
    monkeypatch: pytest.MonkeyPatch, home: Path, repo: Path, fake: FakeEngine
) -> Callable[..., CliResult]:
    def run(*args: str) -> CliResult:
        return run_cli_here(
            *args, cwd=repo, env={"BOTTLE_HOME": str(home)}, monkeypatch=monkeypatch
        )

    return run


@pytest.fixture
def running(home: Path, fake: FakeEngine) -> StateDir:
    from bottle.engine.compose import ServiceState

    state = make_state(home, "shell-run111", InstanceStatus.RUNNING)
    fake.states = [
        ServiceState(name, f"{name}1", "running", None, None)
        for name in state.read_metadata().services
    ]
    state.transcript.mkdir(parents=True, exist_ok=True)
    return state


def test_exec_records_the_command_and_its_exit_code(
    bottle: Callable[..., CliResult], running: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[str, list[str]]] = []

    def exec_(self: FakeProject, service: str, argv: list[str], **_: Any) -> ExecResult:
        seen.append((service, list(argv)))
        return ExecResult(3 if argv[0] == "sh" else 0)

    monkeypatch.setattr(FakeProject, "exec", exec_)
    done = bottle("exec", "shell-run", "--", "sh", "-c", "exit 3; echo 'a b'")
    assert done.returncode == 3, done.stderr
    assert seen == [("agent", ["sh", "-c", "exit 3; echo 'a b'"])]
    log = running.exec_log.read_text().splitlines()
    assert len(log) == 2
    assert log[0].endswith("[agent] $ sh -c 'exit 3; echo '\"'\"'a b'\"'\"''")
    assert log[1].endswith("[agent] exit 3")
    again = bottle("exec", "--service", "egress", "shell-run111", "--", "true")
    assert again.returncode == 0
    assert running.exec_log.read_text().splitlines()[2].endswith("[egress] $ true")
    # Beside metadata.json, never in the transcript the agent writes (and could forge).
    assert running.exec_log.parent == running.path
    assert not any(running.transcript.iterdir())


def test_a_command_word_cannot_forge_a_line_of_the_record(
    bottle: Callable[..., CliResult], running: StateDir
) -> None:
    forged = "true\n2099-01-01T00:00:00+00:00 [agent] exit 0\x1b[2K"
    done = bottle("exec", "shell-run111", "--", "sh", "-c", forged)
    assert done.returncode == 0, done.stderr
    log = running.exec_log.read_text().splitlines()
    assert len(log) == 2, log  # one line per record, whatever the words hold
    assert log[0].endswith(
        "[agent] $ sh -c 'true\\n2099-01-01T00:00:00+00:00 [agent] exit 0\\x1b[2K'"
    )
    assert "\x1b" not in running.exec_log.read_text()


def test_exec_in_a_stopped_agent_names_resume(
    bottle: Callable[..., CliResult], running: StateDir, fake: FakeEngine
) -> None:
    from bottle.engine.compose import ServiceState

    fake.states = [
        ServiceState("agent", "a1", "exited", None, 137),
        ServiceState("egress", "e1", "running", None, None),
    ]
    fake.exec_codes = [1]  # docker exec: "container ... is not running"
    done = bottle("exec", "shell-run111", "--", "true")
    assert done.returncode == 1
    assert "agent of shell-run111 is not running (its container is exited)" in done.stderr
    assert "hint: Bring it back with 'bottle resume shell-run111'." in done.stderr
    assert "Traceback" not in done.stderr
    # A command that fails in a running service keeps its own exit code, and no hint.
    fake.exec_codes = [1]
    again = bottle("exec", "--service", "egress", "shell-run111", "--", "false")
    assert again.returncode == 1 and "resume" not in again.stderr
    # A service with no container at all is named as missing.
    fake.exec_codes = [1]
    gone = bottle("exec", "--service", "supervise", "shell-run111", "--", "true")
    assert gone.returncode == 1 and "(its container is missing)" in gone.stderr


def test_exec_records_an_interrupted_command(
    running: StateDir, fake: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle.instance import Instance

    def exec_(self: FakeProject, service: str, argv: list[str], **_: Any) -> ExecResult:
        raise KeyboardInterrupt

    monkeypatch.setattr(FakeProject, "exec", exec_)
    with pytest.raises(KeyboardInterrupt):
        Instance(running, engine=fake).exec(["sleep", "9"], record=True)
    assert running.exec_log.read_text().splitlines()[1].endswith("interrupted")


def test_exec_goes_on_when_the_agent_spoiled_the_log(
    bottle: Callable[..., CliResult], running: StateDir
) -> None:
    running.exec_log.symlink_to("/etc/passwd")
    done = bottle("exec", "shell-run111", "--", "true")
    assert done.returncode == 0
    assert "warning: not written to" in done.stderr
    assert running.exec_log.is_symlink()


def test_internal_execs_are_not_recorded(running: StateDir, fake: FakeEngine) -> None:
    from bottle.instance import Instance

    Instance(running, engine=fake).exec(["true"])
    assert not running.exec_log.exists()


def test_a_down_that_left_a_network_stays_visible_until_cleanup(
    bottle: Callable[..., CliResult], running: StateDir, fake: FakeEngine, home: Path
) -> None:
    fake.fail["down"] = DownIncomplete(
        "could not remove network bottle-shell-run111_egress: still in use", hint="look"
    )
    done = bottle("stop", "shell-run111")
    assert done.returncode == 1
    assert "warning: down failed: could not remove network" in done.stderr
    assert "stopped shell-run111" not in done.stderr
    meta = running.read_metadata()
    assert meta.status == InstanceStatus.PRESERVED and (meta.error or "").startswith("down failed")
    table = bottle("ls").stdout
    assert "preserved (down failed)" in table

    fake.fail["down"] = DownIncomplete("still in use", hint="look")
    again = bottle("cleanup", "--yes")
    assert again.returncode == 1 and "take down shell-run111: down failed" in again.stderr
    assert running.read_metadata().status == InstanceStatus.PRESERVED

    done = bottle("cleanup", "--yes")  # the network is free now
    assert done.returncode == 0, done.stderr
    meta = running.read_metadata()
    assert meta.status == InstanceStatus.STOPPED and meta.error is None
    assert "down failed" not in bottle("ls").stdout
