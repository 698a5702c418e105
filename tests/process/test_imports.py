"""What the CLI imports, seen from a fresh interpreter: the quick commands, the command line
and the queue load no heavy module (each costs its import time on every run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import fake_docker_in
from tests.unit.test_cli_queue import _ask, _instance

#: Modules that take tens to hundreds of milliseconds to import, and that ``--help`` and
#: ``ls`` do not need: the engine client, the YAML writer, the sidecars' and TUI's stacks.
HEAVY = ("python_on_whales", "mitmproxy", "textual", "mcp", "dockerfile_parse")
#: ``ls`` reads state directories: no YAML, no pattern engine (``bottle.manifest``'s stacks),
#: and runs without the command line (``bottle_cli.quick``).
HEAVY_FOR_LS = (*HEAVY, "ruamel", "re2", "typer", "click")
#: ``--help`` needs the command line, but no model library.
HEAVY_FOR_HELP = (*HEAVY, "ruamel", "re2", "pydantic")
#: ``exec`` of a running instance loads neither (``bottle_cli.quick``), nor a console library.
HEAVY_FOR_EXEC = (*HEAVY_FOR_LS, "pydantic", "rich")

PROBE = """
import json, sys
from bottle_cli.quick import main
code = main(sys.argv[2:])
heavy = json.loads(sys.argv[1])
print(json.dumps({"code": code, "heavy": sorted({m.split('.')[0] for m in sys.modules
                                                 if m.split('.')[0] in heavy})}))
"""


def _imported(args: list[str], heavy: tuple[str, ...], tmp_path: Path) -> dict[str, object]:
    # A docker that lists no container: ls is run for its imports, not for an engine.
    bin_dir = fake_docker_in(tmp_path / "bin", "#!/bin/sh\nexit 0\n").parent
    env = {
        **os.environ,
        "BOTTLE_HOME": str(tmp_path / "home"),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(heavy), *args],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_help_imports_no_heavy_module(tmp_path: Path) -> None:
    found = _imported(["--help"], HEAVY_FOR_HELP, tmp_path)
    assert found == {"code": 0, "heavy": []}


def test_ls_imports_no_heavy_module(tmp_path: Path) -> None:
    state = tmp_path / "home" / "state" / "shell-abcde"
    state.mkdir(parents=True)
    found = _imported(["ls"], HEAVY_FOR_LS, tmp_path)
    assert found == {"code": 0, "heavy": []}


def test_exec_imports_no_command_line_and_no_model(tmp_path: Path) -> None:
    from bottle.state import InstanceStatus
    from tests.unit.test_lifecycle import make_state

    state = make_state(tmp_path / "home", "shell-abcde", InstanceStatus.RUNNING, pid=os.getpid())
    found = _imported(["exec", "shell-abcde", "--", "true"], HEAVY_FOR_EXEC, tmp_path)
    assert found == {"code": 0, "heavy": []}
    assert state.exec_log.read_text().splitlines()[1].endswith("exit 0")


def test_exec_of_a_stopped_instance_takes_the_full_command(tmp_path: Path) -> None:
    """The quick path only ever runs: what it refuses, the full command explains."""
    from bottle.state import InstanceStatus
    from tests.unit.test_lifecycle import make_state

    make_state(tmp_path / "home", "shell-abcde", InstanceStatus.STOPPED)
    found = _imported(["exec", "shell-abcde", "--", "true"], ("typer",), tmp_path)
    assert found == {"code": 1, "heavy": ["typer"]}


def test_the_probe_sees_a_heavy_import(tmp_path: Path) -> None:
    """The check above would pass vacuously if the probe could not see imports at all."""
    found = _imported(["render", "shell"], HEAVY, tmp_path)
    assert "dockerfile_parse" in found["heavy"]  # type: ignore[operator]


def test_state_spells_the_manifest_provider_kinds() -> None:
    """``bottle.state`` spells the providers out so as not to import the manifest package."""
    from typing import get_args

    from bottle.manifest.models import ProviderKind as manifest_kinds
    from bottle.state import ProviderKind as state_kinds

    assert get_args(state_kinds) == get_args(manifest_kinds)


def test_help_does_not_import_the_library() -> None:
    code = (
        "import sys; from bottle_cli import app; "
        "heavy = [m for m in ('python_on_whales', 'pydantic', 'ruamel.yaml') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_queue_imports_no_engine_proxy_or_models(home: Path) -> None:
    """Import time is most of the queue's time: keep the heavy modules out of its path."""
    queue = _instance(home, "shell-imprt")
    _ask(queue, "one.example.com")
    script = (
        "import sys\n"
        "from bottle_cli.app import main\n"
        "assert main(['queue', '--json']) == 0\n"
        "heavy = ('python_on_whales', 'mitmproxy', 'textual', 'ruamel', 'dockerfile_parse',\n"
        "         'bottle.proposals.models', 'bottle.engine', 'bottle.instance')\n"
        "print([m for m in sys.modules if m.startswith(heavy)], file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={"BOTTLE_HOME": str(home), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "one.example.com" in done.stdout
    assert done.stderr.strip() == "[]"
