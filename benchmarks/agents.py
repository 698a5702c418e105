"""Claude Code: time to its first API request, in a bottle vs a plain ``docker run``.

    uv run python -m benchmarks.agents [--rounds 3]

Both sides use the same warm agent image and the fake API (tests/fakeapi) under
``api.anthropic.com``. Ours: ``bottle run reviewer --prompt hi`` (plan, state dir, compose
up with egress and supervise, the CLI, egress) until the fake records the first
``/v1/messages``. Plain: ``docker run`` of the image on the fake's network, the CLI
reaching it directly. Also reports the agent images' sizes.

A1 floor, in the same rounds: ``docker compose up --detach`` of the very compose file the
run wrote (its three containers and two networks), nothing waited for, then ``down``. Only
its ``up`` is timed: what any design that makes one compose project with its own networks
per bottle pays before the agent's CLI even starts, against the same plain ``docker run``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.integration.fakeapi import FakeAPI
from tests.integration.test_claude import EXAMPLES, _bottle_for_the_fake

from benchmarks._table import Figure, markdown

SCRIPT = {"anthropic": {"default": "hi", "conversations": []}}


def _first_message_after(fake: FakeAPI, started: float) -> float:
    deadline = time.time() + 300
    while time.time() < deadline:
        for request in fake.messages():
            if request["time"] >= started:
                return float(request["time"]) - started
        time.sleep(0.05)
    raise SystemExit("the fake saw no /v1/messages request within 300 s")


FIGURES = ("A1",)


def _compose_up_alone(home: Path, env: dict[str, str]) -> float:
    """Seconds of a bare ``compose up --detach`` of the newest instance's file (then down)."""
    newest = max((home / "state").iterdir(), key=lambda p: p.stat().st_mtime)
    compose = ["docker", "compose", "-f", str(newest / "docker-compose.yml")]
    compose += ["-p", f"bench-floor-{newest.name}", "--project-directory", str(newest)]
    started = time.perf_counter()
    subprocess.run([*compose, "up", "--detach"], env=env, check=True, capture_output=True)
    took = time.perf_counter() - started
    subprocess.run([*compose, "down", "-v", "-t", "5"], env=env, check=True, capture_output=True)
    return took


def figures(rounds: int) -> list[Figure]:
    from bottle.engine.images import ensure_image
    from bottle.images import agent_image, sidecar_image
    from bottle.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="bottle-bench-agents-"))
    shutil.copytree(EXAMPLES / "bottles", home / "bottles")
    shutil.copytree(EXAMPLES / "agents", home / "agents")
    shipped = (EXAMPLES / "bottles" / "claude.md").read_text()
    (home / "bottles" / "claude.md").write_text(_bottle_for_the_fake(shipped))
    work = home / "work"
    work.mkdir()
    if os.getuid() == 0:
        os.chown(work, 1000, 1000)
    settings = Settings.from_env({**os.environ, "BOTTLE_HOME": str(home)})
    sidecar = ensure_image(sidecar_image(settings), settings=settings, progress=lambda _l: None)
    ours: list[float] = []
    plain: list[float] = []
    floor: list[float] = []
    bare_run: list[float] = []  # ``docker run --rm IMAGE true``: the container, no CLI
    with FakeAPI.running(home, home / "fake", image=sidecar, script=SCRIPT) as fake:
        env = {
            **os.environ,
            "BOTTLE_HOME": str(home),
            "ANTHROPIC_API_KEY": "sk-bench",
            "BOTTLE_EXTRA_CA_CERTS": str(fake.ca_file),
        }
        agent = agent_image(Settings.from_env(env), "claude")
        image = ensure_image(agent, settings=Settings.from_env(env), progress=print)
        bottle = [sys.executable, "-m", "bottle_cli", "run", "reviewer", "--prompt", "hi"]
        subprocess.run(bottle, env=env, cwd=work, check=True, capture_output=True)  # warm
        net = f"{fake.container}-net"
        for _ in range(rounds):
            started = time.time()
            run = subprocess.Popen(
                bottle, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            ours.append(_first_message_after(fake, started))
            run.wait()
            started = time.time()
            subprocess.run(
                [
                    *("docker", "run", "--rm", "--network", net, "-u", "1000:1000"),
                    *("-v", f"{fake.ca_file}:/ca.pem:ro", "-e", "NODE_EXTRA_CA_CERTS=/ca.pem"),
                    *("-e", "ANTHROPIC_API_KEY=sk-bench", "-e", "IS_SANDBOX=1", image),
                    *("claude", "-p", "hi"),
                ],
                check=True,
                capture_output=True,
            )
            plain.append(_first_message_after(fake, started))
            floor.append(_compose_up_alone(home, env))
            started = time.perf_counter()
            subprocess.run(
                ["docker", "run", "--rm", image, "true"], check=True, capture_output=True
            )
            bare_run.append(time.perf_counter() - started)
    # The plain side reaches the fake by its own network's alias.
    mine, theirs = statistics.median(ours), statistics.median(plain)
    ratio = mine / theirs
    size = subprocess.run(
        ["docker", "image", "inspect", "-f", "{{.Size}}", image],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    sizes = [f"{image} {int(size or 0) / 1e6:.0f} MB"]
    bare = statistics.median(floor)
    # The CLI's own start to its first request: the plain run less its container's cost.
    cli = max(theirs - statistics.median(bare_run), 0.0)
    return [
        Figure(
            id="A1",
            name="bottle run --prompt to the first API request vs plain docker run",
            goal="<= 1.5x",
            measured=f"{ratio:.2f}x",
            passed=ratio <= 1.5,
            ratio=ratio,
            detail=f"{rounds} rounds; medians {mine:.2f} s vs {theirs:.2f} s; images: "
            + ", ".join(s for s in sizes if s),
        ),
        Figure(
            id="A1",
            name="floor: bare compose up of the same file (3 containers, 2 networks) vs "
            "plain docker run",
            goal="<= 1.5x",
            measured=f"{bare / theirs:.2f}x",
            passed=bare / theirs <= 1.5,
            ratio=bare / theirs,
            detail=f"{rounds} rounds, interleaved; compose up --detach, nothing waited "
            f"for: median {bare:.2f} s ({min(floor):.2f}-{max(floor):.2f}) vs plain "
            f"{theirs:.2f} s to its first request. Above 1.5x, no bottle that is one "
            "compose project with its own networks can reach the goal. With the CLI's own "
            f"start on top (plain less a bare `docker run IMAGE true`, {cli:.2f} s): "
            f"{(bare + cli) / theirs:.2f}x, before anything waits for egress",
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    print(markdown(figures(parser.parse_args().rounds)))
