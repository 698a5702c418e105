"""bottle run vs plain compose, side by side in one run (images cached).

    uv run python benchmarks/lifecycle.py [--rounds 5]

Each round times ``bottle run it -- true`` (plan, state dir, up --wait, exec, compose.log,
down) and then plain ``docker compose up -d --wait`` + ``exec agent true`` + ``down`` of the
very docker-compose.yml that run wrote. Also times approval-to-live of a new egress route,
and a capability apply (a one-step build on the agent image plus the agent's recreate).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

from _home import bench_home  # benchmarks/ is on sys.path when a script in it runs

BOTTLE = "---\nagent: {provider: shell}\nsupervise: true\negress:\n  routes: [{host: pypi.org}]\n---\n"


def timed(argv: list[str], **kwargs: object) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    home = bench_home("bench", BOTTLE)
    env = {**os.environ, "BOTTLE_HOME": str(home)}
    bottle = [sys.executable, "-m", "bottle_cli"]
    subprocess.run([*bottle, "run", "bench", "--", "true"], env=env, check=True)  # warm images
    ours, plain = [], []
    for _ in range(rounds):
        ours.append(timed([*bottle, "run", "bench", "--", "true"], env=env))
        newest = max((home / "state").iterdir(), key=lambda p: p.stat().st_mtime)
        compose = ["docker", "compose", "-f", str(newest / "docker-compose.yml"),
                   "-p", f"bench-plain-{newest.name}"]
        started = time.perf_counter()
        subprocess.run([*compose, "up", "-d", "--wait"], check=True, capture_output=True, cwd=newest)
        subprocess.run([*compose, "exec", "-T", "agent", "true"], check=True, capture_output=True)
        subprocess.run([*compose, "down", "-v", "-t", "5"], check=True, capture_output=True)
        plain.append(time.perf_counter() - started)
    m_ours, m_plain = statistics.median(ours), statistics.median(plain)
    print(f"bottle run -- true          median {m_ours:.2f}s  {[round(x, 2) for x in ours]}")
    print(f"compose up/exec/down        median {m_plain:.2f}s  {[round(x, 2) for x in plain]}")
    print(f"overhead ratio              {m_ours / m_plain:.3f} ({(m_ours / m_plain - 1) * 100:+.1f}%)")

    from bottle import Bottle, Route, Settings
    from bottle.capability import replace_agent_image
    from bottle.operator import allow

    os.environ["BOTTLE_HOME"] = str(home)
    with Bottle("bench", cwd=home).start() as instance:
        times = []
        for index in range(rounds * 2):
            started = time.perf_counter()
            allow(instance, Route(host=f"h{index}.example"), reason="bench")
            times.append(time.perf_counter() - started)
        # capability-block apply: a one-step build on the agent image, then the agent alone
        # recreated (new content each round, so every round really builds).
        rebuilds = []
        for index in range(rounds):
            step = f"RUN echo {time.time_ns()} > /etc/b{index}"
            dockerfile = f"FROM ${{BOTTLE_AGENT_IMAGE}}\n{step}\n"
            started = time.perf_counter()
            replace_agent_image(instance, dockerfile, settings=Settings.default())
            rebuilds.append(time.perf_counter() - started)
    print(f"approval-to-live (allow)    median {statistics.median(times) * 1000:.0f} ms "
          f"{[round(x * 1000) for x in times]}")
    print(f"capability apply (build+recreate) median {statistics.median(rebuilds):.2f}s "
          f"{[round(x, 2) for x in rebuilds]}")


if __name__ == "__main__":
    main()
