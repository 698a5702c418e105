from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from bottle.compose import dump_yaml, render
from bottle.errors import BottleError
from bottle.manifest import load_manifest
from bottle.plan import BottlePlan, PlanOptions, resolve_plan
from bottle.settings import Settings
from tests.conftest import write

SECRET = "s3cr3t-Value-that-must-not-leak-9431"


def plan_for(home: Path, repo: Path, bottle: str = "default", **environ: str) -> BottlePlan:
    settings = Settings.from_env({"BOTTLE_HOME": str(home)})
    manifest = load_manifest(home=home, cwd=repo)
    return resolve_plan(
        manifest,
        PlanOptions(agent="shell", bottle=bottle, cwd=repo, suffix="abcde"),
        settings=settings,
        environ=environ,
    )


def bottle_text(*, supervise: bool, remotes: bool, routes: bool) -> str:
    lines = ["---", f"supervise: {str(supervise).lower()}"]
    if routes:
        lines += [
            "egress:",
            "  routes:",
            "    - {host: api.example.com, auth: {scheme: bearer, token_ref: API_TOKEN}}",
            "    - {host: '*.pypi.org', methods: [GET]}",
        ]
    if remotes:
        lines += [
            "git:",
            "  remotes:",
            "    - {name: origin, url: 'git@example.com:me/repo.git', key_ref: DEPLOY_KEY,",
            "       host_key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMWAcDWKd8LMGI26G9JH4h6os0LeNMs3oJ7aA+X71ZSo'}",
        ]
    lines += ["env:", "  LITERAL: 'costs $5'", "  COPIED: '${HOST_THING}'", "---", ""]
    return "\n".join(lines)


MATRIX = list(itertools.product([True, False], repeat=3))


@pytest.mark.parametrize(("supervise", "remotes", "routes"), MATRIX)
def test_service_shape_for_every_sidecar_combination(
    home: Path, repo: Path, supervise: bool, remotes: bool, routes: bool
) -> None:
    write(
        home / "bottles" / "b.md", bottle_text(supervise=supervise, remotes=remotes, routes=routes)
    )
    plan = plan_for(home, repo, "b")
    spec = render(plan)
    services = spec["services"]
    expected = (
        {"agent", "egress"}
        | ({"supervise"} if supervise else set())
        | ({"git-gate"} if remotes else set())
    )
    assert set(services) == expected
    assert spec["name"] == "bottle-shell-abcde" == plan.compose_project
    assert spec["networks"]["internal"]["internal"] is True
    assert "internal" not in spec["networks"]["egress"]
    agent = services["agent"]
    assert agent["networks"] == ["internal"]
    assert set(agent["depends_on"]) == expected - {"agent"}
    # Readiness is the host's wait on the status files (bottle.readiness), not a healthcheck.
    assert all(d["condition"] == "service_started" for d in agent["depends_on"].values())
    assert services["egress"]["networks"] == ["internal", "egress"]
    if supervise:
        assert services["supervise"]["networks"] == ["internal"]
    if remotes:
        assert services["git-gate"]["networks"] == ["internal", "egress"]
    for name, service in services.items():
        assert service["init"] is True, name
        assert service["labels"]["bottle.slug"] == "shell-abcde"
        for volume in service["volumes"]:
            assert volume["type"] == "bind"
            # every bind is a directory (a single-file bind pins the inode) except .git/config
            assert not volume["source"].endswith((".yaml", ".json", ".pem")), volume
        assert "healthcheck" not in service, name  # an exec every second, for life
    assert agent["environment"]["LITERAL"] == "costs $$5"
    assert agent["environment"]["COPIED"] == "${HOST_THING}"
    assert agent["environment"]["HTTPS_PROXY"] == "http://egress:8080"
    if routes:
        assert "API_TOKEN" in services["egress"]["environment"]
        assert agent["environment"]["API_TOKEN"] == "bottle-egress-injects-this"


