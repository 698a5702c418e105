"""P1, P2, P5: bottle run vs plain compose, stop, approve to route live (images cached).

    uv run python -m benchmarks.lifecycle [--rounds 5]

P1, interleaved: ``bottle run bench -- true`` (plan, state dir, up --wait, exec,
compose.log, down), then plain ``docker compose up -d --wait`` + ``exec agent true`` +
``down`` of the very docker-compose.yml that run wrote. P2: ``bottle stop`` of a running
instance (compose.log saved, transcript kept). P5: from the operator's ``approve`` of an
egress-block proposal to egress confirming the new table live (its status file names the
new routes' digest: approve returns only then).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import time
from functools import partial

from benchmarks._home import bench_home, bench_work
from benchmarks._table import Figure, markdown
from benchmarks._timing import bottle_argv, cli_env, clock, interleaved, median, spread, timed

FIGURES = ("P1", "P2", "P5")
BOTTLE = (
    "---\nagent: {provider: shell}\nsupervise: true\negress:\n  routes: [{host: pypi.org}]\n---\n"
)


def figures(rounds: int, only: set[str] | None = None) -> list[Figure]:
    from bottle import Bottle, Settings
    from bottle.proposals import ProposalQueue

    want = only or set(FIGURES)
    home = bench_home("bench", BOTTLE)
    work = bench_work(home)  # the agent's workspace: never the home itself
    env = cli_env(home)
    bottle = bottle_argv()
    settings = Settings.from_env({**os.environ, "BOTTLE_HOME": str(home)})
    rows: list[Figure] = []
    try:
        if "P1" in want:
            timed([*bottle, "run", "bench", "--", "true"], env, cwd=work)  # warm images, byte code

            def plain() -> float:
                newest = max((home / "state").iterdir(), key=lambda p: p.stat().st_mtime)
                compose = [
                    "docker",
                    "compose",
                    "-f",
                    str(newest / "docker-compose.yml"),
                    "-p",
                    f"bench-plain-{newest.name}",
                ]
                started = time.perf_counter()
                subprocess.run(
                    [*compose, "up", "-d", "--wait"], check=True, capture_output=True, cwd=newest
                )
                subprocess.run(
                    [*compose, "exec", "-T", "agent", "true"], check=True, capture_output=True
                )
                subprocess.run([*compose, "down", "-v", "-t", "5"], check=True, capture_output=True)
                return time.perf_counter() - started

            ours, peer = interleaved(
                rounds, lambda: timed([*bottle, "run", "bench", "--", "true"], env, cwd=work), plain
            )
            ratio = median(ours) / median(peer)
            rows.append(
                Figure(
                    "P1",
                    "`bottle run shell -- true` vs compose up/exec/down",
                    "<= 1.10x",
                    f"{ratio:.2f}x",
                    ratio <= 1.10,
                    ratio=ratio,
                    detail=f"interleaved, {rounds} rounds: bottle run "
                    f"{spread(ours, 's')}, compose {spread(peer, 's')}",
                )
            )
        if "P2" in want:
            stops = []
            for _ in range(max(1, min(rounds, 3))):
                instance = Bottle("bench", cwd=work, settings=settings).start()
                stops.append(timed([*bottle, "stop", instance.slug], env))
                assert instance.state.compose_log.exists()
            rows.append(
                Figure(
                    "P2",
                    "`bottle stop` of a running instance",
                    "<= 1.0 s",
                    f"{median(stops):.2f} s",
                    median(stops) <= 1.0,
                    detail=f"stop {spread(stops, 's')}, {len(stops)} instances",
                )
            )
        if "P5" in want:
            with Bottle("bench", cwd=work, settings=settings).start() as instance:
                queue = ProposalQueue(instance.state.path / "proposals")
                lives = []
                for n in range(rounds * 2):
                    filed = queue.create(
                        "egress-block", {"host": f"p5-{n}.example", "paths": ["/"]}, "bench"
                    )
                    lives.append(clock(partial(instance.proposals.approve, filed.id)))
            rows.append(
                Figure(
                    "P5",
                    "approve -> route live",
                    "<= 100 ms",
                    f"{median(lives) * 1000:.0f} ms",
                    median(lives) <= 0.100,
                    detail=f"approve {spread(lives)}, {len(lives)} proposals, each "
                    "until egress's status file confirmed the new routes",
                )
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    print(markdown(figures(parser.parse_args().rounds)))
