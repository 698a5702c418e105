"""``bottle view`` approving a git-push-allow: the gate's own findings first, then y/N.

In process (textual's pilot) over an instance on the fake engine with git-gate's config and
its decision log written as the gate writes them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

import pytest
from textual.pilot import Pilot

from bottle.bottle import Bottle
from bottle.instance import Instance
from bottle.operator import proposal_queue
from bottle.runtime import git_gate as gate
from bottle.runtime.git_gate import GateRecord, RefUpdate
from bottle.settings import Settings
from bottle_cli.view import ConfirmScreen, QueueView
from tests.conftest import user_owned
from tests.fakes import FakeEngine

REFUSED = "1" * 40
NEVER = "2" * 40
#: The gate's finding, with what a terminal or a markup parser would act on.
GATES_OWN = "111111111111 conf.txt:2: github-token [ghp_… (40 chars)] \x1b[2J[/]"
AGENTS_CLAIM = "only a test fixture, says the agent"


@pytest.fixture
def running(tmp_path: Path) -> tuple[Instance, Settings]:
    (tmp_path / "home").mkdir()
    (tmp_path / "repo").mkdir()
    user_owned(tmp_path / "repo")
    settings = Settings(home=tmp_path / "home")
    bottle = Bottle("shell", cwd=tmp_path / "repo", settings=settings, environ={},
                    engine=FakeEngine())  # fmt: skip
    instance = bottle.start()
    state = instance.state.path
    (state / "status").mkdir(exist_ok=True)
    (state / "status" / "supervise.json").write_text("{}")  # as a live instance's
    config = instance.state.live_config(gate.NAME)
    config.mkdir(parents=True, exist_ok=True)
    remote = gate.GateRemote(name="origin", url="git@git.test:r.git", key_ref="K")
    (config / gate.CONFIG_FILE).write_bytes(gate.GateConfig(remotes=(remote,)).to_json())
    refusal = GateRecord(
        op="push", remote="origin", decision="refuse", scan="findings", reason="secret scan",
        refs=[RefUpdate(ref="refs/heads/main", old=gate.ZERO, new=REFUSED)], findings=[GATES_OWN],
    )  # fmt: skip
    gate.write_record(refusal, {gate.LOG_ENV: str(state / "logs" / gate.LOG_FILE)})
    return instance, settings


def ask(instance: Instance, commit: str) -> int:
    fields = {"remote": "origin", "ref": "refs/heads/main", "commit": commit,
              "finding": AGENTS_CLAIM}  # fmt: skip
    return proposal_queue(instance).create("git-push-allow", fields, AGENTS_CLAIM).id


def allowances(instance: Instance) -> list[str]:
    allow = instance.state.live_config(gate.NAME) / gate.ALLOW_DIR
    return sorted(p.name for p in allow.iterdir()) if allow.is_dir() else []


class Recorded(QueueView):
    """The view, keeping every status line it showed: the refresh (every second) paints
    over the line an answer left, so a test that read the screen could miss it."""

    #: Every one made, to be checked once its event loop is closed: what a worker did after
    #: the quit (the loop's close runs it) shows only then.
    views: ClassVar[list[Recorded]] = []

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.said: list[str] = []
        self.approvals = 0

    def set_status(self, text: str) -> None:
        self.said.append(text)
        super().set_status(text)

    def left_pending(self) -> bool:
        return any("left pending" in line for line in self.said)

    def action_approve(self) -> None:
        super().action_approve()
        self.approvals += 1  # the key was handled: whatever it asks is up by now


def press(pilot: Pilot[None], key: str) -> None:
    """The key, as the terminal sends it. ``pilot.press`` waits after each key for the CPU
    to go idle (20 ms slices until one is quiet, which the view's rendering and refresh
    keep from coming: a tenth of a second a key); each test waits instead for what the
    key must show, through :func:`until`."""
    pilot.app.simulate_key(key)


async def until(pilot: Pilot[None], check: Callable[[], bool], what: str) -> None:
    """Wait until ``check()``: each turn lets every widget handle what it was sent."""
    deadline = time.monotonic() + 30
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"the view never showed {what}")
        await pilot.pause(0.005)


async def answered_only_yes(
    settings: Settings, unchanged: Callable[[], bool], done: Callable[[], bool]
) -> str:
    """Open the one proposal's question; answer n, then Esc (each must leave ``unchanged()``
    true once every worker it started ended), then y until ``done()``. The question's text;
    the view is the last of ``Recorded.views``."""
    app = Recorded(settings)
    Recorded.views.append(app)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: len(app.items) == 1, "the proposal")
        press(pilot, "a")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        assert isinstance(app.screen, ConfirmScreen)
        text = app.screen.text
        for no in ("n", "escape"):  # no: nothing is done; nor is Esc a yes
            if no == "escape":
                press(pilot, "a")
                await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            app.said.clear()
            press(pilot, no)
            await until(pilot, app.left_pending, "the answer")
            # The answer is in: anything it started runs in a worker; let it end.
            await app.workers.wait_for_complete()
            assert not isinstance(app.screen, ConfirmScreen) and not app.busy
            assert unchanged()
        press(pilot, "a")
        await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
        press(pilot, "y")
        await until(pilot, done, "the answer yes")
    return text


def test_the_view_shows_the_gates_findings_and_asks_before_a_push_goes_through(
    running: tuple[Instance, Settings],
) -> None:
    instance, settings = running
    asked = ask(instance, REFUSED)
    queue = proposal_queue(instance)
    text = asyncio.run(
        answered_only_yes(
            settings,
            lambda: queue.get(asked).status == "pending" and allowances(instance) == [],
            lambda: queue.get(asked).status == "approved",
        )
    )
    # The quit ended the view cleanly: the read the decision asks for at its end never
    # started after the quit (it would fail on the closed executor, a fatal error).
    assert Recorded.views[-1].return_code is None  # a fatal error makes it 1
    # The gate's finding, inert (no escape, no markup acted on); never the agent's claim as
    # a finding (its justification is shown, labelled so).
    assert "github-token [ghp_… (40 chars)]" in text and "\x1b" not in text
    assert "\\x1b[2J[/]" in text and f"Justification: {AGENTS_CLAIM}" in text
    assert text.count(AGENTS_CLAIM) == 1 and REFUSED in text
    assert allowances(instance) == [gate.allowance_name("origin", "refs/heads/main", REFUSED)]
    allowance = gate.Allowance.model_validate_json(
        (
            instance.state.live_config(gate.NAME) / gate.ALLOW_DIR / allowances(instance)[0]
        ).read_bytes()
    )
    assert allowance.findings == (GATES_OWN,)


def test_the_view_lets_no_push_through_that_the_gate_never_refused(
    running: tuple[Instance, Settings],
) -> None:
    instance, settings = running
    asked = ask(instance, NEVER)
    queue = proposal_queue(instance)

    async def drive() -> None:
        app = QueueView(settings)
        async with app.run_test(size=(160, 50)) as pilot:
            await until(pilot, lambda: len(app.items) == 1, "the proposal")
            press(pilot, "a")
            await until(pilot, lambda: not app.busy and "not applied" in str(
                app.query_one("#status").render()), "the refusal")  # fmt: skip
            assert not isinstance(app.screen, ConfirmScreen)

    asyncio.run(drive())
    assert queue.get(asked).status == "pending" and allowances(instance) == []


def test_a_worker_line_after_the_quit_is_dropped(running: tuple[Instance, Settings]) -> None:
    # A refresh or a decision still in its thread when q is pressed calls back into an app
    # whose widgets are being taken down: that must not turn the quit into a traceback.
    _, settings = running
    app = QueueView(settings)

    async def drive() -> None:
        async with app.run_test(size=(160, 50)) as pilot:
            shown = lambda: "pending" in str(app.query_one("#status").render())  # noqa: E731
            await until(pilot, shown, "the count")
        assert not app.is_running
        app.show([], [])
        app.set_status("applying…")
        # A read asked for then (the timer's tick, a decision's end) starts no worker: one
        # started after the quit's cancel fails on the executor the loop's close shuts.
        workers = len(app.workers)
        app.refresh_while_running()
        assert len(app.workers) == workers

    asyncio.run(drive())
    assert app.return_code is None  # a worker's failure would have made it 1
