"""Shared fixtures. Docker-backed tests fail, never skip, when CI is set."""

from __future__ import annotations

import contextlib
import gc
import io
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"

# A shell with PYTHONDONTWRITEBYTECODE set (this sandbox's is) has every run compile the
# package and the test modules afresh: half of collection's CPU, 4 s a run. Their bytecode
# goes where Python puts it by default (__pycache__/, git-ignored; the sidecar's context
# skips it); the installed packages already have theirs (uv's compile-bytecode).
sys.dont_write_bytecode = False

# Collection imports most of what the tests use and keeps all of it; the collector would
# walk that growing heap over and over meanwhile. It is off until collection ends, then
# on again for the tests (pytest_collection_finish).
gc.disable()


@pytest.hookimpl(tryfirst=True)  # the profiles exist before the plugin loads one
def pytest_configure(config: pytest.Config) -> None:
    # Imported here, not at the top: the hypothesis plugin has pytest rewrite the asserts of
    # every hypothesis module, and only once bytecode may be written (above) is that rewrite
    # cached; imported before, it was redone each run (76 modules, 0.6 s).
    from hypothesis import settings as hypothesis_settings

    # Random inputs: a quick pass on every run, a deep one on request
    # (`pytest --hypothesis-profile=thorough`).
    hypothesis_settings.register_profile("fast", max_examples=30)
    hypothesis_settings.register_profile("thorough", max_examples=1000)
    if config.getoption("hypothesis_profile", None) is None:
        hypothesis_settings.load_profile("fast")


def pytest_collection_finish(session: pytest.Session) -> None:
    # What collection built (the modules, their imports, the tests) lives until the end:
    # out of the collector's reach, each full collection no longer walks it again (in
    # tests/unit five of them and pytest's last one had cost 2 s).
    gc.freeze()
    gc.enable()


def wait_for(check: Callable[[], Any], timeout: float, what: str, poll: float = 0.05) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def fake_docker_in(bin_dir: Path, script: str) -> Path:
    """``bin_dir/docker``, an executable shell ``script``: the docker CLI the code runs."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(script)
    docker.chmod(0o755)
    return docker


def fake_docker_on_path(bin_dir: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """:func:`fake_docker_in`, first on ``PATH`` for this test."""
    docker = fake_docker_in(bin_dir, script)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return docker


def _voluntary_switches(pid: int) -> int:
    """How often ``pid``'s main thread gave up the CPU of its own accord so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def assert_idle(pid: int, *, window: float = 3.0, limit: int = 10, tries: int = 4) -> None:
    """``pid`` woke fewer than ``limit`` times in one ``window`` of up to ``tries``.

    A process that polls (a timer ticking every 0.1 or 1 s) wakes in every window, so it
    fails all of them; the late work of a busy machine (a log flush, a closing connection)
    spoils one window, never each. Fixed sleeps would race that work.
    """
    seen = []
    for _ in range(tries):
        before = _voluntary_switches(pid)
        time.sleep(window)
        seen.append(_voluntary_switches(pid) - before)
        if seen[-1] < limit:
            return
    raise AssertionError(f"{pid} woke {seen} times in windows of {window} s (limit {limit})")


class FakeClock:
    """``time`` for code that waits until a deadline: ``sleep`` moves ``monotonic`` on at
    once, so a wait that runs out does so without the wall-clock wait. ``time`` stays the
    real clock: it is compared with files' times."""

    time = staticmethod(time.time)

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept = 0.0

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.slept += seconds


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``bottle ARGS`` as a user runs it: a new process, this environment plus ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "bottle_cli", *args],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )


@dataclass(frozen=True)
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def run_cli_here(
    *args: str, cwd: Path, env: dict[str, str] | None = None, monkeypatch: pytest.MonkeyPatch
) -> CliResult:
    """``bottle ARGS`` in this process, through ``main``'s error boundary (fast: no new
    interpreter). ``run_cli`` stays the check of the real entry point."""
    from bottle_cli.app import main

    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(cwd)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return CliResult(code, out.getvalue(), err.getvalue())


def user_owned(path: Path) -> Path:
    """``path`` owned by a non-root user: bottle runs the agent as the workspace's owner and
    refuses a root-owned workspace, while the tests often run as root."""
    if os.getuid() == 0:
        os.chown(path, 1000, 1000)
    return path


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty BOTTLE_HOME, set in the environment for the test."""
    path = tmp_path / "home"
    path.mkdir()
    monkeypatch.setenv("BOTTLE_HOME", str(path))
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A working directory with no .bottle/ of its own."""
    path = tmp_path / "repo"
    path.mkdir()
    return path


@pytest.fixture
def examples_home(home: Path) -> Path:
    """BOTTLE_HOME holding every shipped example."""
    shutil.copytree(EXAMPLES / "bottles", home / "bottles")
    shutil.copytree(EXAMPLES / "agents", home / "agents")
    return home


def compose_binary_available() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return probe.returncode == 0


def docker_engine_available() -> bool:
    if not compose_binary_available():
        return False
    probe = subprocess.run(["docker", "info"], capture_output=True, check=False)
    return probe.returncode == 0


def require(available: bool, what: str) -> None:
    """Skip locally when ``what`` is missing; fail in CI, where it must be there."""
    if available:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} is not available")


@pytest.fixture
def compose_cli() -> None:
    require(compose_binary_available(), "docker compose v2")


@pytest.fixture(scope="session")
def docker_engine() -> None:
    require(docker_engine_available(), "a running Docker engine with compose v2")
