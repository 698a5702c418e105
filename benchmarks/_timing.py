"""Timing helpers shared by the figure modules: whole processes, interleaved rounds."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


def bottle_argv() -> list[str]:
    """The installed ``bottle`` console script, as an operator runs it."""
    return [str(Path(sys.executable).with_name("bottle"))]


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI run against ``home``, with byte code cached as an install has."""
    env = {**os.environ, "BOTTLE_HOME": str(home), "PYTHONPYCACHEPREFIX": str(home / ".pyc")}
    # This sandbox disables writing byte code; an installed bottle has it compiled.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**env, **extra}


def timed(argv: Sequence[str], env: Mapping[str, str] | None = None, **kwargs: object) -> float:
    """Seconds ``argv`` took as a whole process; raises if it failed."""
    started = time.perf_counter()
    subprocess.run(list(argv), env=env, check=True, capture_output=True, **kwargs)  # type: ignore[call-overload]
    return time.perf_counter() - started


def clock(do: Callable[[], object]) -> float:
    started = time.perf_counter()
    do()
    return time.perf_counter() - started


def interleaved(rounds: int, *sides: Callable[[], float]) -> list[list[float]]:
    """Each side once per round, in turn (ours, peer, ours, peer…): noise hits both alike."""
    results: list[list[float]] = [[] for _ in sides]
    for _ in range(rounds):
        for index, side in enumerate(sides):
            results[index].append(side())
    return results


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def spread(values: Sequence[float], unit: str = "ms") -> str:
    """``median 132 ms (118-160)``: how a figure's rounds spread."""
    scale = 1000 if unit == "ms" else 1
    lo, mid, hi = min(values) * scale, median(values) * scale, max(values) * scale
    return (
        f"median {mid:.0f} {unit} ({lo:.0f}-{hi:.0f})"
        if unit == "ms"
        else (f"median {mid:.2f} {unit} ({lo:.2f}-{hi:.2f})")
    )
