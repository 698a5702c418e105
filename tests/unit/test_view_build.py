"""``bottle view`` approving a capability-block: the exact Dockerfile, numbered and inert,
then y/N, as ``bottle approve`` asks; and agent text in the list and the detail pane inert.

In process (textual's pilot) over an instance on the fake engine, which records each build.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from bottle.bottle import Bottle
from bottle.instance import Instance
from bottle.operator import proposal_queue
from bottle.settings import Settings
from bottle_cli.view import ConfirmScreen, QueueView
from tests.conftest import user_owned
from tests.fakes import FakeEngine
from tests.unit.test_view_push import Recorded, answered_only_yes, press, until

#: What a terminal would act on: a line erased and the cursor moved up (to paint a harmless
#: line over the real one), a right-to-left override, and an OSC never terminated (which
#: swallows everything after it on a terminal that honours it).
PAINT = "\x1b[2K\x1b[1A\rRUN apt-get install -y jq"
BIDI = "\u202e;lmth.x lruc"
OSC = "\x1b]8;;https://evil.example/"
JUSTIFICATION = f"needs jq {PAINT} {BIDI} {OSC}"
#: A Dockerfile may hold no control character at all (filing and reading refuse one:
#: tests/unit/test_proposals.py), but invisible format characters pass: a bidi override, a
#: zero-width space, an isolate.
DOCKERFILE = f"FROM ${{BOTTLE_AGENT_IMAGE}}\nRUN curl {BIDI}\nRUN true\u200b \u2066x\u2069\n"
#: Characters that must never reach the screen raw.
RAW = "\x1b\x07\r\x9b\u202e\u200b\u2066\u2069"


@pytest.fixture
def running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Instance, Settings, FakeEngine]:
    (tmp_path / "home").mkdir()
    (tmp_path / "repo").mkdir()
    user_owned(tmp_path / "repo")
    settings = Settings(home=tmp_path / "home")
    engine = FakeEngine()
    bottle = Bottle("shell", cwd=tmp_path / "repo", settings=settings, environ={}, engine=engine)
    instance = bottle.start()
    state = instance.state.path
    (state / "status").mkdir(exist_ok=True)
    (state / "status" / "supervise.json").write_text("{}")  # as a live instance's
    opened = Instance.open.__func__  # type: ignore[attr-defined]

    def open_on_fake(cls: type[Instance], /, slug: str, **kwargs: Any) -> Instance:
        # The view opens the instance in its worker: on the same fake engine, so that a
        # build it would start is recorded instead of reaching a real Docker.
        return opened(cls, slug, **{**kwargs, "engine": engine})  # type: ignore[no-any-return]

    monkeypatch.setattr(Instance, "open", classmethod(open_on_fake))
    return instance, settings, engine


def ask(instance: Instance) -> int:
    agent = instance.metadata.images["agent"]
    queue = proposal_queue(instance)
    return queue.create("capability-block", {"dockerfile": DOCKERFILE}, JUSTIFICATION,
                        base_ref=agent).id  # fmt: skip


def builds(engine: FakeEngine) -> int:
    return engine.calls.count("ensure_image")


def test_the_view_shows_the_exact_dockerfile_inert_and_builds_only_on_yes(
    running: tuple[Instance, Settings, FakeEngine],
) -> None:
    instance, settings, engine = running
    asked = ask(instance)
    queue = proposal_queue(instance)
    before = builds(engine)
    text = asyncio.run(
        answered_only_yes(
            settings,
            lambda: queue.get(asked).status == "pending" and builds(engine) == before,
            lambda: queue.get(asked).status == "approved",
        )
    )
    assert Recorded.views[-1].return_code is None  # no worker failed after the quit (1)
    assert not any(c in text for c in RAW), repr(text)
    lines = text.splitlines()
    # Every line of the Dockerfile, numbered, each invisible character written out; the
    # justification's escapes too: a painted line is seen for what it is.
    assert lines[1:4] == [
        "1 | FROM ${BOTTLE_AGENT_IMAGE}",
        "2 | RUN curl \\u202e;lmth.x lruc",
        "3 | RUN true\\u200b \\u2066x\\u2069",
    ]
    assert lines[-1].startswith("Justification: needs jq \\x1b[2K\\x1b[1A\\rRUN apt-get")
    assert lines[-1].endswith("\\u202e;lmth.x lruc \\x1b]8;;https://evil.example/")
    assert builds(engine) == before + 1


def test_the_list_and_the_detail_show_agent_text_inert(
    running: tuple[Instance, Settings, FakeEngine],
) -> None:
    instance, settings, _ = running
    ask(instance)
    cells: list[str] = []
    detail: list[str] = []

    async def drive() -> None:
        app = QueueView(settings)
        async with app.run_test(size=(160, 50)) as pilot:
            await until(pilot, lambda: len(app.items) == 1, "the proposal")
            table = app.query_one("DataTable")
            cells.extend(str(cell) for cell in table.get_row_at(0))  # type: ignore[attr-defined]
            detail.append(str(app.query_one("#detail").render()))

    asyncio.run(drive())
    for shown in [*cells, *detail]:
        assert not any(c in shown for c in RAW), repr(shown)
    # The cell shows the first line (a carriage return ends one), its escapes written out.
    assert cells[-1] == "needs jq \\x1b[2K\\x1b[1A…"
    [pane] = detail
    # One line, as filed: its carriage return starts no line of the pane.
    assert "# needs jq \\x1b[2K\\x1b[1A\\rRUN apt-get install -y jq \\u202e" in pane
    assert "\\u202e;lmth.x lruc" in pane and "\\x1b]8;;https://evil.example/" in pane
    assert "RUN true\\u200b \\u2066x\\u2069" in pane


def test_a_proposal_file_with_escapes_in_its_dockerfile_is_never_offered(
    running: tuple[Instance, Settings, FakeEngine],
) -> None:
    # Filing refuses control characters in a Dockerfile; a file changed on disk after is
    # refused on reading too: the view names the problem, inert, and offers nothing to build.
    instance, settings, engine = running
    queue = proposal_queue(instance)
    asked = ask(instance)
    data = json.loads(queue.path(asked).read_text())
    data["payload"]["dockerfile"] = f"FROM ${{BOTTLE_AGENT_IMAGE}}\n{PAINT}\nRUN true {OSC}\n"
    queue.path(asked).write_text(json.dumps(data))
    before = builds(engine)
    status: list[str] = []

    async def drive() -> None:
        app = Recorded(settings)
        async with app.run_test(size=(160, 50)) as pilot:
            await until(
                pilot, lambda: "pending" in str(app.query_one("#status").render()), "the count"
            )
            status.append(str(app.query_one("#status").render()))
            assert app.items == {}
            press(pilot, "a")
            # An approval asks at once (push_screen in the key's action): once the action
            # ran, a question it raised would be up.
            await until(pilot, lambda: app.approvals == 1, "the key handled")
            await app.workers.wait_for_complete()
            assert not isinstance(app.screen, ConfirmScreen) and not app.busy

    asyncio.run(drive())
    [line] = status
    assert "proposals/1.json" in line and "the character U+001B" in line
    assert line.startswith("0 pending") and not any(c in line for c in RAW), repr(line)
    assert builds(engine) == before and queue.path(asked).is_file()
