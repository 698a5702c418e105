"""What bottle renders is what ``docker compose`` reads: the real compose CLI (no engine)
parses every shipped example's compose file and ``bottle render``'s output."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from bottle.compose import dump_yaml, render
from bottle.manifest import load_manifest
from bottle.plan import PlanOptions, resolve_plan
from bottle.settings import Settings
from tests.conftest import CliResult
from tests.unit.test_cli_render import fake
from tests.unit.test_cli_render import render as render_cli

__all__ = ["fake", "render_cli"]  # fixtures of bottle render's unit tests, shared here


def test_examples_render_to_valid_compose(
    examples_home: Path, repo: Path, compose_cli: None
) -> None:
    from bottle.catalog import list_agents

    for row in list_agents(Settings.from_env({"BOTTLE_HOME": str(examples_home)}), repo):
        manifest = load_manifest(home=examples_home, cwd=repo)
        plan = resolve_plan(
            manifest,
            PlanOptions(agent=row.name, cwd=repo),
            settings=Settings.from_env({"BOTTLE_HOME": str(examples_home)}),
            environ={},
        )
        text = dump_yaml(render(plan))
        done = subprocess.run(
            ["docker", "compose", "-f", "-", "config", "-q"],
            input=text.encode(),
            capture_output=True,
            cwd=repo,
            check=False,
        )
        assert done.returncode == 0, (row.name, done.stderr.decode())


def test_render_output_is_what_docker_compose_reads(
    render_cli: Callable[..., CliResult], compose_cli: None
) -> None:
    done = render_cli("shell", "--bottle", "all")
    checked = subprocess.run(
        ["docker", "compose", "-f", "-", "config", "--services"],
        input=done.stdout,
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin:/usr/local/bin", "PROJECT_TOKEN": "", "NAME": ""},
    )
    assert checked.returncode == 0, checked.stderr
    assert set(checked.stdout.split()) == {"agent", "egress", "supervise", "git-gate"}
