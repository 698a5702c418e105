"""``Bottle.start`` is all or nothing, whatever step fails (Ctrl-C included)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bottle.bottle import Bottle
from bottle.engine.seam import Engine
from bottle.errors import DockerUnavailable, EngineError, ImageBuildError, StartTimeout
from bottle.settings import Settings
from bottle.state import InstanceStatus, StateDir
from tests.conftest import user_owned
from tests.fakes import FakeEngine


def _bottle(home: Path, repo: Path, engine: FakeEngine) -> Bottle:
    cwd = user_owned(repo)
    return Bottle("shell", cwd=cwd, settings=Settings(home=home), environ={}, engine=engine)


def _state_dirs(home: Path) -> list[Path]:
    root = home / "state"
    return sorted(root.iterdir()) if root.exists() else []


def test_the_fake_is_an_engine() -> None:
    engine: Engine = FakeEngine()  # mypy checks the Protocol here
    assert engine is not None


def test_a_start_that_succeeds_is_running(home: Path, repo: Path) -> None:
    engine = FakeEngine()
    instance = _bottle(home, repo, engine).start()
    assert instance.status == InstanceStatus.RUNNING
    # The images are there: looked up (with the check, in one preflight), none built.
    assert engine.calls == ["check", "image_exists", "image_exists", "up", "ps"]
    # One compose call, then one ps: every container still runs. The agent's program runs
    # after start returns (bottle.readiness).
    assert engine.ups == [["egress", "supervise", "agent"]]
    assert instance.engine is engine


@pytest.mark.parametrize(
    ("step", "exc"),
    [
        ("check", DockerUnavailable("the Docker daemon is not running")),
        ("ensure_image", ImageBuildError("building bottle-agent-shell failed", step="RUN x")),
        ("ensure_image", KeyboardInterrupt()),
    ],
)
def test_a_failure_before_the_state_dir_leaves_nothing(
    home: Path, repo: Path, step: str, exc: BaseException
) -> None:
    bottle = _bottle(home, repo, FakeEngine())
    # Every image missing: each is built, so a build can fail.
    engine = FakeEngine(
        fail={step: exc}, missing_images={s.ref for s in bottle.plan().images.specs}
    )
    bottle.engine = engine
    with pytest.raises(type(exc)):
        bottle.start()
    assert _state_dirs(home) == []
    assert "up" not in engine.calls and "down" not in engine.calls


def test_only_a_missing_image_is_built(home: Path, repo: Path) -> None:
    bottle = _bottle(home, repo, FakeEngine())
    sidecar, agent = bottle.plan().images.specs
    engine = FakeEngine(missing_images={agent.ref})
    bottle.engine = engine
    assert bottle.start().status == InstanceStatus.RUNNING
    assert engine.calls == ["check", "image_exists", "image_exists", "ensure_image", "up", "ps"]
    assert sidecar.ref != agent.ref


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_a_failure_writing_the_state_dir_removes_it(
    home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    def broken(self: StateDir, *args: object, **kwargs: object) -> None:
        raise exc

    monkeypatch.setattr(StateDir, "write_metadata", broken)
    engine = FakeEngine()
    with pytest.raises(type(exc)):
        _bottle(home, repo, engine).start()
    assert _state_dirs(home) == []
    assert "up" not in engine.calls


@pytest.mark.parametrize("exc", [PermissionError(1, "chown"), KeyboardInterrupt()])
def test_a_failure_handing_the_state_dir_to_the_containers_removes_it(
    home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    # hardening.prepare_state (the chown when bottle runs as root) ran outside the rollback:
    # a failure there left a state dir without metadata behind.
    from bottle import hardening

    def broken(*args: object) -> None:
        raise exc

    monkeypatch.setattr(hardening, "prepare_state", broken)
    with pytest.raises(type(exc)):
        _bottle(home, repo, FakeEngine()).start()
    assert _state_dirs(home) == []


@pytest.mark.parametrize(
    ("exc", "reason"),
    [
        (StartTimeout("starting bottle-shell-x failed: timeout"), "timeout"),
        (EngineError("starting bottle-shell-x failed: boom"), "boom"),
        (KeyboardInterrupt(), "interrupted"),
        (RuntimeError("a bug"), "a bug"),
    ],
)
def test_a_failed_up_keeps_the_log_takes_everything_down_and_says_failed(
    home: Path, repo: Path, exc: BaseException, reason: str
) -> None:
    engine = FakeEngine(fail={"up": exc})
    with pytest.raises(type(exc)) as caught:
        _bottle(home, repo, engine).start()
    assert caught.value is exc  # re-raised as it was, Ctrl-C included
    [path] = _state_dirs(home)
    state = StateDir(path)
    metadata = state.read_metadata()
    assert metadata.status == InstanceStatus.FAILED
    assert metadata.error is not None and reason in metadata.error
    assert state.compose_log.read_text() == engine.log_text + "\n"
    assert engine.calls[-2:] == ["up", "down"]  # ``down`` reads the logs it hands over


def test_a_rollback_whose_log_cannot_be_written_still_takes_everything_down(
    home: Path, repo: Path
) -> None:
    class LogUnwritable(FakeEngine):
        def _call(self, name: str) -> None:
            if name == "up":  # a directory where the log goes: writing it fails
                for path in _state_dirs(home):
                    (path / "compose.log").mkdir()
            super()._call(name)

    engine = LogUnwritable(fail={"up": StartTimeout("timeout")})
    with pytest.raises(StartTimeout):
        _bottle(home, repo, engine).start()
    [path] = _state_dirs(home)
    metadata = StateDir(path).read_metadata()
    assert metadata.status == InstanceStatus.FAILED
    assert metadata.error is not None and "compose.log" in metadata.error
    assert engine.calls[-1] == "down" and engine.states == []  # nothing left running


def test_a_failed_down_during_rollback_leaves_the_instance_preserved(
    home: Path, repo: Path
) -> None:
    engine = FakeEngine(fail={"up": StartTimeout("timeout"), "down": EngineError("down failed")})
    with pytest.raises(StartTimeout):
        _bottle(home, repo, engine).start()
    [path] = _state_dirs(home)
    metadata = StateDir(path).read_metadata()
    # bottle ls and bottle cleanup find it: nothing is silently left running
    assert metadata.status == InstanceStatus.PRESERVED
    assert metadata.error is not None and "down failed" in metadata.error
    # ``down`` failed before it kept the logs: they were read of what it left.
    assert engine.calls[-2:] == ["down", "logs"]
    assert StateDir(path).compose_log.read_text() == engine.log_text + "\n"
