"""One bad file breaks only what uses it; listings show it broken with all its errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from bottle.errors import ManifestError
from bottle.manifest import load_manifest
from tests.conftest import CliResult, run_cli_here, write
from tests.fakes import FakeEngine

BAD = (
    "---\nfrobnicate: 1\n"
    "egress: {routes: [{host: 'bad host'}, {host: x.com, methods: [YEET]}]}\n"
    "supervise: {wait: 0}\n---\n"
)
FIELDS = ["egress.routes.0.host", "egress.routes.1.methods.0", "supervise.wait", "frobnicate"]


@pytest.fixture
def bottle(monkeypatch: pytest.MonkeyPatch, home: Path, repo: Path) -> Callable[..., CliResult]:
    from bottle import bottle as bottle_module

    # A render asks the engine which images exist: the fake one, not this machine's daemon.
    monkeypatch.setattr(bottle_module, "DockerEngine", FakeEngine)

    def run(*args: str) -> CliResult:
        return run_cli_here(
            *args, cwd=repo, env={"BOTTLE_HOME": str(home)}, monkeypatch=monkeypatch
        )

    return run


@pytest.fixture
def broken(home: Path) -> Path:
    write(home / "bottles" / "bad.md", BAD)
    write(home / "bottles" / "child.md", "---\nextends: bad\n---\n")
    write(home / "agents" / "lost.md", "---\nbottle: nope\n---\n")
    write(home / "agents" / "usesbad.md", "---\nbottle: bad\n---\n")
    write(home / "agents" / "fine.md", "---\ndescription: still works\n---\n")
    return home


def test_every_error_of_a_file_at_once_with_its_field(home: Path, repo: Path) -> None:
    write(home / "bottles" / "bad.md", BAD)
    with pytest.raises(ManifestError) as err:
        load_manifest(home=home, cwd=repo)
    assert [f for f, _ in err.value.problems] == FIELDS
    assert err.value.field == FIELDS[0]
    assert "4 problems" in err.value.message
    for field in FIELDS:
        assert f"\n  {field}: " in err.value.message
    assert "allowed keys here: agent," in err.value.message  # the unknown key's own fix


def test_the_list_of_errors_is_bounded(home: Path, repo: Path) -> None:
    keys = "".join(f"typo{i}: 1\n" for i in range(50))
    write(home / "bottles" / "bad.md", f"---\n{keys}---\n")
    with pytest.raises(ManifestError) as err:
        load_manifest(home=home, cwd=repo)
    assert len(err.value.problems) == 50
    assert err.value.message.count("\n  typo") == ManifestError.MAX_PROBLEMS
    assert "… and 30 more" in err.value.message


def test_a_lenient_load_keeps_each_broken_file_apart(broken: Path, repo: Path) -> None:
    manifest = load_manifest(home=broken, cwd=repo, strict=False)
    assert set(manifest.broken_bottles) == {"bad"} and set(manifest.broken_agents) == {"lost"}
    assert manifest.agent("fine").spec.description == "still works"
    assert manifest.resolve_bottle("default") is not None
    with pytest.raises(ManifestError, match="4 problems"):
        manifest.resolve_bottle("child")  # its parent is the broken one
    with pytest.raises(ManifestError, match="names bottle 'nope'"):
        manifest.agent("lost")
    with pytest.raises(ManifestError):
        manifest.check()


def test_a_broken_file_of_a_builtins_name_never_falls_back(home: Path, repo: Path) -> None:
    write(home / "bottles" / "default.md", "---\nsupervise: maybe\n---\n")
    write(home / "agents" / "shell.md", "---\nnope: 1\n---\n")
    manifest = load_manifest(home=home, cwd=repo, strict=False)
    with pytest.raises(ManifestError, match="supervise"):
        manifest.resolve_bottle("default")
    with pytest.raises(ManifestError, match="unknown key"):
        manifest.agent("shell")


def test_listings_show_broken_files_with_their_errors(
    bottle: Callable[..., CliResult], broken: Path
) -> None:
    agents = bottle("agents")
    assert agents.returncode == 0, agents.stderr
    assert "fine" in agents.stdout and "BROKEN" in agents.stdout
    assert "error: lost is broken: " in agents.stderr and "names bottle 'nope'" in agents.stderr
    bottles = bottle("bottles")
    assert bottles.returncode == 0, bottles.stderr
    assert "error: bad is broken: " in bottles.stderr
    assert all(field in bottles.stderr for field in FIELDS)
    assert "error: child is broken: " in bottles.stderr  # it extends the broken one
    rows = {r["name"]: r for r in json.loads(bottle("bottles", "--json").stdout)}
    assert rows["default"]["error"] is None and "4 problems" in rows["bad"]["error"]
    rows = {r["name"]: r for r in json.loads(bottle("agents", "--json").stdout)}
    assert rows["lost"]["error"] and rows["lost"]["origin"] == "home"


def test_a_broken_file_breaks_only_what_uses_it(
    bottle: Callable[..., CliResult], broken: Path
) -> None:
    fine = bottle("render", "fine")
    assert fine.returncode == 0, fine.stderr
    assert "warning: bottle 'bad' does not load" in fine.stderr
    for args in (["render", "usesbad"], ["render", "--bottle", "child"]):
        done = bottle(*args)
        assert (
            done.returncode == 2 and "4 problems" in done.stderr and "Traceback" not in done.stderr
        )
    lost = bottle("render", "lost")
    assert lost.returncode == 2 and f"hint: Create {broken / 'bottles' / 'nope'}.md" in lost.stderr


def test_unknown_agent_names_no_built_in_and_the_real_home(
    bottle: Callable[..., CliResult], home: Path
) -> None:
    done = bottle("render", "ghost")
    assert done.returncode == 2
    assert done.stderr.startswith("error: unknown agent 'ghost'")
    assert f"Define it in {home / 'agents' / 'ghost'}.md" in done.stderr
    assert "~/.bottle" not in done.stderr
