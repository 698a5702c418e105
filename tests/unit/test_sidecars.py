"""Every registered sidecar against the protocol, and the seam: nothing else names one."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from bottle import compose
from bottle.errors import ApplyError, ApplyFailed, ManifestError, PlanError
from bottle.manifest import bottle_file_model, load_manifest
from bottle.manifest.models import BottleSpec
from bottle.plan import BottlePlan, PlanOptions, resolve_plan
from bottle.runtime.status import SidecarStatus
from bottle.settings import Settings
from bottle.sidecars import AgentAddon, PlanContext, Sidecar, registry
from bottle.state import StateDir
from tests.conftest import FakeClock, write

SRC = Path(__file__).resolve().parents[2] / "src" / "bottle"
SIDECAR_MODULES = sorted(p.stem for p in (SRC / "sidecars").glob("*.py") if p.stem[0] != "_")
FULL = """---
supervise: {wait: 7}
egress:
  routes:
    - {host: api.example.com, auth: {scheme: bearer, token_ref: API_TOKEN}}
  dlp_secrets: [EXTRA_SECRET]
git:
  remotes:
    - {name: origin, url: 'git@example.com:me/repo.git', key_ref: DEPLOY_KEY,
       host_key: 'example.com ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMWAcDWKd8LMGI26G9JH4h6os0LeNMs3oJ7aA+X71ZSo'}
