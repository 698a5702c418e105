"""P3 and P3b: how fast the ``bottle`` command answers, as whole processes.

    uv run python -m benchmarks.cli [--rounds 5]      (or: python -m benchmarks --only cli)

One real instance (shell agent, egress and supervise) runs for the module. ``bottle ls``
lists 20 instances: the real one and 19 more, each a state directory whose owner is this
process and one labelled container (the rest of their services missing, so ``ls`` shows
them degraded: the work of reading every one). ``bottle allow`` adds a route live.
``bottle exec SLUG -- true`` runs interleaved with ``docker exec`` of the same container.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from pathlib import Path

from benchmarks._home import bench_home, bench_work
from benchmarks._table import Figure, markdown
from benchmarks._timing import bottle_argv, cli_env, interleaved, median, ms, spread, timed

FIGURES = ("P3", "P3b")
BOTTLE = (
    "---\nagent: {provider: shell}\nsupervise: true\negress:\n  routes: [{host: pypi.org}]\n---\n"
)
LISTED = 20


def _others(home: Path, state: Path, count: int) -> list[str]:
    """``count`` more instances beside ``state``; returns the containers made for them."""
    meta = json.loads((state / "metadata.json").read_text())
    labels = json.loads(
        subprocess.run(
            [
                "docker",
                "inspect",
                "--format",
                "{{json .Config.Labels}}",
                f"{meta['compose_project']}-agent-1",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    image = meta["images"]["agent"]
    made = []
    for index in range(count):
        slug = f"listed-{index:02d}"
        other = home / "state" / slug
        other.mkdir(parents=True)
        project = f"bottle-{slug}"
        (other / "metadata.json").write_text(
            json.dumps({**meta, "slug": slug, "compose_project": project, "pid": os.getpid()})
        )
        argv = [
            "docker",
            "run",
            "-d",
            "--rm",
            "--init",
            "--network",
            "none",
            "--label",
            f"com.docker.compose.project={project}",
            "--label",
            "com.docker.compose.service=egress",
            "--label",
            "com.docker.compose.oneoff=False",
            "--label",
            f"bottle.home={labels['bottle.home']}",
            "--label",
            f"bottle.slug={slug}",
            image,
            "sleep",
            "900",
        ]
        made.append(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip())
    return made


def figures(rounds: int, only: set[str] | None = None) -> list[Figure]:
    from bottle import Bottle, Settings

    home = bench_home("bench", BOTTLE)
    env = cli_env(home)
    bottle = bottle_argv()
    rows: list[Figure] = []
    settings = Settings.from_env({**os.environ, "BOTTLE_HOME": str(home)})
    timed([*bottle, "--help"], env)  # byte code written once, as an install has it
    helps = [timed([*bottle, "--help"], env) for _ in range(rounds * 2)]
    rows.append(
        Figure(
            "P3",
            "`bottle --help`",
            "<= 150 ms",
            ms(median(helps)),
            median(helps) <= 0.150,
            detail=f"--help {spread(helps)}, {len(helps)} runs",
        )
    )
    instance = Bottle("bench", cwd=bench_work(home), settings=settings).start()
    containers: list[str] = []
    try:
        containers = _others(home, instance.state.path, LISTED - 1)
        timed([*bottle, "ls"], env)
        listed = [timed([*bottle, "ls"], env) for _ in range(rounds * 2)]
        rows.append(
            Figure(
                "P3",
                f"`bottle ls`, {LISTED} instances",
                "<= 300 ms",
                ms(median(listed)),
                median(listed) <= 0.300,
                detail=f"ls {spread(listed)}, {len(listed)} runs, {LISTED} running "
                "instances (1 real, 19 with one labelled container each)",
            )
        )
        slug = instance.slug
        allows = [
            timed([*bottle, "allow", slug, f"h{n}.example", "--reason", "bench"], env)
            for n in range(rounds * 2)
        ]
        rows.append(
            Figure(
                "P3",
                "`bottle allow` (live)",
                "<= 500 ms",
                ms(median(allows)),
                median(allows) <= 0.500,
                detail=f"allow {spread(allows)}, {len(allows)} runs, each confirmed live by egress",
            )
        )
        container = f"{instance.metadata.compose_project}-agent-1"
        ours, peer = interleaved(
            rounds * 2,
            lambda: timed([*bottle, "exec", slug, "--", "true"], env, stdin=subprocess.DEVNULL),
            lambda: timed(["docker", "exec", "-i", container, "true"], stdin=subprocess.DEVNULL),
        )
        added = median(ours) - median(peer)
        rows.append(
            Figure(
                "P3b",
                "`bottle exec SLUG -- true` vs `docker exec`",
                "<= docker exec + 150 ms",
                f"+{ms(added)}",
                added <= 0.150,
                ratio=median(ours) / median(peer),
                detail=f"interleaved, {len(ours)} rounds: bottle exec {spread(ours)}, "
                f"docker exec {spread(peer)}",
            )
        )
    finally:
        if containers:
            subprocess.run(["docker", "rm", "-f", *containers], capture_output=True, check=False)
        instance.stop()
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(bench_work(home), ignore_errors=True)
    return [row for row in rows if not only or row.id in only]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    print(markdown(figures(parser.parse_args().rounds)))
