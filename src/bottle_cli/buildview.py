"""How an image build looks on stderr: the time of each step and the build's last line.

On a terminal, a live two-line view (the step with its running time, the last output
line under it) and one kept line per finished step; elsewhere (a log, CI) plain
timestamped lines: each step as it begins and ends, and the last output line at most
every ``every`` seconds while a step runs. Every step and line is the build's own output
(a Dockerfile, a mirror, an npm package wrote it): shown inert.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.markup import escape
from rich.text import Text

from bottle.text import inert

if TYPE_CHECKING:
    from rich.console import Console
    from rich.live import Live

    from bottle.engine.progress import BuildUpdate

#: Seconds between two "still running" lines of one step, when not on a terminal.
PLAIN_EVERY = 15.0


def duration(seconds: float) -> str:
    """``4.2s``, ``3m07s``, ``1h02m``: short, and never cut to zero."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class BuildView:
    """Draws one build's updates on ``console`` (live when it is a terminal)."""

    def __init__(
        self,
        console: Console,
        *,
        live: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        every: float = PLAIN_EVERY,
    ) -> None:
        self._console = console
        self._live_mode = console.is_terminal if live is None else live
        self._clock = clock
        self._wall = wall
        self._every = every
        self._live: Live | None = None
        self._update: BuildUpdate | None = None
        self._step_began = clock()
        self._said = clock()

    def build(self, update: BuildUpdate) -> None:
        if update.kind == "step":
            self._step_began = self._said = self._clock() - update.step_elapsed
        self._update = update
        if self._live_mode:
            self._draw(update)
        else:
            self._plain(update)

    def close(self) -> None:
        """Stop the live view (a build cut short by an error or Ctrl-C leaves it open)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    # -- a terminal ------------------------------------------------------------------------

    def _draw(self, update: BuildUpdate) -> None:
        if update.kind == "done":
            mark = "[green]✓[/green]" if update.ok else "[red]✗[/red]"
            self._console.print(
                f"  {mark} {escape(_shown(update.step))} [dim]{duration(update.step_elapsed)}"
                "[/dim]",
                markup=True,
                no_wrap=True,
                overflow="ellipsis",
            )
            return
        if update.kind == "end":
            self.close()
            if update.ok:
                self._console.print(
                    f"[dim]·[/dim] built {escape(_shown(update.image))} in "
                    f"{duration(update.elapsed)}",
                    markup=True,
                )
            return
        if self._live is None:
            from rich.live import Live

            self._live = Live(
                _Current(self), console=self._console, transient=True, refresh_per_second=4
            )
            self._live.start()

    def current(self) -> Text:
        """The live view's two lines, with the step's time as of now."""
        update = self._update
        view = Text(no_wrap=True, overflow="ellipsis")
        if update is None:
            return view
        view.append("  ⠿ ", style="cyan")
        view.append(_shown(update.step or update.image))
        view.append(f" {duration(self._clock() - self._step_began)}", style="dim")
        if update.line:
            view.append("\n    ")
            view.append(_shown(update.line), style="dim")
        return view

    # -- a log -----------------------------------------------------------------------------

    def _plain(self, update: BuildUpdate) -> None:
        if update.kind == "step":
            self._say(_shown(update.step))
        elif update.kind == "line":
            now = self._clock()
            if now - self._said >= self._every:
                self._said = now
                self._say(f"  … {duration(update.step_elapsed)}: {_shown(update.line)}")
        elif update.kind == "done":
            how = "done" if update.ok else "failed"
            self._say(f"  {how} in {duration(update.step_elapsed)}")
        elif update.ok:
            self._say(f"built {_shown(update.image)} in {duration(update.elapsed)}")

    def _say(self, text: str) -> None:
        stamp = self._wall().strftime("%H:%M:%S")
        self._console.print(f"{stamp} {text}", markup=False, highlight=False, soft_wrap=True)


def _shown(text: str) -> str:
    return inert(text)


class _Current:
    """Rendered at each refresh, so a silent step's time still goes on."""

    def __init__(self, view: BuildView) -> None:
        self._view = view

    def __rich__(self) -> Any:
        return self._view.current()
