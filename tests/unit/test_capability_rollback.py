"""Replacing the agent's image (a capability): the way back after each failure, against a
fake engine (the real build and recreate are in tests/integration/test_supervise_flows.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bottle.bottle import Bottle
from bottle.capability import replace_agent_image
from bottle.errors import ApplyError, ApplyFailed, EngineError, ImageBuildError
from bottle.instance import Instance
from bottle.settings import Settings
from tests.conftest import user_owned
from tests.fakes import FakeEngine


def _running(tmp_path: Path, engine: FakeEngine) -> Instance:
    (tmp_path / "home").mkdir(exist_ok=True)
    (tmp_path / "repo").mkdir(exist_ok=True)
    user_owned(tmp_path / "repo")
    settings = Settings(home=tmp_path / "home")
    bottle = Bottle("shell", cwd=tmp_path / "repo", settings=settings, environ={}, engine=engine)
    return bottle.start()


DOCKERFILE = "FROM ${BOTTLE_AGENT_IMAGE}\nRUN true\n"


def test_a_replaced_agent_runs_the_new_image(tmp_path: Path) -> None:
    engine = FakeEngine()
    instance = _running(tmp_path, engine)
    old = instance.metadata.images["agent"]
    ref = replace_agent_image(instance, DOCKERFILE, settings=Settings(home=tmp_path / "home"))
    assert ref != old and instance.metadata.images["agent"] == ref
    assert f"image: {ref}" in instance.state.compose_file.read_text()
    assert engine.calls[-1] == "up_service agent"
    # A session attached to the agent sees the replacement, and that it is over.
    assert instance.metadata.agent_restarts == 1 and instance.metadata.replacing is None
    # supervise (which keeps running) learns the image in force from this file.
    assert (instance.state.proposals / "agent-image").read_text() == ref + "\n"


def test_a_failed_build_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    engine = FakeEngine()
    instance = _running(tmp_path, engine)
    compose_before = instance.state.compose_file.read_text()
    engine.fail["ensure_image"] = ImageBuildError(
        "building the capability failed", step="RUN true", stderr="line 1\nE: no such package"
    )
    with pytest.raises(ApplyError) as caught:
        replace_agent_image(instance, DOCKERFILE, settings=Settings(home=tmp_path / "home"))
    assert caught.value.exit_code == 2 and "E: no such package" in caught.value.message
    assert instance.state.compose_file.read_text() == compose_before
    assert "up_service agent" not in engine.calls


@pytest.mark.parametrize(
    ("failures", "restarted"),
    [([EngineError("agent unhealthy")], True), ([EngineError("a"), EngineError("b")], False)],
)
def test_an_agent_that_does_not_come_up_is_put_back_and_it_fails(
    tmp_path: Path, failures: list[BaseException], restarted: bool
) -> None:
    engine = FakeEngine()
    instance = _running(tmp_path, engine)
    compose_before = instance.state.compose_file.read_text()
    old = instance.metadata.images["agent"]
    engine.fail["up_service agent"] = failures
    with pytest.raises(ApplyFailed) as caught:
        replace_agent_image(instance, DOCKERFILE, settings=Settings(home=tmp_path / "home"))
    assert caught.value.exit_code == 1 and isinstance(caught.value.__cause__, EngineError)
    assert ("runs its previous image" in (caught.value.hint or "")) is restarted
    assert instance.state.compose_file.read_text() == compose_before
    assert instance.metadata.images["agent"] == old
    assert not (instance.state.proposals / "agent-image").exists()  # still the start's
    assert engine.calls.count("up_service agent") == 2  # the try, then the way back
    # Restarted on the old image is a replacement too: the session continues there.
    assert instance.metadata.agent_restarts == (1 if restarted else 0)
    assert instance.metadata.replacing is None


def test_ctrl_c_while_the_agent_is_recreated_puts_the_old_one_back(tmp_path: Path) -> None:
    engine = FakeEngine()
    instance = _running(tmp_path, engine)
    compose_before = instance.state.compose_file.read_text()
    engine.fail["up_service agent"] = KeyboardInterrupt()
    with pytest.raises(KeyboardInterrupt):
        replace_agent_image(instance, DOCKERFILE, settings=Settings(home=tmp_path / "home"))
    assert instance.state.compose_file.read_text() == compose_before
    assert engine.calls.count("up_service agent") == 2
    assert instance.metadata.replacing is None
