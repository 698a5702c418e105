"""Run every figure module and print one markdown table.

    uv run python -m benchmarks [--rounds 5] [--only P1,P3b,queue]

A module that is absent, or has no ``figures``, is skipped with a note: the areas land
in any order. A module may list its figure ids in ``FIGURES`` (so ``--only P2`` runs only
the modules that make P2) and take ``only`` (so it skips the figures not asked for).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from datetime import UTC, datetime

from benchmarks._table import Figure, markdown

MODULES = [
    "lifecycle",
    "cli",
    "queue",
    "egress",
    "rest",
    "scale",
    "git_gate",
    "agents",
    "unit_suite",
]


def _wanted(name: str, module: object, only: set[str]) -> bool:
    if not only or name in only:
        return True
    ids = getattr(module, "FIGURES", None)
    if ids is None:
        # It names no figures: run it only when a figure id (not a module name) was asked for.
        return bool(only - set(MODULES))
    return bool(only & set(ids))


def run(rounds: int, only: set[str]) -> tuple[list[Figure], list[str]]:
    rows: list[Figure] = []
    notes: list[str] = []
    for name in MODULES:
        try:
            module = importlib.import_module(f"benchmarks.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"benchmarks.{name}":
                raise
            notes.append(f"{name}: skipped (no benchmarks/{name}.py)")
            continue
        figures = getattr(module, "figures", None)
        if not callable(figures):
            notes.append(f"{name}: skipped (no figures(rounds))")
            continue
        if not _wanted(name, module, only):
            continue
        ids = {i for i in only if i != name} if only and name not in only else set()
        kwargs = {"only": ids} if ids and "only" in inspect.signature(figures).parameters else {}
        print(f"· {name} ({rounds} rounds)…", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            found = list(figures(rounds, **kwargs))
        except Exception as exc:  # one broken area must not hide the others' figures
            traceback.print_exc()
            notes.append(f"{name}: failed ({type(exc).__name__}: {exc})")
            continue
        notes.append(f"{name}: {time.perf_counter() - started:.0f} s")
        rows += [row for row in found if not ids or row.id in ids or name in only]
    return rows, notes


def _commit() -> str:
    done = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--rounds", type=int, default=5, help="rounds per compared figure")
    parser.add_argument("--only", default="", help="figure ids or module names, comma-separated")
    args = parser.parse_args(argv)
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    load = os.getloadavg()[0]
    rows, notes = run(max(1, args.rounds), only)
    print(
        f"bottle benchmarks at {_commit()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, "
        f"{args.rounds} rounds, {os.cpu_count()} cores, load {load:.1f} at start "
        f"and {os.getloadavg()[0]:.1f} at end\n"
    )
    print(markdown(rows))
    for note in notes:
        print(f"- {note}")
    failed = any(note.endswith(")") and ": failed (" in note for note in notes)
    return 1 if failed or not all(row.passed for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
