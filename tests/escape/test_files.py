"""Host-side writes into agent-writable directories follow no link and wait on no FIFO.

``bottle run`` appends the command and its exit code to ``transcript/run.log``, a file in
a directory the agent writes, as the (often root) host user.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.conftest import bottle_home  # noqa: F401  (fixture)

pytestmark = pytest.mark.docker

RUN_LOG = "/run/bottle/transcript/run.log"
#: A ``bottle run`` of the shell agent takes well under this; a hang would take forever.
BOUND_S = 240


@pytest.fixture
def owned_workspace() -> Iterator[Path]:
    """A workspace owned by a non-root uid, as the agent must not run as root."""
    path = Path(tempfile.mkdtemp(prefix="bottle-escape-files-"))
    os.chown(path, 1000, 1000)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def host_dir() -> Iterator[Path]:
    """Host files the agent names; root's, outside anything mounted into the bottle."""
    path = Path(tempfile.mkdtemp(prefix="bottle-escape-host-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("existing", [True, False], ids=["existing-file", "new-file"])
def test_run_log_symlink_is_not_followed(
    bottle_home: Path,  # noqa: F811
    owned_workspace: Path,
    host_dir: Path,
    existing: bool,
) -> None:
    target = host_dir / "target"
    if existing:
        target.write_text("host content\n")
    plant = f"rm -f {RUN_LOG} && ln -s {target} {RUN_LOG}"
    started = time.monotonic()
    done = run_cli(
        "run", "it", "--", "sh", "-c", plant,
        cwd=owned_workspace, env={"BOTTLE_HOME": str(bottle_home)}, timeout=BOUND_S,
    )  # fmt: skip
    assert time.monotonic() - started < BOUND_S
    if existing:
        assert target.read_text() == "host content\n"
    else:
        assert not target.exists() and not target.is_symlink()
    # Never followed, and said loudly (a warning naming the file, never a traceback); the
    # run's exit code stays the agent's: a spoiled log must not decide a run's outcome.
    assert done.returncode == 0, done.stderr
    assert "run.log" in done.stderr and "Traceback" not in done.stderr


def test_run_log_fifo_does_not_hang_bottle_run(
    bottle_home: Path,  # noqa: F811
    owned_workspace: Path,
) -> None:
    plant = f"rm -f {RUN_LOG} && mkfifo {RUN_LOG}"
    done = run_cli(
        "run", "it", "--", "sh", "-c", plant,
        cwd=owned_workspace, env={"BOTTLE_HOME": str(bottle_home)}, timeout=BOUND_S,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # the agent's own code; the log is warned about
    assert "run.log" in done.stderr and "Traceback" not in done.stderr
    # The instance was still taken down: nothing left running.
    listed = run_cli("ls", "--json", cwd=owned_workspace, env={"BOTTLE_HOME": str(bottle_home)})
    assert '"running": true' not in listed.stdout
