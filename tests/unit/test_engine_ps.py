"""``docker ps`` lines become service states: the one listing ``bottle ls`` makes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from bottle.engine.compose import ComposeProject, containers
from bottle.errors import DockerUnavailable, EngineError

LINES = [
    "c1\trunning\tUp 5 minutes (healthy)\tbottle-a\tegress\ta\th1\tbottle-a-egress-1",
    "c2\trunning\tUp 3 seconds (health: starting)\tbottle-a\tsupervise\ta\th1\tx",
    "c3\texited\tExited (137) 2 minutes ago\tbottle-a\tagent\ta\th1\tbottle-a-agent-1",
    "c4\trunning\tUp 1 minute (unhealthy)\tbottle-b\tegress\tb\th2\tbottle-b-egress-1",
    "not a line of ours",
]


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A docker that prints ``$PS_OUT`` (or fails with ``$PS_ERR``) and records its argv."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "docker"
    script.write_text(
        '#!/bin/sh\nprintf \'%s\\n\' "$@" > "$RECORD"\n'
        'if [ -n "$PS_ERR" ]; then echo "$PS_ERR" >&2; exit 1; fi\ncat "$PS_OUT"\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    out = tmp_path / "ps.out"
    out.write_text("\n".join(LINES) + "\n")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("PS_OUT", str(out))
    monkeypatch.setenv("RECORD", str(tmp_path / "argv"))
    monkeypatch.delenv("PS_ERR", raising=False)
    return tmp_path / "argv"


def test_states_health_and_exit_codes_are_read_from_the_status(docker: Path) -> None:
    found = {c.id: c for c in containers("bottle.slug")}
    assert set(found) == {"c1", "c2", "c3", "c4"}  # the stray line is skipped
    assert (found["c1"].state.state, found["c1"].state.health) == ("running", "healthy")
    assert found["c2"].state.health == "starting"
    assert (found["c3"].state.exit_code, found["c3"].state.health) == (137, None)
    assert (found["c4"].project, found["c4"].slug, found["c4"].home) == ("bottle-b", "b", "h2")
    argv = docker.read_text().split("\n")
    assert argv[:2] == ["ps", "--all"] and "label=bottle.slug" in argv


def test_ps_of_a_project_keeps_its_own_containers(docker: Path, tmp_path: Path) -> None:
    project = ComposeProject(
        compose_file=tmp_path / "docker-compose.yml", project="bottle-a", project_dir=tmp_path
    )
    assert sorted(s.service for s in project.ps()) == ["agent", "egress", "supervise"]
    assert "label=com.docker.compose.project=bottle-a" in docker.read_text().split("\n")


def test_kill_signals_the_container_compose_named(docker: Path, tmp_path: Path) -> None:
    project = ComposeProject(
        compose_file=tmp_path / "docker-compose.yml", project="bottle-a", project_dir=tmp_path
    )
    project.kill("egress", "SIGHUP")
    assert docker.read_text().split() == ["kill", "--signal", "SIGHUP", "bottle-a-egress-1"]


def test_a_failing_docker_is_a_bottle_error(docker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PS_ERR", "Error: boom")
    with pytest.raises(EngineError, match="listing containers failed: Error: boom"):
        containers("bottle.slug")
    monkeypatch.setenv("PS_ERR", "Cannot connect to the Docker daemon at unix:///x")
    with pytest.raises(DockerUnavailable):
        containers("bottle.slug")
