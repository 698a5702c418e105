"""Two consoles: results on stdout, progress and errors on stderr.

Every string that reaches a terminal through here is made inert first (``bottle.text``):
proposals, Dockerfiles, paths and error messages carry text the agent or an upstream
chose, and an escape sequence in it must be shown, never obeyed. ``--json`` output is
escaped by the JSON encoder itself (``ensure_ascii``: every control is a ``\\u`` escape).
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from bottle.text import inert

if TYPE_CHECKING:
    from bottle.engine.progress import BuildUpdate
    from bottle_cli.buildview import BuildView

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


class Progress:
    """``progress(message)``: one dim line on stderr. ``progress.build(update)``: an image
    build as it goes (``bottle_cli.buildview``); ``builds=False`` keeps builds silent
    (the paths whose stdout is JSON)."""

    def __init__(self, *, builds: bool = True) -> None:
        self.builds = builds
        self._view: BuildView | None = None

    def __call__(self, message: str) -> None:
        err.print(f"[dim]·[/dim] {_shown(message)}", markup=True)

    def build(self, update: BuildUpdate) -> None:
        if not self.builds:
            return
        if self._view is None:
            from bottle_cli.buildview import BuildView

            self._view = BuildView(err)
        self._view.build(update)
        if update.kind == "end":
            self.close()

    def close(self) -> None:
        """End a build view an error or Ctrl-C cut short (the terminal gets its cursor)."""
        if self._view is not None:
            self._view.close()
            self._view = None


progress = Progress()
#: For ``--json`` and other machine-read output: messages, but no build view.
quiet_progress = Progress(builds=False)


def warn(message: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {_shown(message)}", markup=True)


def hint(message: str) -> None:
    err.print(f"[cyan]hint:[/cyan] {_shown(message)}", markup=True)


def error(message: str, hint: str | None = None) -> None:
    err.print(f"[red]error:[/red] {_shown(message)}", markup=True)
    if hint:
        err.print(f"[cyan]hint:[/cyan] {_shown(hint)}", markup=True)


def table(headers: list[str], rows: list[list[str]], *, keep: Collection[int] = ()) -> None:
    """One line per row, fitting the terminal: columns in ``keep`` are never cut; others are
    shortened with an ellipsis, and the last ones left out, when there is no room
    (``--json`` has every value whole)."""
    from rich.table import Table

    cells = [[inert(cell) for cell in row] for row in rows]
    widths = _fit(
        [max([len(h), *(len(row[i]) for row in cells)]) for i, h in enumerate(headers)],
        [len(h) for h in headers],
        keep,
        out.width,
    )
    view = Table(box=None, pad_edge=False, header_style="bold")
    shown = [i for i, width in enumerate(widths) if width]
    for index in shown:
        view.add_column(headers[index], width=widths[index], no_wrap=True, overflow="ellipsis")
    for row in cells:
        view.add_row(*(escape(row[i]) for i in shown))
    out.print(view)


def _fit(natural: list[int], floor: list[int], keep: Collection[int], room: int) -> list[int]:
    """Column widths (0: left out) that fit ``room`` with two spaces between columns."""
    widths = list(natural)
    floors = [min(n, f) for n, f in zip(natural, floor, strict=True)]
    shown = list(range(len(widths)))

    def spare() -> int:
        return room - 2 * (len(shown) - 1) - sum(widths[i] for i in shown)

    while spare() < 0 and len(shown) > 1:
        if (
            room - 2 * (len(shown) - 1) - sum(widths[i] if i in keep else floors[i] for i in shown)
            < 0
        ):
            drop = next((i for i in reversed(shown) if i not in keep), None)
            if drop is None:
                break
            shown.remove(drop)
            widths[drop] = 0
            continue
        widest = max(
            (i for i in shown if i not in keep and widths[i] > floors[i]), key=lambda i: widths[i]
        )
        widths[widest] -= 1
    return widths
