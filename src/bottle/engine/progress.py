"""What an image build reports while it runs: typed updates, no terminal code.

A ``progress`` callback that is only ``(str) -> None`` gets the ``Step N/M : …`` lines, as
always. One that also has ``build(update)`` (:class:`BuildProgress`) gets a
:class:`BuildUpdate` for each step and each output line, with the time spent, so a
front end can show elapsed time per step and a live last line (the CLI draws it with
rich on a terminal). ``line`` and ``step`` are the build's own output: a Dockerfile, an
apt mirror or an npm package wrote them, so show them inert (``bottle.text.inert``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = ["STEP", "BuildProgress", "BuildTracker", "BuildUpdate", "UpdateKind"]

#: The legacy builder's step header.
STEP = re.compile(r"^Step (\d+)/(\d+) : ")

#: ``step``: a step began; ``line``: output of the current step; ``done``: the current step
#: ended (``step_elapsed`` is its time); ``end``: the build ended (``ok`` says how).
UpdateKind = Literal["step", "line", "done", "end"]


@dataclass(frozen=True)
class BuildUpdate:
    image: str
    kind: UpdateKind
    #: The current step's header (``Step 3/7 : RUN npm install …``), "" before the first.
    step: str
    #: The step's number and the build's step count (0 and 0 when the output has none).
    index: int
    total: int
    #: The last output line (stripped of ANSI sequences, but otherwise as written).
    line: str
    #: Seconds since the current step began, and since the build began.
    step_elapsed: float
    elapsed: float
    ok: bool = True


@runtime_checkable
class BuildProgress(Protocol):
    """A progress callback that also follows builds step by step."""

    def __call__(self, message: str) -> None: ...

    def build(self, update: BuildUpdate) -> None: ...


class BuildTracker:
    """Turns a build's output lines into :class:`BuildUpdate` s (pure but for ``clock``)."""

    def __init__(
        self,
        image: str,
        emit: Callable[[BuildUpdate], None],
        *,
        first_step: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._image = image
        self._emit = emit
        self._clock = clock
        self._began = self._step_began = clock()
        self._step = first_step
        self._index = self._total = 0
        self._line = ""
        if first_step:
            self._send("step")

    def feed(self, line: str) -> None:
        """One line of output (without its newline)."""
        found = STEP.match(line)
        if found:
            if self._step:
                self._send("done")
            self._step, self._line = line, ""
            self._index, self._total = int(found.group(1)), int(found.group(2))
            self._step_began = self._clock()
            self._send("step")
            return
        if line.strip():
            self._line = line
            self._send("line")

    def end(self, *, ok: bool) -> None:
        """The build's process ended (``ok``: with exit code 0)."""
        if self._step:
            self._send("done", ok=ok)
        self._send("end", ok=ok)

    def _send(self, kind: UpdateKind, *, ok: bool = True) -> None:
        now = self._clock()
        self._emit(
            BuildUpdate(
                image=self._image,
                kind=kind,
                step=self._step,
                index=self._index,
                total=self._total,
                line=self._line,
                step_elapsed=now - self._step_began,
                elapsed=now - self._began,
                ok=ok,
            )
        )
