"""Two consoles: results on stdout, progress and errors on stderr."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.markup import escape

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: Any) -> None:
    """Plain JSON on stdout: no colour, no progress text, stable keys."""
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def progress(message: str) -> None:
    err.print(f"[dim]·[/dim] {escape(message)}", markup=True)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(message)}", markup=True)


def error(message: str, hint: str | None = None) -> None:
    err.print(f"[red]error:[/red] {escape(message)}", markup=True)
    if hint:
        err.print(f"[cyan]hint:[/cyan] {escape(hint)}", markup=True)


def table(headers: list[str], rows: list[list[str]]) -> None:
    from rich.table import Table

    view = Table(*headers, box=None, pad_edge=False, header_style="bold")
    for row in rows:
        view.add_row(*(escape(cell) for cell in row))
    out.print(view)
