"""One row of the benchmark table, and the table: every figure module returns Figures.

A figure module (``benchmarks/<area>.py``) exposes ``figures(rounds: int) -> list[Figure]``;
``python -m benchmarks`` runs them all and prints one markdown table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    id: str  # the figure number: "P1", "P3b", ...
    name: str  # what was measured, in words
    goal: str  # as the issue states it: "<= 1.10x", "<= 150 ms", ">= 0.85"
    measured: str  # the figure with its unit: "1.07x", "132 ms", "20/20 in 71 s"
    passed: bool
    ratio: float | None = None  # ours / peer where a peer was measured side by side
    detail: str = ""  # rounds, medians of both sides, anything needed to read the row


def markdown(rows: Sequence[Figure]) -> str:
    lines = [
        "| figure | what | goal | measured | ratio | pass |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio = "" if row.ratio is None else f"{row.ratio:.2f}"
        mark = "pass" if row.passed else "FAIL"
        lines.append(f"| {row.id} | {row.name} | {row.goal} | {row.measured} | {ratio} | {mark} |")
    details = [f"- {row.id}: {row.detail}" for row in rows if row.detail]
    return "\n".join([*lines, "", *details]) + "\n"
