"""The host's wait on the sidecars' status files: the agent runs only once they serve."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from bottle import readiness
from bottle.bottle import Bottle
from bottle.engine.compose import ServiceState
from bottle.errors import StartTimeout
from bottle.settings import Settings
from bottle.sidecars import sidecar
from bottle.state import InstanceStatus, StateDir
from tests.conftest import FakeClock, user_owned
from tests.fakes import FakeEngine, FakeProject


class _Host:
    """An instance being started: a state dir and a fake compose project."""

    def __init__(self, path: Path, engine: FakeEngine) -> None:
        self.slug = "shell-abcde"
        self.state = StateDir(path)
        (path / "status").mkdir(parents=True)
        compose_file = path / "docker-compose.yml"
        compose_file.write_text("services: {}\n")
        self.compose = FakeProject(engine, compose_file)


def _running(*names: str) -> list[ServiceState]:
    return [ServiceState(n, f"id-{n}", "running", None, None) for n in names]


def test_it_returns_once_every_status_file_parses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = _Host(tmp_path, FakeEngine(states=_running("egress", "supervise")))
    egress, supervise = sidecar("egress"), sidecar("supervise")
    supervise_file = host.state.status_file("supervise")
    # supervise's file appears half-written at the 3rd poll and whole at the 5th.
    writes = {3: "{half", 5: '{"ready": true}'}

    class Polls(FakeClock):
        polls = 0

        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            self.polls += 1
            if self.polls in writes:
                supervise_file.write_text(writes[self.polls])

    clock = Polls()
    monkeypatch.setattr(readiness, "time", clock)
    host.state.status_file("egress").write_text('{"generation": 1}')
    readiness.wait_ready(host, [egress, supervise], timeout=10)
    assert clock.polls == 5  # not before the file parsed, and at once after


def test_a_file_that_does_not_parse_is_not_ready(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "time", FakeClock())  # the wait runs out at once
    engine = FakeEngine(states=_running("egress"), log_text="egress-1  | \x1b[31mstuck")
    host = _Host(tmp_path, engine)
    host.state.status_file("egress").write_text("{half a")
    with pytest.raises(StartTimeout) as caught:
        readiness.wait_ready(host, [sidecar("egress")], timeout=0.2)
    assert "egress did not become ready within 0.2 s" in caught.value.message
    assert caught.value.hint is not None and "stuck" in caught.value.hint
    assert "\x1b" not in caught.value.hint  # the log tail is shown inert


def test_a_sidecar_that_stopped_fails_the_wait_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "PS_EVERY_S", 0.0)
    exited = [ServiceState("egress", "id", "exited", None, 1)]
    host = _Host(tmp_path, FakeEngine(states=exited))
    with pytest.raises(StartTimeout) as caught:
        readiness.wait_ready(host, [sidecar("egress")], timeout=60)
    assert "egress stopped before it became ready" in caught.value.message


def test_a_start_whose_sidecar_never_serves_never_runs_the_agent(
    home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "PS_EVERY_S", 0.0)
    clock = FakeClock()
    monkeypatch.setattr(readiness, "time", clock)
    engine = FakeEngine(serving=False, states=_running("egress", "supervise"))
    bottle = Bottle(
        "shell", cwd=user_owned(repo), settings=Settings(home=home), environ={}, engine=engine
    )
    with pytest.raises(StartTimeout):
        bottle.start(wait_timeout=1)
    assert clock.slept >= 1  # it waited its whole time for the status files
    # One compose call starts every container; the agent's container holds nothing but
    # `sleep infinity` (bottle.readiness), and its program was never executed.
    assert engine.ups == [["egress", "supervise", "agent"]]
    assert engine.execs == []
    agent = bottle.render()["services"]["agent"]
    assert agent["command"] == ["sleep", "infinity"] and "entrypoint" not in agent
    assert engine.calls[-2:] == ["logs", "down"]
    [path] = (home / "state").iterdir()
    assert StateDir(path).read_metadata().status == InstanceStatus.FAILED


def _stale(host: _Host, *names: str) -> None:
    """Status files an earlier run of the instance left (egress and git-gate keep theirs)."""
    for name in names:
        path = host.state.status_file(name)
        path.write_text('{"ready": true}')
        os.utime(path, (1_000_000_000, 1_000_000_000))


def test_a_status_file_from_an_earlier_run_does_not_start_the_agent(
    home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A resume: the sidecars' containers are new, their files are the last run's. Trusting
    # them would start the agent before egress listens again.
    engine = FakeEngine()
    bottle = Bottle(
        "shell", cwd=user_owned(repo), settings=Settings(home=home), environ={}, engine=engine
    )
    instance = bottle.start()
    instance.stop(status=InstanceStatus.FINISHED, exit_code=0)
    for name in ("egress", "supervise"):
        os.utime(instance.state.status_file(name), (1_000_000_000, 1_000_000_000))
    engine.serving = False
    engine.ups.clear()
    monkeypatch.setattr(readiness, "time", FakeClock())  # the wait runs out at once
    with pytest.raises(StartTimeout):
        instance.resume(settings=Settings(home=home), environ={}, wait_timeout=1)
    # One up starts every container; the agent's program was never executed.
    assert engine.ups == [["egress", "supervise", "agent"]]
    assert engine.execs == []


def test_a_sidecar_left_running_keeps_its_status_file(tmp_path: Path) -> None:
    # A preserved instance whose sidecars still run: up leaves them be, and they never
    # write their file again.
    host = _Host(tmp_path, FakeEngine(serving=False, states=_running("egress")))
    _stale(host, "egress")
    readiness.up_in_order(host, [sidecar("egress")], env={}, wait_timeout=5)
    assert host.compose.engine.ups == [["egress", "agent"]]


def test_a_sidecar_recreated_by_up_must_write_its_file_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readiness, "time", FakeClock())  # the wait runs out at once
    engine = FakeEngine(serving=False, states=_running("egress"))
    host = _Host(tmp_path, engine)
    _stale(host, "egress")
    replaced = [ServiceState("egress", "id-new", "running", None, None)]
    original_up = host.compose.up

    def up(**kw: object) -> None:
        original_up(**kw)  # type: ignore[arg-type]
        engine.states = replaced  # compose recreated it (its configuration changed)

    host.compose.up = up  # type: ignore[method-assign]
    with pytest.raises(StartTimeout):
        readiness.up_in_order(host, [sidecar("egress")], env={}, wait_timeout=1)
    assert engine.ups == [["egress", "agent"]] and engine.execs == []


@pytest.mark.parametrize("dies", ["agent", "egress"])
def test_a_container_that_stopped_by_the_time_the_sidecars_serve_fails_the_start(
    tmp_path: Path, dies: str
) -> None:
    # up returns once every container started (no --wait): one that exited at once (an
    # agent image whose command fails, a sidecar that served and crashed) is caught here,
    # before the agent's program could be executed in a half-walled bottle.
    engine = FakeEngine(log_text=f"{dies}-1  | \x1b[31mboom")
    host = _Host(tmp_path, engine)
    original_up = host.compose.up

    def up(**kw: object) -> None:
        original_up(**kw)  # type: ignore[arg-type]
        engine.states = [
            replace(s, state="exited", exit_code=1) if s.service == dies else s
            for s in engine.states
        ]

    host.compose.up = up  # type: ignore[method-assign]
    with pytest.raises(StartTimeout) as caught:
        readiness.up_in_order(host, [sidecar("egress")], env={}, wait_timeout=5)
    assert caught.value.message == f"shell-abcde: {dies} stopped as it started"
    assert caught.value.hint is not None and "boom" in caught.value.hint
    assert "\x1b" not in caught.value.hint
    assert engine.execs == []


def test_a_start_whose_containers_all_run_passes(tmp_path: Path) -> None:
    engine = FakeEngine()
    host = _Host(tmp_path, engine)
    readiness.up_in_order(host, [sidecar("egress")], env={}, wait_timeout=5)
    assert engine.calls == ["up", "ps"]
