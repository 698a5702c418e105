"""The CLI against a real engine: exec recorded, and a down that left a network behind."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import write
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
        log = (bottle_home / "state" / slug / "exec.log").read_text()
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


TINY_BOTTLE = """---
agent: {provider: shell, dockerfile: tiny/Dockerfile}
supervise: false
---
"""


def test_a_real_build_shows_each_step_with_its_time(bottle_home: Path, workdir: Path) -> None:
    """A tiny image of its own (a nonce in it, so it really builds) through ``bottle run``."""
    import re
    import uuid

    nonce = uuid.uuid4().hex
    write(bottle_home / "bottles" / "tiny.md", TINY_BOTTLE)
    write(
        bottle_home / "bottles" / "tiny" / "Dockerfile",
        f"FROM ${{BOTTLE_AGENT_IMAGE}}\nRUN echo built-{nonce} && sleep 2\n",
    )
    done = cli("run", "it", "--bottle", "tiny", "--", "true", cwd=workdir)
    built = re.findall(r"built (bottle-agent-\S+) in ", done.stderr)
    try:
        assert done.returncode == 0, done.stderr
        lines = done.stderr.splitlines()
        stamp = r"\d\d:\d\d:\d\d "
        # Not a terminal: plain lines, each with the time of day; each step's time.
        steps = [
            i for i, line in enumerate(lines) if re.fullmatch(stamp + r"Step \d+/\d+ : .+", line)
        ]
        assert any(lines[i].endswith("FROM ${BOTTLE_AGENT_IMAGE}") for i in steps), lines
        run = next(i for i in steps if lines[i].endswith(f"RUN echo built-{nonce} && sleep 2"))
        ended = next(line for line in lines[run + 1 :] if " done in " in line)
        assert re.fullmatch(stamp + r"  done in \d+\.\ds", ended), lines
        assert float(ended.split()[-1].rstrip("s")) >= 2.0, lines
        # Every step ends with its time, before the next begins.
        assert len(re.findall(stamp + r"  done in ", done.stderr)) == len(steps), lines
        assert built, done.stderr
        assert "\x1b" not in done.stderr
    finally:
        for ref in built:
            subprocess.run(["docker", "image", "rm", ref], capture_output=True, check=False)