def test_supervise_wait_is_configurable_and_inherited(home: Path, repo: Path) -> None:
    write(home / "bottles" / "base.md", "---\nsupervise: {wait: 3}\n---\n")
    write(home / "bottles" / "b.md", "---\nextends: base\n---\n")
    write(home / "bottles" / "off.md", "---\nextends: base\nsupervise: false\n---\n")
    environment = render(plan_for(home, repo, "b"))["services"]["supervise"]["environment"]
    assert "BOTTLE_SUPERVISE_WAIT=3" in environment
    assert "supervise" not in render(plan_for(home, repo, "off"))["services"]
    default = render(plan_for(home, repo, "default"))["services"]["supervise"]["environment"]
    assert "BOTTLE_SUPERVISE_WAIT=30" in default
    # Settings merge one by one: "true" in a child keeps the inherited wait.
    write(home / "bottles" / "on.md", "---\nextends: base\nsupervise: true\n---\n")
    inherited = render(plan_for(home, repo, "on"))["services"]["supervise"]["environment"]
    assert "BOTTLE_SUPERVISE_WAIT=3" in inherited


def test_supervise_queue_bounds_are_settings(home: Path, repo: Path) -> None:
    write(home / "bottles" / "base.md", "---\nsupervise: {max_pending: 3, per_minute: 2}\n---\n")
    write(home / "bottles" / "b.md", "---\nextends: base\nsupervise: {burst: 1}\n---\n")
    environment = render(plan_for(home, repo, "b"))["services"]["supervise"]["environment"]
    assert "BOTTLE_SUPERVISE_MAX_PENDING=3" in environment
    assert "BOTTLE_SUPERVISE_PER_MINUTE=2" in environment
    assert "BOTTLE_SUPERVISE_BURST=1" in environment
    default = render(plan_for(home, repo, "default"))["services"]["supervise"]["environment"]
    assert "BOTTLE_SUPERVISE_MAX_PENDING=20" in default
    write(home / "bottles" / "bad.md", "---\nsupervise: {max_pending: 0}\n---\n")
    with pytest.raises(BottleError, match="max_pending"):
        plan_for(home, repo, "bad")


def test_dump_is_stable_and_quotes_ambiguous_strings(home: Path, repo: Path) -> None:
    write(home / "bottles" / "b.md", "---\nenv: {A: 'yes', B: '1:20', C: '010', D: 'on'}\n---\n")
    plan = plan_for(home, repo, "b")
    first, second = dump_yaml(render(plan)), dump_yaml(render(plan))
    assert first == second
    env = YAML(typ="safe", pure=True).load(first)["services"]["agent"]["environment"]
    assert env["A"] == "yes" and env["B"] == "1:20" and env["C"] == "010" and env["D"] == "on"
    assert "A: 'yes'" in first and "B: '1:20'" in first


def test_no_secret_value_in_any_rendered_file(home: Path, repo: Path) -> None:
    from bottle.compose import agent_files
    from bottle.sidecars import enabled_sidecars

    write(home / "bottles" / "b.md", bottle_text(supervise=True, remotes=True, routes=True))
    plan = plan_for(
        home, repo, "b", API_TOKEN=SECRET, DEPLOY_KEY=SECRET + "k", HOST_THING=SECRET + "h"
    )
    assert plan.missing_env == ()
    blobs = [dump_yaml(render(plan)).encode(), *agent_files(plan).values()]
    for sidecar in enabled_sidecars(plan):
        blobs += list(sidecar.files(plan.sidecars[sidecar.name]).values())
    for blob in blobs:
        assert SECRET.encode() not in blob


def test_missing_host_variables_are_reported(home: Path, repo: Path) -> None:
    from bottle.errors import PlanError

    write(home / "bottles" / "b.md", bottle_text(supervise=True, remotes=True, routes=True))
    plan = plan_for(home, repo, "b")
    assert set(plan.missing_env) == {"HOST_THING", "API_TOKEN", "DEPLOY_KEY"}
    with pytest.raises(PlanError, match="API_TOKEN"):
        plan.require_env()


def test_every_object_carries_its_home_so_cleanup_stays_in_it(
    home: Path, repo: Path, tmp_path: Path
) -> None:
    from bottle.settings import home_id

    write(home / "bottles" / "b.md", bottle_text(supervise=True, remotes=False, routes=True))
    spec = render(plan_for(home, repo, "b"))
    ours = home_id(Settings.from_env({"BOTTLE_HOME": str(home)}).state_root)
    for name, service in spec["services"].items():
        assert service["labels"]["bottle.home"] == ours, name
    for name, network in spec["networks"].items():
        assert network["labels"]["bottle.home"] == ours, name
    other = Settings.from_env({"BOTTLE_HOME": str(tmp_path / "other")})
    assert other.home_id != ours
