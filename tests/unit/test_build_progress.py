"""Build progress: the library's typed updates from a build's output, and how the CLI shows
them (a live view on a terminal, timestamped lines elsewhere, nothing for JSON).

The build stream is a real child process printing what ``docker build`` prints (the
engine's own streaming code reads it); the clock is a fake one the test moves.
"""

from __future__ import annotations

import io
import sys
from datetime import UTC, datetime

import pytest
from rich.console import Console

from bottle.engine import images
from bottle.engine.progress import BuildTracker, BuildUpdate
from bottle_cli import output
from bottle_cli.buildview import BuildView, duration

HOSTILE = "npm \x1b]0;owned\x07 WARN \x1b[2Kdeprecated"

_BUILD_OUTPUT = [
    "Sending build context to Docker daemon  2.048kB",
    "Step 1/3 : FROM bottle-agent-shell:abc",
    " ---> 1234",
    "Step 2/3 : RUN npm install -g @anthropic-ai/claude-code",
    " ---> Running in 5678",
    "added 1 package in 3s",
    HOSTILE,
    "",
    "Step 3/3 : LABEL x=y",
    "Successfully built 9abc",
]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_tracker_times_each_step_and_keeps_the_last_line() -> None:
    clock = Clock()
    seen: list[BuildUpdate] = []
    tracker = BuildTracker("img:1", seen.append, clock=clock)
    for line, then in zip(_BUILD_OUTPUT, [0, 1, 1, 2, 60, 30, 5, 0, 1, 0], strict=True):
        clock.now += then
        tracker.feed(line)
    clock.now += 2
    tracker.end(ok=True)
    kinds = [(u.kind, u.index) for u in seen]
    assert kinds == [
        ("line", 0),  # the context line, before any step
        ("step", 1),
        ("line", 1),
        ("done", 1),
        ("step", 2),
        ("line", 2),
        ("line", 2),
        ("line", 2),
        ("done", 2),
        ("step", 3),
        ("line", 3),
        ("done", 3),
        ("end", 3),
    ]
    done = [u for u in seen if u.kind == "done"]
    assert [u.step_elapsed for u in done] == [3.0, 96.0, 2.0]
    assert done[1].step == "Step 2/3 : RUN npm install -g @anthropic-ai/claude-code"
    assert done[1].line == HOSTILE  # the blank line does not replace the last one
    assert seen[-1].elapsed == 102.0 and seen[-1].total == 3 and seen[-1].ok


def test_a_failed_build_ends_its_step_failed() -> None:
    seen: list[BuildUpdate] = []
    tracker = BuildTracker("img:1", seen.append, first_step="mmdebstrap trixie", clock=Clock())
    tracker.feed("E: cannot reach the mirror")
    tracker.end(ok=False)
    assert [(u.kind, u.step, u.ok) for u in seen] == [
        ("step", "mmdebstrap trixie", True),
        ("line", "mmdebstrap trixie", True),
        ("done", "mmdebstrap trixie", False),
        ("end", "mmdebstrap trixie", False),
    ]


def _fake_build() -> list[str]:
    """``docker build``'s output from a real child process (what ``_stream`` reads)."""
    script = "import sys\nfor line in sys.argv[1:]: print(line, flush=True)\n"
    return [sys.executable, "-c", script, *_BUILD_OUTPUT]


class Recorder:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.updates: list[BuildUpdate] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)

    def build(self, update: BuildUpdate) -> None:
        self.updates.append(update)


def test_the_stream_feeds_a_build_progress_every_line() -> None:
    got = Recorder()
    code, tail, step = images._stream(_fake_build(), got, image="img:1")
    assert code == 0 and step == "Step 3/3 : LABEL x=y"
    assert got.messages == []  # the updates carry the steps
    assert [u.kind for u in got.updates].count("done") == 3
    assert got.updates[-1].kind == "end" and got.updates[-1].image == "img:1"
    assert HOSTILE.replace("\x1b[2K", "") in [u.line for u in got.updates]  # ANSI stripped
    assert tail[-1] == "Successfully built 9abc"


def test_a_plain_callback_still_gets_only_the_step_lines() -> None:
    lines: list[str] = []
    code, _tail, _step = images._stream(_fake_build(), lines.append, image="img:1")
    assert code == 0
    assert lines == [line for line in _BUILD_OUTPUT if line.startswith("Step ")]


def _updates() -> list[tuple[float, BuildUpdate]]:
    """(seconds later, update) of a build whose step 2 runs 95 s."""
    clock = Clock()
    out: list[tuple[float, BuildUpdate]] = []
    last = clock.now

    def keep(update: BuildUpdate) -> None:
        nonlocal last
        out.append((clock.now - last, update))
        last = clock.now

    tracker = BuildTracker("bottle-agent-claude:4340", keep, clock=clock)
    for line, then in zip(_BUILD_OUTPUT, [0, 1, 1, 2, 20, 20, 50, 0, 5, 0], strict=True):
        clock.now += then
        tracker.feed(line)
    tracker.end(ok=True)
    return out


