"""``compose up`` gets secret values in its own environment; ours never changes."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from bottle.engine.compose import ComposeProject
from bottle.errors import EngineError, StartTimeout
from tests.conftest import fake_docker_on_path

#: Stands in for the docker CLI: records its argv and the secret it was given, takes a
#: moment (so the test can look at our environment meanwhile), fails when told to.
FAKE_DOCKER = """#!/bin/sh
printf '%s\\n' "$@" > "$RECORD.argv"
printf '%s' "${BOTTLE_TEST_SECRET-unset}" > "$RECORD.secret"
sleep "${FAKE_SLEEP:-0}"
if [ -n "$FAKE_FAIL" ]; then echo "$FAKE_FAIL" >&2; exit 1; fi
"""


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake_docker_on_path(tmp_path / "bin", FAKE_DOCKER, monkeypatch)
    record = tmp_path / "record"
    monkeypatch.setenv("RECORD", str(record))
    monkeypatch.delenv("BOTTLE_TEST_SECRET", raising=False)
    return record


def _project(tmp_path: Path) -> ComposeProject:
    compose = tmp_path / "docker-compose.yml"
    compose.write_text("services: {}\n")
    return ComposeProject(compose_file=compose, project="bottle-t-abcde", project_dir=tmp_path)


def test_up_hands_secrets_to_compose_alone(
    tmp_path: Path, fake_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_SLEEP", "0.05")  # compose runs a while: a leak would show
    before = dict(os.environ)
    seen: list[str | None] = []
    project = _project(tmp_path)
    worker = threading.Thread(
        target=project.up, kwargs={"env": {"BOTTLE_TEST_SECRET": "s3cret"}, "wait_timeout": 5}
    )
    worker.start()
    while worker.is_alive():
        seen.append(os.environ.get("BOTTLE_TEST_SECRET"))
        worker.join(0.01)
    assert dict(os.environ) == before
    assert seen and set(seen) == {None}  # never visible here, not even while compose ran
    assert (fake_docker.parent / "record.secret").read_text() == "s3cret"
    argv = (fake_docker.parent / "record.argv").read_text().split()
    assert argv[0] == "compose" and "--project-name" in argv and "bottle-t-abcde" in argv
    # No --wait: the host waits for the sidecars' status files itself (bottle.readiness).
    assert argv[argv.index("up") :] == ["up", "--detach"]


def test_up_service_recreates_one_service_without_its_dependencies(
    tmp_path: Path, fake_docker: Path
) -> None:
    _project(tmp_path).up_service("agent", env={"BOTTLE_TEST_SECRET": "x"}, wait_timeout=9)
    argv = (fake_docker.parent / "record.argv").read_text().split()
    assert argv[argv.index("up") :] == [
        "up",
        "--detach",
        "--wait",
        "--wait-timeout",
        "9",
        "--force-recreate",
        "--no-deps",
        "agent",
    ]
    assert "BOTTLE_TEST_SECRET" not in os.environ


@pytest.mark.parametrize(
    ("stderr", "kind"),
    [("container bottle-x-agent-1 is unhealthy: timeout", StartTimeout), ("boom", EngineError)],
)
def test_a_failed_up_is_an_engine_error_and_leaves_the_environment(
    tmp_path: Path,
    fake_docker: Path,
    monkeypatch: pytest.MonkeyPatch,
    stderr: str,
    kind: type[EngineError],
) -> None:
    monkeypatch.setenv("FAKE_FAIL", stderr)
    project = _project(tmp_path)
    monkeypatch.setattr(project, "ps", list)  # the fake docker lists no containers
    before = dict(os.environ)
    with pytest.raises(kind) as caught:
        project.up(env={"BOTTLE_TEST_SECRET": "s3cret"}, wait_timeout=5)
    assert type(caught.value) is kind and caught.value.exit_code == 1
    assert stderr in caught.value.stderr
    assert caught.value.__cause__ is not None  # the docker child's failure, for --debug
    assert dict(os.environ) == before


def test_an_up_that_hangs_is_cut_at_its_bound(
    tmp_path: Path, fake_docker: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No --wait, so compose has no bound of its own: a stuck daemon must not hang start.
    monkeypatch.setenv("FAKE_SLEEP", "5")
    project = _project(tmp_path)
    monkeypatch.setattr(project, "ps", list)
    with pytest.raises(StartTimeout, match=r"compose did not finish within 0\.05 s"):
        project.up(env={}, wait_timeout=0.05)
