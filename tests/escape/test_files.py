"""The record of what the operator ran is out of the agent's reach.

``bottle run`` and ``bottle exec`` append the command and its exit code to ``run.log`` and
``exec.log`` in the state dir's root, which the host alone writes. The agent writes
``transcript/`` (mounted at /run/bottle/transcript): there it could erase or forge that
record, or plant a link or FIFO for the (often root) host to write through.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.integration.conftest import bottle_home  # noqa: F401  (fixture)

pytestmark = pytest.mark.docker

TRANSCRIPT = "/run/bottle/transcript"
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


def test_the_agent_can_neither_see_nor_forge_what_the_operator_ran(
    bottle_home: Path,  # noqa: F811
    owned_workspace: Path,
    host_dir: Path,
) -> None:
    target = host_dir / "target"
    target.write_text("host content\n")
    # Everything a hostile agent would try: look for the records, plant a link, a FIFO and
    # a forged record where they used to be, then end with its own exit code.
    script = "; ".join(
        [
            f'ls -a {TRANSCRIPT}; echo "listed=$?"',
            r"find / \( -path /proc -o -path /sys \) -prune -o \( -name run.log -o -name"
            r" exec.log -o -name metadata.json \) -print 2>/dev/null | sed 's/^/found: /'",
            f"rm -f {TRANSCRIPT}/run.log {TRANSCRIPT}/exec.log",
            f"ln -s {target} {TRANSCRIPT}/run.log",
            f"mkfifo {TRANSCRIPT}/exec.log",
            f"ln -s {host_dir / 'new'} {TRANSCRIPT}/compose.log",
            f"echo '2099-01-01T00:00:00 $ true' > {TRANSCRIPT}/forged.log",
            "exit 7",
        ]
    )
    argv = ["sh", "-c", script]
    started = time.monotonic()
    done = run_cli(
        "run", "it", "--", *argv,
        cwd=owned_workspace, env={"BOTTLE_HOME": str(bottle_home)}, timeout=BOUND_S,
    )  # fmt: skip
    assert time.monotonic() - started < BOUND_S
    # The agent's own exit code; nothing the agent planted is even seen by the host.
    assert done.returncode == 7, done.stderr
    assert "listed=0" in done.stdout, done.stdout
    assert "found:" not in done.stdout, done.stdout
    assert "warning" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert target.read_text() == "host content\n"
    assert list(host_dir.iterdir()) == [target]

    rows = json.loads(run_cli("ls", "--json", cwd=owned_workspace,
                              env={"BOTTLE_HOME": str(bottle_home)}).stdout)  # fmt: skip
    assert len(rows) == 1 and rows[0]["status"] == "finished"
    state = bottle_home / "state" / rows[0]["slug"]
    lines = (state / "run.log").read_text().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].endswith(f" $ {shlex.join(argv)}")
    assert lines[1].endswith(" exit 7")
    assert not (state / "exec.log").exists()  # no `bottle exec` ran: none was forged in
    # What the agent left in its transcript is its own, untouched by the host.
    assert (state / "transcript" / "run.log").is_symlink()
    assert (state / "transcript" / "forged.log").read_text() == "2099-01-01T00:00:00 $ true\n"
