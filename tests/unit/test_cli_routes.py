"""``bottle egress routes`` shows the routes egress runs, even after a bad hand edit.

The status file is written by egress's own reload code (``runtime/egress/reload.py``) from
the live file, as in the container; the CLI reads it in this process.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bottle.state import InstanceStatus, StateDir
from tests.conftest import CliResult, run_cli_here
from tests.unit.test_lifecycle import make_state

GOOD = "routes:\n  - host: pypi.org\n    methods: [GET]\n"
SLUG = "shell-rts11"


#: One egress per state dir, as one container keeps its table between reloads.
_EGRESS: dict[Path, Any] = {}


@pytest.fixture
def state(home: Path) -> Iterator[StateDir]:
    from bottle.runtime.egress.reload import Reload

    state = make_state(home, SLUG, InstanceStatus.RUNNING)
    state.live_config("egress").mkdir(parents=True, exist_ok=True)
    _routes(state).write_text(GOOD)
    _EGRESS[state.path] = Reload(_routes(state), state.status_file("egress"), {})
    _load(state)
    yield state
    del _EGRESS[state.path]


def _routes(state: StateDir) -> Path:
    return state.live_config("egress") / "routes.yaml"


def _load(state: StateDir) -> bool:
    """What egress does at start and on SIGHUP: read the file, publish the status."""
    ok: bool = _EGRESS[state.path].reload()
    return ok


@pytest.fixture
def bottle(monkeypatch: pytest.MonkeyPatch, home: Path, repo: Path) -> Callable[..., CliResult]:
    def run(*args: str) -> CliResult:
        return run_cli_here(
            *args, cwd=repo, env={"BOTTLE_HOME": str(home)}, monkeypatch=monkeypatch
        )

    return run


def test_the_routes_in_force_show_plainly_when_the_file_is_them(
    bottle: Callable[..., CliResult], state: StateDir
) -> None:
    done = bottle("egress", "routes", SLUG)
    assert done.returncode == 0, done.stderr
    assert "pypi.org" in done.stdout and done.stderr == ""
    data = json.loads(bottle("egress", "routes", SLUG, "--json").stdout)
    assert data["source"] == "file" and data["generation"] == 1
    assert data["file_error"] is None and data["file_pending"] is False
    assert [r["host"] for r in data["routes"]] == ["pypi.org"]


def test_after_a_bad_hand_edit_the_routes_egress_runs_are_shown_with_a_warning(
    bottle: Callable[..., CliResult], state: StateDir
) -> None:
    _routes(state).write_text("routes: [{host: 'bad host'}]\n")
    done = bottle("egress", "routes", SLUG)
    assert done.returncode == 0, done.stderr
    assert "pypi.org" in done.stdout and "bad host" not in done.stdout
    assert f"warning: the live routes file {_routes(state)} does not load" in done.stderr
    assert "routes.0.host" in done.stderr  # the parser's own error, with its field
    assert "egress runs generation 1, shown below" in done.stderr
    assert f"hint: Fix the file, then 'bottle egress reload {SLUG}'" in done.stderr
    data = json.loads(bottle("routes", "show", SLUG, "--json").stdout)
    assert data["source"] == "egress" and [r["host"] for r in data["routes"]] == ["pypi.org"]
    assert "routes.0.host" in data["file_error"] and data["file"] == str(_routes(state))
    # egress refused the same file on a reload: still the same routes in force.
    assert _load(state) is False
    again = json.loads(bottle("egress", "routes", SLUG, "--json").stdout)
    assert again["routes"] == data["routes"] and again["generation"] == 1


def test_a_valid_edit_not_reloaded_is_named_and_not_shown_as_in_force(
    bottle: Callable[..., CliResult], state: StateDir
) -> None:
    _routes(state).write_text("routes:\n  - host: example.org\n")
    done = bottle("egress", "routes", SLUG)
    assert done.returncode == 0, done.stderr
    assert "pypi.org" in done.stdout and "example.org" not in done.stdout
    assert "was changed and not reloaded" in done.stderr
    assert f"hint: Make it live with 'bottle egress reload {SLUG}'." in done.stderr
    assert json.loads(bottle("egress", "routes", SLUG, "--json").stdout)["file_pending"] is True
    assert _load(state) is True  # reloaded: the file is what runs
    data = json.loads(bottle("egress", "routes", SLUG, "--json").stdout)
    assert data["source"] == "file" and data["generation"] == 2
    assert [r["host"] for r in data["routes"]] == ["example.org"]


def test_a_copy_that_does_not_match_its_digest_is_not_believed(
    bottle: Callable[..., CliResult], state: StateDir
) -> None:
    status = json.loads(state.status_file("egress").read_text())
    status["routes_yaml"] = "routes:\n  - host: evil.example\n"
    state.status_file("egress").write_text(json.dumps(status))
    _routes(state).write_text("routes: [\n")
    done = bottle("egress", "routes", SLUG)
    assert done.returncode == 2 and "evil.example" not in done.stdout
    assert f"error: invalid routes in {_routes(state)}" in done.stderr
    assert "hint:" in done.stderr and "Traceback" not in done.stderr


def test_without_egress_status_a_bad_file_is_an_error_with_the_fix(
    bottle: Callable[..., CliResult], state: StateDir
) -> None:
    state.status_file("egress").unlink()
    state.status_file("egress").symlink_to(state.path / "metadata.json")  # never followed
    _routes(state).write_text("routes: [{host: 'bad host'}]\n")
    done = bottle("egress", "routes", SLUG)
    assert done.returncode == 2 and "routes.0.host" in done.stderr
    assert "bottle egress reload" in done.stderr


def test_no_routes_ever_loaded_means_none_in_force(
    bottle: Callable[..., CliResult], state: StateDir
) -> None:
    from bottle.runtime.egress.reload import Reload

    _routes(state).write_text("routes: [\n")
    state.status_file("egress").unlink()
    _EGRESS[state.path] = Reload(_routes(state), state.status_file("egress"), {})
    assert _load(state) is False  # egress's first load failed: it denies everything
    data = json.loads(bottle("egress", "routes", SLUG, "--json").stdout)
    assert data["routes"] == [] and data["source"] == "egress" and data["file_error"]


def test_a_hostile_error_is_shown_inert(bottle: Callable[..., CliResult], state: StateDir) -> None:
    _routes(state).write_text('routes:\n  - host: "a\\e]0;owned\\a.example"\n')
    done = bottle("egress", "routes", SLUG)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr
    assert "does not load" in done.stderr
