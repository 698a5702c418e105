"""The console script's module as a new process, as a user runs it: ``python -m
bottle_cli`` exits with what ``main`` returns, and ``bottle exec``'s quick path (which runs
the docker CLI itself) reaches a recording ``docker`` through it.

Everything else of the CLI runs ``main`` in pytest's process (tests/unit/test_cli.py,
tests/unit/test_quick_exec.py, whose fixtures these tests share).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bottle.state import InstanceStatus, StateDir
from tests.conftest import run_cli, user_owned
from tests.unit.test_quick_exec import Run, _log, calls, fake_docker, running

__all__ = ["calls", "fake_docker", "running"]  # fixtures of the quick path's unit tests


def test_the_real_entry_point_exits_with_mains_code(home: Path, repo: Path) -> None:
    # One new interpreter: ``python -m bottle_cli`` exits with what ``main`` returns.
    refused = run_cli("render", "ghost", cwd=repo, env={"BOTTLE_HOME": str(home)}, timeout=60)
    assert refused.returncode == 2
    assert "unknown agent" in refused.stderr and "Traceback" not in refused.stderr


@pytest.fixture
def bottle_process(home: Path, calls: Path, fake_docker: Path) -> Run:
    """``python -m bottle_cli ARGS`` (what the console script runs), the fake docker first."""

    def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "bottle_cli", *args],
            env={
                **os.environ,
                "BOTTLE_HOME": str(home),
                "DOCKER_ARGV_LOG": str(calls),
                "PATH": f"{fake_docker}{os.pathsep}{os.environ['PATH']}",
                **env,
            },
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )

    return run


def test_exec_runs_docker_exec_and_records_the_command(
    bottle_process: Run, running: StateDir, calls: Path
) -> None:
    done = bottle_process(
        "exec", "shell-run", "--", "sh", "-c", "exit 3; echo 'a b'", DOCKER_EXIT="3"
    )
    assert done.returncode == 3, done.stderr
    assert calls.read_text().splitlines() == [
        "exec",
        "--interactive",
        "bottle-shell-run111-agent-1",
        "sh",
        "-c",
        "exit 3; echo 'a b'",
    ]
    log = _log(running)
    assert len(log) == 2
    assert log[0].endswith("[agent] $ sh -c 'exit 3; echo '\"'\"'a b'\"'\"''")
    assert log[1].endswith("[agent] exit 3")


def test_an_unexpected_os_error_is_a_message_not_a_traceback(
    running: StateDir, tmp_path: Path
) -> None:
    # A ``docker`` on PATH that cannot be run (a directory): PermissionError, no bottle error.
    bin_dir = tmp_path / "odd"
    (bin_dir / "docker").mkdir(parents=True)
    done = subprocess.run(
        [sys.executable, "-m", "bottle_cli", "exec", "shell-run111", "--", "true"],
        env={**os.environ, "PATH": str(bin_dir), "BOTTLE_HOME": str(running.path.parent.parent)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 1
    assert "internal error (PermissionError" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_plain_run_starts_without_loading_typer(home: Path, repo: Path) -> None:
    # typer and its parse were a tenth of a run's wall time: a plain run must not load it.
    script = (
        "import sys\n"
        "import bottle.session\n"
        "bottle.session.headless_run = lambda target, argv, **_: len(argv)\n"
        "from bottle_cli.quick import main\n"
        "code = main(['run', 'shell', '--', 'echo', 'hi'])\n"
        "print(code, 'typer' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=user_owned(repo),
        env={**os.environ, "BOTTLE_HOME": str(home)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.stdout.split() == ["2", "False"], done.stderr


def test_a_stop_process_ends_with_its_line_said_and_its_log_kept(
    bottle_process: Run, running: StateDir
) -> None:
    # The quick stop ends its own process without Python's teardown: what it said and
    # wrote must be whole by then.
    done = bottle_process("stop", "shell-run111")
    assert done.returncode == 0, done.stderr
    said = [line for line in done.stderr.splitlines() if not line.startswith("warning:")]
    assert said == [f"· stopped shell-run111; its state is in {running.path}"]
    assert running.read_metadata().status == InstanceStatus.STOPPED
    assert running.compose_log.exists()
