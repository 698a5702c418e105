"""The docker CLI probes every start makes: the engine check and whether an image exists.

A fake ``docker`` on PATH answers as the real one does in each case (its messages are the
real CLI's); the real calls are exercised by every integration test's start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bottle.engine.compose import check_docker
from bottle.engine.images import image_exists
from bottle.errors import DockerUnavailable, EngineError
from tests.conftest import fake_docker_on_path

FAKE_DOCKER = """#!/bin/sh
case "$1 $2" in
  "compose version") [ -n "$NO_COMPOSE" ] && { echo "docker: 'compose' is not a docker command." >&2; exit 1; }
                     echo "${COMPOSE_VERSION:-2.40.3}" ;;
  "info --format") [ -n "$NO_DAEMON" ] && { echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1; }
                   echo 20.10.24 ;;
  "image inspect")
    [ -n "$NO_DAEMON" ] && { echo "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?" >&2; exit 1; }
    [ -n "$BROKEN" ] && { echo "permission denied while trying to connect" >&2; exit 1; }
    case "$5" in
      present:*) echo sha256:0123 ;;
      *) echo "Error response from daemon: no such image: $5: No such image: $5" >&2; exit 1 ;;
    esac ;;
  *) echo "unexpected: $*" >&2; exit 3 ;;
esac
"""


@pytest.fixture(autouse=True)
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_docker_on_path(tmp_path / "bin", FAKE_DOCKER, monkeypatch)
    for name in ("NO_COMPOSE", "NO_DAEMON", "BROKEN", "COMPOSE_VERSION"):
        monkeypatch.delenv(name, raising=False)


def test_a_working_engine_passes_the_check() -> None:
    check_docker()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"NO_COMPOSE": "1"}, "docker compose v2 is not installed"),
        ({"COMPOSE_VERSION": "1.29.2"}, "docker compose v2 is not installed"),
        ({"NO_DAEMON": "1"}, "the Docker daemon is not running"),
    ],
)
def test_the_check_names_what_is_missing(
    env: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(DockerUnavailable) as caught:
        check_docker()
    assert caught.value.message == message and caught.value.hint


def test_an_image_exists_or_not() -> None:
    assert image_exists("present:1") is True
    assert image_exists("absent:1") is False


def test_looking_for_an_image_without_a_daemon_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_DAEMON", "1")
    with pytest.raises(DockerUnavailable, match="daemon is not running"):
        image_exists("present:1")


def test_any_other_failure_is_an_engine_error_not_a_missing_image(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A wrong answer here would make start build an image it has (or hide the real error).
    monkeypatch.setenv("BROKEN", "1")
    with pytest.raises(EngineError, match="looking for image present:1 failed: permission"):
        image_exists("present:1")