---
"""


def full_plan(home: Path, repo: Path) -> BottlePlan:
    write(home / "bottles" / "full.md", FULL)
    return resolve_plan(
        load_manifest(home=home, cwd=repo),
        PlanOptions(bottle="full", cwd=repo, suffix="abcde"),
        settings=Settings.from_env({"BOTTLE_HOME": str(home)}),
        environ={},
    )


class FakeHost:
    """A SidecarHost over a real state directory; kill records instead of signalling."""

    def __init__(self, state: StateDir) -> None:
        self.state = state
        self.slug = state.slug
        self.killed: list[tuple[str, str]] = []

    @property
    def compose(self) -> FakeHost:
        return self

    def kill(self, service: str, signal: str) -> None:
        self.killed.append((service, signal))


@pytest.fixture(params=[s.name for s in registry()])
def sidecar(request: pytest.FixtureRequest) -> Sidecar[Any, Any]:
    return next(s for s in registry() if s.name == request.param)


def test_registry_is_every_sidecar_module_once() -> None:
    names = [s.name for s in registry()]
    assert len(names) == len(set(names)) and names[0] == "egress"
    assert len({s.section for s in registry()}) == len(names)
    modules = sorted(inspect.getmodule(s).__name__.rsplit(".", 1)[-1] for s in registry())  # type: ignore[union-attr]
    assert modules == [m for m in SIDECAR_MODULES if m != "base"]


def test_sidecar_implements_the_protocol(
    sidecar: Sidecar[Any, Any], home: Path, repo: Path, tmp_path: Path
) -> None:
    assert isinstance(sidecar, Sidecar)
    assert issubclass(sidecar.section_model, BaseModel)
    assert issubclass(sidecar.plan_model, BaseModel)
    # Its section is a field of the bottle file model, rejecting unknown keys.
    field = bottle_file_model().model_fields[sidecar.section]
    assert sidecar.section_model in (field.annotation, *getattr(field.annotation, "__args__", ()))
    write(home / "bottles" / "bad.md", f"---\n{sidecar.section}: {{nonsense: 1}}\n---\n")
    with pytest.raises(ManifestError, match="unknown key") as info:
        load_manifest(home=home, cwd=repo)
    assert info.value.field == f"{sidecar.section}.nonsense"
    (home / "bottles" / "bad.md").unlink()

    plan = full_plan(home, repo)
    sub = plan.sidecars[sidecar.name]  # FULL enables every sidecar
    assert isinstance(sub, sidecar.plan_model)
    assert sidecar.plan_model.model_validate(sub.model_dump(mode="json")) == sub
    # A bottle that does not mention it: its default section, merged with nothing.
    bare = sidecar.plan(sidecar.merge(None, sidecar.default_section()), PlanContext("x", None))
    assert bare is None or isinstance(bare, sidecar.plan_model)
    for ref in sidecar.secret_refs(sub):
        assert ref in plan.secret_refs
    service = sidecar.compose_service(sub, plan)
    assert service["labels"]["bottle.role"] == sidecar.name
    assert service["image"] == plan.images.sidecar
    for name, data in sidecar.files(sub).items():
        assert "/" not in name and isinstance(data, bytes)
    addon = sidecar.agent(sub, direct=["x"])
    assert isinstance(addon, AgentAddon)
    assert all(isinstance(v, int | bool) for v in sidecar.summary(None).values())
    refusal = sidecar.unavailable()
    assert refusal is None or (isinstance(refusal, PlanError) and refusal.hint)

    state = StateDir(tmp_path / "st" / plan.slug)
    state.create()
    host = FakeHost(state)
    assert isinstance(sidecar.status(host), SidecarStatus)
    assert sidecar.status(host).ready is False  # no status file yet
    state.status_file(sidecar.name).write_text('{"generation": 3, "extra": "ignored"}')
    status = sidecar.status(host)
    assert status.ready and status.generation == 3
    assert sidecar.import_records(state.path) is None  # it never ran: nothing to import


def test_egress_reload_signals_and_waits_for_the_file_on_disk(
    home: Path, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bottle.sidecars.egress as egress_module
    from bottle.runtime.egress import routes_digest

    clock = FakeClock()  # the wait runs out without the wall-clock wait
    monkeypatch.setattr(egress_module, "time", clock)

    plan = full_plan(home, repo)
    egress = next(s for s in registry() if s.name == "egress")
    state = StateDir(tmp_path / plan.slug)
    state.create()
    state.write_files(state.live_config("egress"), egress.files(plan.sidecars["egress"]))
    data = (state.live_config("egress") / "routes.yaml").read_bytes()
    state.status_file("egress").write_text(
        f'{{"generation": 4, "routes_sha256": "{routes_digest(data)}"}}'
    )
    host = FakeHost(state)
    assert egress.reload(host, timeout=0.2).generation == 4  # already live: no signal
    assert host.killed == []
    state.status_file("egress").write_text('{"generation": 4, "routes_sha256": "old"}')
    start = clock.now
    with pytest.raises(ApplyFailed, match="did not confirm"):
        egress.reload(host, timeout=0.2)
    assert host.killed == [("egress", "SIGHUP")]
    assert clock.now >= start + 0.2  # it waited out its bound, reading the status as it went


@pytest.mark.parametrize("name", ["supervise", "git-gate"])
def test_sidecars_without_reload_say_so(name: str, tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s-abcde")
    state.create()
    sidecar = next(s for s in registry() if s.name == name)
    with pytest.raises(ApplyError, match="no live reload") as info:
        sidecar.reload(FakeHost(state))
    assert info.value.hint


def test_agent_gets_what_the_enabled_sidecars_add(home: Path, repo: Path) -> None:
    import json

    plan = full_plan(home, repo)
    env = compose.render(plan)["services"]["agent"]["environment"]
    assert env["NO_PROXY"] == "localhost,127.0.0.1,supervise,git-gate"
    files = compose.agent_files(plan)
    assert set(json.loads(files["mcp.json"])["mcpServers"]) == {"supervise"}
    assert b"insteadOf = git@example.com:me/repo.git" in files["gitconfig"]

    write(home / "bottles" / "bare.md", "---\nsupervise: false\n---\n")
    bare = resolve_plan(
        load_manifest(home=home, cwd=repo),
        PlanOptions(bottle="bare", cwd=repo, suffix="abcde"),
        settings=Settings.from_env({"BOTTLE_HOME": str(home)}),
        environ={},
    )
    assert set(bare.sidecars) == {"egress"}
    assert compose.render(bare)["services"]["agent"]["environment"]["NO_PROXY"] == (
        "localhost,127.0.0.1"
    )
    assert json.loads(compose.agent_files(bare)["mcp.json"]) == {"mcpServers": {}}
    assert compose.agent_files(bare)["gitconfig"] == b""


def test_secret_refs_are_the_union_the_sidecars_report(home: Path, repo: Path) -> None:
    plan = full_plan(home, repo)
    assert plan.secret_refs == ("API_TOKEN", "EXTRA_SECRET", "DEPLOY_KEY")
    assert set(plan.missing_env) == {"API_TOKEN", "EXTRA_SECRET", "DEPLOY_KEY"}


def test_bottle_spec_is_composed_from_the_sections() -> None:
    model = bottle_file_model()
    assert issubclass(model, BottleSpec)
    static = set(BottleSpec.model_fields)
    assert set(model.model_fields) - static == {s.section for s in registry()}


def test_start_refuses_an_unavailable_sidecar_before_building(
    home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle import Bottle

    # git-gate is available now; the refusal mechanism stays for any sidecar that is not.
    gate = next(s for s in registry() if s.name == "git-gate")
    monkeypatch.setattr(
        gate, "unavailable", lambda: PlanError("git-gate is missing", hint="Remove git.remotes")
    )
    write(home / "bottles" / "full.md", FULL)
    b = Bottle(bottle="full", cwd=repo, settings=Settings.from_env({"BOTTLE_HOME": str(home)}))
    with pytest.raises(PlanError, match="git-gate") as info:
        b.start()
    assert info.value.hint and "Remove git.remotes" in info.value.hint
    assert not (home / "state").exists() or not any((home / "state").iterdir())


def test_every_sidecar_is_available_now() -> None:
    assert [s.name for s in registry() if s.unavailable() is not None] == []


#: Modules that must reach the sidecars only through the registry.
SEAM = [
    "compose.py", "plan.py", "bottle.py", "manifest/loader.py", "manifest/models.py",
    "instance.py", "operator.py", "changes/transaction.py",
]  # fmt: skip


@pytest.mark.parametrize("path", SEAM)
def test_seam_modules_never_name_a_sidecar(path: str) -> None:
    source = (SRC / path).read_text()
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            assert not any(
                node.module == f"bottle.sidecars.{m}" for m in SIDECAR_MODULES if m != "base"
            ), (path, node.module)
            if node.module == "bottle.sidecars":
                names = {a.name for a in node.names}
                assert not names & {m for m in SIDECAR_MODULES}, (path, names)
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert not alias.name.startswith("bottle.sidecars."), (path, alias.name)
    # Nor by the names they go by in code: attributes, strings, identifiers.
    words = {"egress", "supervise", "git_gate", "git-gate", "EGRESS", "SUPERVISE", "GIT_GATE"}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            assert node.attr not in words, (path, node.attr)
        if isinstance(node, ast.Name):
            assert node.id not in words, (path, node.id)
        # "egress" is also the name of the network with a route out: only the others here.
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            assert node.value not in words - {"egress"}, (path, node.value)
