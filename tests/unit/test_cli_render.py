"""``bottle render`` names each service that will not start here, and why; its YAML stays
what compose reads.

The engine is the fake behind the ``Engine`` seam: which images exist is its answer, not a
claim about Docker. That ``docker compose config`` reads the output is checked in
tests/process/test_compose_config.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bottle.errors import DockerUnavailable, PlanError
from tests.conftest import CliResult, run_cli_here, user_owned, write
from tests.fakes import FakeEngine

#: Every case at once: an unset ${VAR}, a question, an unset provider key, an ssh remote
#: with no key and an https remote with no token.
_BOTTLE = """---
agent: {provider: claude}
env: {PROJECT_TOKEN: "${PROJECT_TOKEN}", NAME: "?your name"}
egress:
  routes:
    - host: api.anthropic.com
      auth: {scheme: "header:x-api-key", token_ref: ANTHROPIC_API_KEY}
git:
  remotes:
    - name: origin
      url: git@github.com:example/project.git
      host_key: "github.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    - name: mirror
      url: https://example.com/project.git
---
"""


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    from bottle import bottle

    engine = FakeEngine()
    monkeypatch.setattr(bottle, "DockerEngine", lambda: engine)
    return engine


@pytest.fixture
def render(
    monkeypatch: pytest.MonkeyPatch, home: Path, tmp_path: Path, fake: FakeEngine
) -> Callable[..., CliResult]:
    workspace = tmp_path / "ws"
    workspace.mkdir()
    user_owned(workspace)
    write(home / "bottles" / "all.md", _BOTTLE)
    for name in ("ANTHROPIC_API_KEY", "PROJECT_TOKEN", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)

    def run(*args: str, **env: str) -> CliResult:
        return run_cli_here(
            "render", *args, cwd=workspace, env={"BOTTLE_HOME": str(home), **env},
            monkeypatch=monkeypatch,
        )  # fmt: skip

    return run


def _yaml(text: str) -> dict[str, object]:
    loaded: dict[str, object] = YAML(typ="safe", pure=True).load(text)
    return loaded


def test_render_names_each_service_that_will_not_start_and_why(
    render: Callable[..., CliResult], fake: FakeEngine
) -> None:
    from bottle import Bottle

    plan = Bottle("shell", bottle="all").plan()
    fake.missing_images = {plan.images.agent}
    done = render("shell", "--bottle", "all")
    assert done.returncode == 0, done.stderr
    err = done.stderr
    assert (
        "warning: agent will not start: host variable(s) its env names not set: PROJECT_TOKEN"
        in err
    )
    assert "hint: export PROJECT_TOKEN=... before starting" in err
    assert "agent will not start: claude's API key for api.anthropic.com (ANTHROPIC_API_KEY)" in err
    assert "egress will not start: host variable(s) it holds not set: ANTHROPIC_API_KEY" in err
    assert "agent: NAME is asked at start ('your name')" in err
    assert "git-gate starts, but ssh remote 'origin' has no key_ref" in err
    assert "git-gate starts, but https remote 'mirror' has no token_ref" in err
    assert f"agent: its image {plan.images.agent} is not built yet" in err
    assert plan.images.sidecar not in err  # the sidecar image is there
    assert "supervise" not in err  # nothing keeps it from starting
    # stdout is the compose file alone, the one a start would write.
    spec = _yaml(done.stdout)
    assert set(spec["services"]) == {"agent", "egress", "supervise", "git-gate"}  # type: ignore[arg-type]
    assert "warning" not in done.stdout and "hint" not in done.stdout


def test_a_set_variable_clears_its_note(render: Callable[..., CliResult]) -> None:
    done = render("shell", "--bottle", "all", ANTHROPIC_API_KEY="k", PROJECT_TOKEN="t")
    assert done.returncode == 0, done.stderr
    assert "will not start" not in done.stderr
    assert "ANTHROPIC_API_KEY" not in done.stderr and "PROJECT_TOKEN" not in done.stderr
    assert "k" not in done.stdout.split() and "${PROJECT_TOKEN}" in done.stdout


def test_render_json_carries_the_spec_and_each_services_notes(
    render: Callable[..., CliResult], fake: FakeEngine
) -> None:
    from bottle import Bottle

    fake.missing_images = {Bottle("shell", bottle="all").plan().images.sidecar}
    done = render("shell", "--bottle", "all", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["starts"] is False
    services = data["services"]
    assert set(services) == set(data["compose"]["services"])
    assert services["egress"]["starts"] is False
    kinds = {n["kind"] for n in services["egress"]["notes"]}
    assert kinds == {"refused", "build"}  # an unset key, and the sidecar image to build
    assert services["supervise"] == {
        "starts": True,
        "notes": [
            {
                "kind": "build",
                "problem": services["supervise"]["notes"][0]["problem"],
                "fix": "start builds it first, which can take minutes",
            }
        ],
    }
    gate = services["git-gate"]
    assert gate["starts"] is True
    assert [n["kind"] for n in gate["notes"]] == ["limited", "limited", "build"]
    assert all(n["fix"] for s in services.values() for n in s["notes"])


def test_provider_without_a_credential_route_is_noted(
    render: Callable[..., CliResult], home: Path
) -> None:
    write(home / "bottles" / "bare.md", "---\nagent: {provider: codex}\n---\n")
    done = render("shell", "--bottle", "bare")
    assert done.returncode == 0, done.stderr
    assert "agent starts, but no route gives codex a credential for api.openai.com" in (done.stderr)


def test_the_builtin_shell_has_no_notes(render: Callable[..., CliResult]) -> None:
    done = render()
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_an_unavailable_sidecar_is_named(
    render: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle.sidecars import git_gate

    gate = git_gate.SIDECAR
    monkeypatch.setattr(
        gate, "unavailable", lambda: PlanError("git-gate is missing", hint="Remove git.remotes")
    )
    done = render("shell", "--bottle", "all", ANTHROPIC_API_KEY="k", PROJECT_TOKEN="t")
    assert "warning: git-gate will not start: git-gate is missing" in done.stderr
    assert "hint: Remove git.remotes" in done.stderr


def test_render_without_docker_still_renders_and_says_images_are_unknown(
    render: Callable[..., CliResult], fake: FakeEngine
) -> None:
    fake.fail["image_exists"] = DockerUnavailable("the Docker daemon is not running")
    done = render()
    assert done.returncode == 0, done.stderr
    assert "cannot tell which images are built: the Docker daemon is not running" in done.stderr
    assert "bottle-shell-" in done.stdout


def test_a_root_workspace_is_noted(
    render: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle import plan

    monkeypatch.setattr(plan, "_owner", lambda _cwd: "0:0")
    done = render()
    assert "warning: agent will not start: it would run as root" in done.stderr
    assert "set 'agent: {user: root}' in the bottle 'default'" in done.stderr