def _play(view: BuildView, clock: Clock) -> None:
    for later, update in _updates():
        clock.now += later
        view.build(update)


def test_plain_lines_have_a_time_each_step_and_a_sign_of_life() -> None:
    stream = io.StringIO()
    console = Console(file=stream, width=80, force_terminal=False)
    clock = Clock()
    view = BuildView(
        console, clock=clock, wall=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), every=15
    )
    _play(view, clock)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "03:04:05 Step 1/3 : FROM bottle-agent-shell:abc"
    assert "03:04:05   done in 3.0s" in lines
    assert "03:04:05 Step 2/3 : RUN npm install -g @anthropic-ai/claude-code" in lines
    # While the long step runs, its last line now and then, with the step's time so far.
    assert "03:04:05   … 20.0s:  ---> Running in 5678" in lines
    assert "03:04:05   … 40.0s: added 1 package in 3s" in lines
    assert "03:04:05   … 1m30s: npm \\x1b]0;owned\\x07 WARN \\x1b[2Kdeprecated" in lines
    assert "03:04:05   done in 1m35s" in lines
    assert lines[-1] == "03:04:05 built bottle-agent-claude:4340 in 1m39s"
    text = stream.getvalue()
    assert "\x1b" not in text and "\x07" not in text


def test_the_live_view_keeps_a_line_per_step_and_shows_the_last_line_inert() -> None:
    stream = io.StringIO()
    console = Console(file=stream, width=80, force_terminal=True, color_system=None)
    clock = Clock()
    view = BuildView(console, clock=clock)
    seen: list[str] = []
    for later, update in _updates():
        clock.now += later
        view.build(update)
        if update.kind == "line" and update.index == 2:
            seen.append(view.current().plain)
    text = stream.getvalue()
    assert "✓ Step 1/3 : FROM bottle-agent-shell:abc 3.0s" in text
    assert "✓ Step 2/3 : RUN npm install -g @anthropic-ai/claude-code 1m35s" in text
    assert "built bottle-agent-claude:4340 in 1m39s" in text
    # The live lines: the step with its time as of now, the last output line under it.
    assert seen[1].splitlines() == [
        "  ⠿ Step 2/3 : RUN npm install -g @anthropic-ai/claude-code 40.0s",
        "    added 1 package in 3s",
    ]
    assert seen[-1].splitlines()[1] == "    npm \\x1b]0;owned\\x07 WARN \\x1b[2Kdeprecated"
    assert "\x07" not in text and "]0;owned" not in text.replace("\\x1b]0;owned", "")
    view.close()


def test_the_cli_progress_draws_builds_unless_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(output, "err", Console(file=stream, width=80, force_terminal=False))
    loud = output.Progress()
    for _later, update in _updates():
        loud.build(update)
        output.quiet_progress.build(update)
    assert (
        stream.getvalue().count("Step ") == 3 and "built bottle-agent-claude" in stream.getvalue()
    )
    before = stream.getvalue()
    for _later, update in _updates():
        output.quiet_progress.build(update)
    assert stream.getvalue() == before


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.04, "0.0s"), (4.25, "4.2s"), (187, "3m07s"), (3725, "1h02m")]
)
def test_durations_read_short(seconds: float, shown: str) -> None:
    assert duration(seconds) == shown


def test_markup_in_build_output_is_shown_as_written() -> None:
    """A Dockerfile (the agent's, for a capability) or a package may print rich markup."""
    stream = io.StringIO()
    console = Console(
        file=stream, width=200, force_terminal=True, color_system="truecolor", highlight=False
    )
    clock = Clock()
    view = BuildView(console, clock=clock)
    tracker = BuildTracker("img:[bold]x[/bold]", view.build, clock=clock)
    tracker.feed("Step 1/1 : RUN echo '[link=http://evil.example]click[/link]'")
    tracker.feed("[red]not red[/red]")
    assert "[red]not red[/red]" in view.current().plain
    tracker.end(ok=True)
    text = stream.getvalue()
    assert "[link=http://evil.example]click[/link]" in text and "\x1b]8;" not in text
    assert "built img:[bold]x[/bold] in" in text


def test_a_build_cut_short_has_its_live_view_ended_by_the_cli(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C or an error mid-build sends no ``end``: ``main`` ends the view itself."""
    from bottle_cli.app import main

    stream = io.StringIO()
    monkeypatch.setattr(output, "err", Console(file=stream, width=80, force_terminal=True))
    clock = Clock()

    def cut_short(_slug: str) -> None:
        tracker = BuildTracker("img:1", output.progress.build, clock=clock)
        tracker.feed("Step 1/2 : RUN sleep 600")
        raise KeyboardInterrupt

    monkeypatch.setattr("bottle_cli.app._open", cut_short)
    assert main(["attach", "x"]) == 130
    assert output.progress._view is None  # the live view was stopped
    shown = stream.getvalue()
    assert "Step 1/2 : RUN sleep 600" in shown
    assert shown.rindex("\x1b[?25h") > shown.index("RUN sleep 600")  # the cursor is back
