"""U1: the unit suite's wall and CPU time, as a developer runs it (issue 10: "under 15 s").

    uv run python -m benchmarks.unit_suite [--rounds 2] [-- PYTEST ARGS...]
    (or: uv run python -m benchmarks --only U1 --rounds 1)

Each round is one ``python -m pytest tests/unit -q -p no:cacheprovider`` in a new process
(extra pytest arguments, e.g. ``-n 2`` where pytest-xdist is installed, go after ``--``).
CPU is the child's user + system time, its own children included (git, the fake docker,
the one real entry point): what the suite costs a machine, whatever the load. Wall time
rises with the load average, which the table's header gives; one process cannot finish
faster than its CPU time, so the CPU column is the figure to compare between machines.
The first round may compile bytecode the later ones reuse; the detail gives every round.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks._table import Figure, markdown

FIGURES = ("U1",)
GOAL_S = 15.0
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    passed: int
    ok: bool


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def one_run(extra: Sequence[str] = ()) -> Run:
    """One run of the unit suite in a new process: wall and CPU time, tests passed."""
    argv = [sys.executable, "-m", "pytest", "tests/unit", "-q", "-p", "no:cacheprovider"]
    # RUSAGE_CHILDREN grows by a child's time (its own waited-for children included) when
    # it is reaped: the difference is this run's, as nothing else runs beside it here.
    cpu_before = _children_cpu()
    started = time.perf_counter()
    done = subprocess.run([*argv, *extra], cwd=REPO, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    found = re.search(r"(\d+) passed", done.stdout)
    return Run(
        wall=wall,
        cpu=_children_cpu() - cpu_before,
        passed=int(found.group(1)) if found else 0,
        ok=done.returncode == 0,
    )


def figures(rounds: int, extra: Sequence[str] = ()) -> list[Figure]:
    runs = [one_run(extra) for _ in range(max(1, rounds))]
    best = min(runs, key=lambda r: r.wall)
    ok = all(r.ok for r in runs)
    each = "; ".join(f"{r.wall:.1f} s wall / {r.cpu:.1f} s CPU" for r in runs)
    shown = " ".join(["pytest tests/unit", *extra])
    return [
        Figure(
            id="U1",
            name=f"unit suite ({shown}), {best.passed} tests, best of {len(runs)}",
            goal=f"<= {GOAL_S:.0f} s wall",
            measured=f"{best.wall:.1f} s wall, {best.cpu:.1f} s CPU",
            passed=ok and best.wall <= GOAL_S,
            detail=f"rounds: {each}; load {os.getloadavg()[0]:.1f} at the end"
            + ("" if ok else "; FAILED: some tests failed"),
        )
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.unit_suite", description=__doc__)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    rows = figures(args.rounds, args.extra)
    print(f"{os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at start\n")
    print(markdown(rows))
    return 0 if all(row.passed for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
