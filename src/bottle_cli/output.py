"""Two consoles: results on stdout, progress and errors on stderr.

Every string that reaches a terminal through here is made inert first (``bottle.text``):
proposals, Dockerfiles, paths and error messages carry text the agent or an upstream
chose, and an escape sequence in it must be shown, never obeyed. ``--json`` output is
escaped by the JSON encoder itself (``ensure_ascii``: every control is a ``\\u`` escape).
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape

from bottle.text import inert

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Plain JSON on stdout: no colour, no progress text, stable keys."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str, ensure_ascii=True))


def line(text: str) -> None:
    """One result line on stdout, inert (no markup, no control characters obeyed)."""
    out.print(inert(text), markup=False)


def block(text: str) -> None:
    """A multi-line result on stdout (a routes file, a transcript), inert but for newlines."""
    out.print(inert(text, multiline=True), end="", markup=False)


def _shown(message: str) -> str:
    return escape(inert(message, multiline=True))


def progress(message: str) -> None:
    err.print(f"[dim]·[/dim] {_shown(message)}", markup=True)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {_shown(message)}", markup=True)


def error(message: str, hint: str | None = None) -> None:
    err.print(f"[red]error:[/red] {_shown(message)}", markup=True)
    if hint:
        err.print(f"[cyan]hint:[/cyan] {_shown(hint)}", markup=True)


def table(headers: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    view = Table(*headers, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        view.add_row(*(escape(inert(cell)) for cell in row))
    out.print(view)
