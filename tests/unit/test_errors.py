"""One exception tree with honest kinds, and every known escape translated into it."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

import bottle.errors as errors
from bottle.bottle import Bottle
from bottle.errors import (
    ApplyError,
    ApplyFailed,
    BottleError,
    EngineError,
    Failed,
    Refused,
    SettingsError,
    StateError,
)
from bottle.instance import Instance
from bottle.operator import approve, proposal_queue, set_routes
from bottle.policy import Routes
from bottle.settings import Settings
from bottle.state import StateDir
from tests.conftest import CliResult, FakeClock, run_cli_here, user_owned, write
from tests.fakes import FakeEngine

KINDS = [
    cls
    for _, cls in inspect.getmembers(errors, inspect.isclass)
    if issubclass(cls, BottleError) and cls not in {BottleError, Refused, Failed}
]


@pytest.mark.parametrize("cls", KINDS, ids=lambda cls: cls.__name__)
def test_every_error_is_refused_or_failed_and_drawn(cls: type[BottleError]) -> None:
    assert issubclass(cls, Refused) != issubclass(cls, Failed)
    assert cls.exit_code == (2 if issubclass(cls, Refused) else 1)
    assert f"── {cls.__name__} " in (errors.__doc__ or "")


def test_apply_error_stays_the_refused_kind() -> None:
    assert issubclass(ApplyError, Refused) and issubclass(ApplyFailed, Failed)
    assert not issubclass(ApplyFailed, ApplyError)


# -- settings -------------------------------------------------------------------------------


def test_an_unreadable_extra_ca_file_is_refused(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, extra_ca_certs=tmp_path / "missing.pem")
    with pytest.raises(SettingsError, match="BOTTLE_EXTRA_CA_CERTS") as caught:
        settings.host_ca_pem()
    assert caught.value.exit_code == 2 and isinstance(caught.value.__cause__, OSError)


def test_an_unreadable_system_bundle_is_a_failure(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, system_ca_bundle=tmp_path)  # a directory
    with pytest.raises(Failed, match="system CA bundle") as caught:
        settings.host_ca_pem()
    assert isinstance(caught.value.__cause__, OSError)


# -- state ----------------------------------------------------------------------------------


def test_unreadable_metadata_is_a_state_error(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "slug-abcde")
    state.create()
    state.metadata_file.mkdir()  # read_text raises IsADirectoryError
    with pytest.raises(StateError, match="cannot be read") as caught:
        state.read_metadata()
    assert isinstance(caught.value.__cause__, OSError)


# -- live changes, on an instance started against a fake engine -----------------------------


@pytest.fixture
def running(tmp_path: Path) -> tuple[Instance, FakeEngine, Settings]:
    (tmp_path / "home").mkdir()
    (tmp_path / "repo").mkdir()
    user_owned(tmp_path / "repo")
    settings = Settings(home=tmp_path / "home")
    engine = FakeEngine()
    bottle = Bottle("shell", cwd=tmp_path / "repo", settings=settings, environ={}, engine=engine)
    return bottle.start(), engine, settings


def test_egress_that_never_confirms_is_a_failure(
    running: tuple[Instance, FakeEngine, Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bottle.sidecars.egress as egress_module

    monkeypatch.setattr(egress_module, "time", FakeClock())  # the wait runs out at once
    instance, engine, _ = running
    with pytest.raises(ApplyFailed, match="did not confirm") as caught:
        instance.routes.reload(timeout=0.1)
    assert caught.value.exit_code == 1
    assert "kill egress SIGHUP" in engine.calls


def test_a_missing_routes_file_is_a_failure_not_bad_input(
    running: tuple[Instance, FakeEngine, Settings],
) -> None:
    instance, _, _ = running
    instance.routes.path.unlink()
    with pytest.raises(StateError, match="cannot read the live routes") as caught:
        set_routes(instance, Routes(), based_on=b"routes: []\n")
    assert isinstance(caught.value.__cause__, OSError)
    with pytest.raises(StateError, match="cannot read the live routes"):
        instance.routes.current()


def _capability(instance: Instance) -> int:
    agent = instance.metadata.images["agent"]
    dockerfile = "FROM ${BOTTLE_AGENT_IMAGE}\nRUN true\n"
    queue = proposal_queue(instance)
    return queue.create("capability-block", {"dockerfile": dockerfile}, "j", base_ref=agent).id


def test_a_damaged_compose_file_during_approve_is_a_failure(
    running: tuple[Instance, FakeEngine, Settings],
) -> None:
    instance, _, settings = running
    proposal_id = _capability(instance)
    instance.state.compose_file.unlink()
    with pytest.raises(ApplyFailed, match=f"proposal {proposal_id} could not be applied") as c:
        approve(instance, proposal_id, settings=settings)
    assert isinstance(c.value.__cause__, OSError)
    assert proposal_queue(instance).get(proposal_id).status == "pending"


def test_a_build_that_fails_during_approve_is_refused_and_stays_pending(
    running: tuple[Instance, FakeEngine, Settings],
) -> None:
    instance, engine, settings = running
    proposal_id = _capability(instance)
    engine.fail["ensure_image"] = errors.ImageBuildError("build failed", stderr="E: nope")
    with pytest.raises(ApplyError) as caught:
        approve(instance, proposal_id, settings=settings)
    assert type(caught.value) is ApplyError and "stays pending" in (caught.value.hint or "")
    assert proposal_queue(instance).get(proposal_id).status == "pending"


def test_an_agent_that_does_not_come_up_during_approve_is_a_failure(
    running: tuple[Instance, FakeEngine, Settings],
) -> None:
    instance, engine, settings = running
    proposal_id = _capability(instance)
    engine.fail["up_service agent"] = EngineError("agent unhealthy")
    with pytest.raises(ApplyFailed) as caught:
        approve(instance, proposal_id, settings=settings)
    assert caught.value.exit_code == 1 and "stays pending" in (caught.value.hint or "")
    assert proposal_queue(instance).get(proposal_id).status == "pending"


# -- one bad agent.dockerfile, one exit code ------------------------------------------------


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    def run(*args: str, home: Path, cwd: Path) -> CliResult:
        return run_cli_here(*args, cwd=cwd, env={"BOTTLE_HOME": str(home)}, monkeypatch=monkeypatch)

    return run


@pytest.mark.parametrize(
    ("dockerfile", "words"),
    [
        (None, "does not exist"),
        ("FROM debian:12\n", "must build on the provider image"),
        (b"\xff\xfe not text", "not UTF-8"),
    ],
)
def test_a_bad_agent_dockerfile_is_refused_whatever_is_wrong(
    cli: Callable[..., CliResult],
    home: Path,
    repo: Path,
    dockerfile: str | bytes | None,
    words: str,
) -> None:
    write(home / "bottles" / "d.md", "---\nagent:\n  dockerfile: agent.Dockerfile\n---\n")
    write(home / "agents" / "d.md", "---\nbottle: d\n---\n")
    if isinstance(dockerfile, bytes):
        (home / "bottles" / "agent.Dockerfile").write_bytes(dockerfile)
    elif dockerfile is not None:
        write(home / "bottles" / "agent.Dockerfile", dockerfile)
    done = cli("render", "d", home=home, cwd=repo)
    assert done.returncode == 2, done.stderr
    assert words in done.stderr and "agent.Dockerfile" in done.stderr
    assert f"{home / 'bottles' / 'd.md'}: agent.dockerfile: " in done.stderr  # file and field
    assert "Traceback" not in done.stderr


def test_a_bad_live_routes_file_is_refused_not_a_parser_error(
    running: tuple[Instance, FakeEngine, Settings],
) -> None:
    from bottle.policy import RoutesFileError

    instance, _, _ = running
    instance.routes.path.write_text("routes: [{host: 'bad host'}]\n")
    with pytest.raises(ApplyError, match="invalid routes") as caught:
        instance.routes.current()
    assert not isinstance(caught.value, RoutesFileError)
    assert caught.value.exit_code == 2
