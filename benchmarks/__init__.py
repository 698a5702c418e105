"""Benchmarks of issue 14: ``uv run python -m benchmarks`` runs every figure, one table.

Each area module (``lifecycle``, ``cli``, ``queue``, ``egress``, ``rest``, ``scale``,
``git_gate``) exposes ``figures(rounds: int) -> list[Figure]`` (``benchmarks._table``);
``__main__`` runs them in turn. They are scripts that time real processes, never tests.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Modules written as scripts (``from _home import bench_home``) stay importable as
# ``benchmarks.<name>`` until they are converted to package imports.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)
