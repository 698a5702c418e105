"""The CLI against a real engine: exec recorded, and a down that left a network behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest import cli, labelled

pytestmark = pytest.mark.docker


def test_exec_is_recorded_and_a_held_network_keeps_the_instance_visible(
    bottle_home: Path, workdir: Path
) -> None:
    started = cli("start", "--detach", "it", cwd=workdir)
    assert started.returncode == 0, started.stderr
    slug = started.stdout.strip()
    squatter = f"bottle-it-squatter-{slug}"
    try:
        done = cli("exec", slug, "--", "sh", "-c", "exit 4", cwd=workdir)
        assert done.returncode == 4, done.stderr
        log = (bottle_home / "state" / slug / "transcript" / "exec.log").read_text()
        assert "[agent] $ sh -c 'exit 4'" in log and "[agent] exit 4" in log
        quiet = cli("ls", "-q", cwd=workdir)
        assert quiet.stdout.split() == [slug]

        image = subprocess.run(
            ["docker", "inspect", "-f", "{{.Config.Image}}", labelled("container", slug)[0]],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        subprocess.run(
            ["docker", "run", "-d", "--name", squatter, "--network", f"bottle-{slug}_egress",
             "--entrypoint", "sleep", image, "300"],
            capture_output=True, check=True,
        )  # fmt: skip
        stopped = cli("stop", slug, cwd=workdir)
        assert stopped.returncode == 1 and "down failed" in stopped.stderr
        table = cli("ls", cwd=workdir, env_extra={"COLUMNS": "80"}).stdout
        assert "preserved (down failed)" in table and slug in table
        assert cli("cleanup", "--yes", cwd=workdir).returncode == 1
    finally:
        subprocess.run(["docker", "rm", "-f", squatter], capture_output=True, check=False)
    done = cli("cleanup", "--yes", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert labelled("network", slug) == []
    nothing = cli("stop", "--all", cwd=workdir)
    assert (nothing.returncode, nothing.stderr) == (0, "")
