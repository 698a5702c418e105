"""The attended session: ``bottle start reviewer`` on a real terminal, the real Claude CLI.

The CLI runs on a pty of its own (its controlling terminal, as in a shell) and hands it to
``claude`` in the bottle; the test is the human at the keyboard. It reads the screen with a
bounded reader (every wait has a deadline), types, and checks what a person would see:
no first-start dialog, the fake's answer, Claude's own Ctrl-C, a clean exit that leaves
the instance ``finished``, nothing behind and the terminal as it was. Home, fake API and
images are those of test_claude.py (the images are cached by the hash of their inputs).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.integration import test_claude as shared
from tests.integration.conftest import cli, labelled
from tests.integration.fakeapi import FakeAPI
from tests.integration.test_claude import SCRIPT, _conversation, _slugs

pytestmark = pytest.mark.docker

# test_claude.py's module fixtures: the same home, fake API and key (one each per module).
home = shared.home
workdir = shared.workdir
fake = shared.fake
env = shared.env

#: Makes the pty the controlling terminal of the session it starts, then becomes ``argv``
#: (a launcher, not a preexec_fn: that is unsafe with the reader thread running).
_CONTROLLING = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)

ATTENDED_SCRIPT: dict[str, Any] = {
    "anthropic": {
        **SCRIPT["anthropic"],
        "conversations": [
            # One conversation, two turns: the second prompt continues the first's.
            {
                "match": "ATTENDED-ONE",
                "turns": [
                    {"text": "the fake answers on the tty"},
                    {"text": "still here after ctrl-c"},
                ],
            },
            # The same answer when the Ctrl-C test opens the conversation (run alone).
            {"match": "ATTENDED-TWO", "turns": [{"text": "still here after ctrl-c"}]},
            *SCRIPT["anthropic"]["conversations"],
        ],
    }
}

#: What each first-start dialog of Claude Code says (2.1.x); none may come up in a bottle.
DIALOGS = {
    "theme / onboarding": ["Choose the text style", "Let's get started", "Dark mode"],
    "login": ["Select login method", "Anthropic Console account"],
    "folder trust": ["trust the files in this folder", "Do you trust", "Yes, proceed"],
    "api key": ["Detected a custom API key", "use this API key"],
    "bypass permissions": ["Bypass Permissions mode", "Yes, I accept", "No, exit"],
    "auto mode offer": ["Make auto mode your default", "keep bypass permissions"],
}
COLUMNS = 120
#: Claude's input prompt is up: its mode line under the input box.
PROMPT = r"bypass permissions on"

_ANSI = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")


class Terminal:
    """A process on a pty: what it has written so far, and waits on it with deadlines."""

    def __init__(self, argv: list[str], *, cwd: Path, env: dict[str, str]) -> None:
        self.master, slave = os.openpty()
        # A real terminal's size: Claude's UI lays itself out by it.
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, COLUMNS, 0, 0))
        self.cooked = termios.tcgetattr(slave)
        self._slave = slave
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CONTROLLING, *argv],
            cwd=cwd,
            env=env,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            # Its own session with the pty as controlling terminal, so ^C at the keyboard
            # is the terminal's (the line discipline's) business, as in a shell.
            start_new_session=True,
        )
        self._raw = bytearray()
        self._lock = threading.Lock()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # EIO: every writer closed the pty
                return
            if not chunk:
                return
            with self._lock:
                self._raw += chunk

    def text(self, since: int = 0) -> str:
        """The screen's text (escape sequences out, whitespace runs as one space)."""
        with self._lock:
            raw = bytes(self._raw[since:])
        plain = _ANSI.sub(b" ", raw).decode(errors="replace")
        return re.sub(r"\s+", " ", plain)

    def mark(self) -> int:
        with self._lock:
            return len(self._raw)

    def expect(self, pattern: str, *, since: int = 0, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.text(since)
            if re.search(pattern, text):
                return text
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(
            f"{pattern!r} not on screen after {timeout}s (rc {self.proc.poll()}):\n"
            f"{self.text(since)[-3000:]}"
        )

    def resize(self, rows: int, cols: int) -> None:
        """As a terminal window does: the kernel signals the pty's foreground group."""
        fcntl.ioctl(self.master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))

    def type(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout=5)
        for fd in (self.master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)


def _instance(env: dict[str, str], workdir: Path, slug: str) -> dict[str, Any]:
    done = cli("ls", "--json", cwd=workdir, env_extra=env)
    assert done.returncode == 0, done.stderr
    (row,) = [r for r in json.loads(done.stdout) if r["slug"] == slug]
    return row


def _start(workdir: Path, env: dict[str, str]) -> Terminal:
    return Terminal(
        [sys.executable, "-m", "bottle_cli", "start", "reviewer"],
        cwd=workdir,
        env={**os.environ, **env, "TERM": "xterm-256color"},
    )


def _cleanup(home: Path, workdir: Path, env: dict[str, str], before: set[str]) -> None:
    """A session the test did not end takes its instance down with it."""
    for slug in _slugs(home) - before:
        if labelled("container", slug):
            cli("stop", slug, cwd=workdir, env_extra=env)


def _rule(screen: str) -> int:
    """The width of the last horizontal rule Claude drew (its input box's edge)."""
    rules = re.findall("─+", screen)
    return len(rules[-1]) if rules else 0


def _dialogs(screen: str) -> list[str]:
    return [
        f"{name}: {text!r}" for name, texts in DIALOGS.items() for text in texts if text in screen
    ]


def _ended_clean(term: Terminal, env: dict[str, str], workdir: Path, slug: str) -> None:
    assert term.wait(timeout=120) == 0, term.text()[-3000:]
    row = _instance(env, workdir, slug)
    assert row["status"] == "finished", row
    assert labelled("container", slug) == [] and labelled("network", slug) == []
    # docker exec gave the terminal back as it found it (echo, line editing, signals).
    assert termios.tcgetattr(term._slave) == term.cooked


@pytest.fixture(scope="module")
def session(
    home: Path, workdir: Path, fake: FakeAPI, env: dict[str, str]
) -> Iterator[tuple[Terminal, str]]:
    """``bottle start reviewer`` on a pty, up to Claude's input prompt, for the module."""
    fake.set_script(ATTENDED_SCRIPT)
    before = _slugs(home)
    term = _start(workdir, env)
    try:
        term.expect(PROMPT, timeout=300)
        (slug,) = _slugs(home) - before
        yield term, slug
    finally:
        term.close()
        _cleanup(home, workdir, env, before)


def test_first_start_goes_straight_to_work(session: tuple[Terminal, str], fake: FakeAPI) -> None:
    term, _slug = session
    mark = term.mark()
    term.type("ATTENDED-ONE what is here?")
    term.expect("ATTENDED-ONE what is here", since=mark, timeout=30)
    term.type("\r")
    term.expect("the fake answers on the tty", since=mark)
    (turn,) = _conversation(fake, "ATTENDED-ONE")
    assert "careful code reviewer" in json.dumps(turn["body"]["system"])
    # Claude drew its input box across the terminal's width: docker exec passed the size on.
    assert _rule(term.text()) == COLUMNS, term.text()[-3000:]
    # Every dialog of a first start would have come up by now (the auto-mode offer comes
    # after the prompt is drawn): none did, on the whole screen so far.
    assert _dialogs(term.text()) == [], term.text()[-3000:]


def test_ctrl_c_at_the_prompt_is_claudes(
    session: tuple[Terminal, str], env: dict[str, str], workdir: Path
) -> None:
    """Claude takes one Ctrl-C at an empty prompt as "press it again to exit" and stays:
    the byte reaches it through the TTY, bottle neither dies nor preserves the instance."""
    term, slug = session
    mark = term.mark()
    term.type("\x03")
    term.expect("Press Ctrl-C again to exit", since=mark, timeout=30)
    assert term.proc.poll() is None
    row = _instance(env, workdir, slug)
    assert row["status"] == "running", row
    # And the conversation goes on.
    mark = term.mark()
    term.type("ATTENDED-TWO still there?")
    term.expect("ATTENDED-TWO still there", since=mark, timeout=30)
    term.type("\r")
    term.expect("still here after ctrl-c", since=mark)


def test_a_resized_terminal_reaches_claude(session: tuple[Terminal, str]) -> None:
    term, _slug = session
    mark = term.mark()
    term.resize(30, 90)
    wait_for(lambda: _rule(term.text(mark)) == 90 or None, 30, "Claude redrawn 90 wide")


def test_exit_finishes_the_instance_and_leaves_nothing(
    session: tuple[Terminal, str], env: dict[str, str], workdir: Path
) -> None:
    term, slug = session
    mark = term.mark()
    term.type("/exit")
    term.expect("/exit", since=mark, timeout=30)
    term.type("\r")
    _ended_clean(term, env, workdir, slug)


@pytest.mark.parametrize(("key", "name"), [("\x03", "Ctrl-C"), ("\x04", "Ctrl-D")])
def test_the_key_twice_ends_the_session_finished(
    home: Path, workdir: Path, fake: FakeAPI, env: dict[str, str], key: str, name: str
) -> None:
    """Twice at an empty prompt is Claude's own way out: a clean exit, so bottle finishes
    the instance (an interrupt of bottle itself would have preserved it)."""
    fake.set_script(ATTENDED_SCRIPT)
    before = _slugs(home)
    term = _start(workdir, env)
    try:
        term.expect(PROMPT, timeout=300)
        (slug,) = _slugs(home) - before
        mark = term.mark()
        term.type(key)
        term.expect(f"Press {name} again to exit", since=mark, timeout=30)
        term.type(key)
        _ended_clean(term, env, workdir, slug)
        assert "preserved" not in term.text(mark)
    finally:
        term.close()
        _cleanup(home, workdir, env, before)


def test_ctrl_c_while_starting_is_bottles_and_leaves_nothing(
    home: Path, workdir: Path, fake: FakeAPI, env: dict[str, str]
) -> None:
    """Before Claude has the terminal it is still cooked: Ctrl-C is SIGINT to bottle, which
    takes what it started down again and records the start as interrupted (rc 130)."""
    before = _slugs(home)
    term = _start(workdir, env)
    try:
        term.expect("starting", timeout=120)
        term.type("\x03")
        assert term.wait(timeout=120) == 130, term.text()[-3000:]
        (slug,) = _slugs(home) - before
        row = _instance(env, workdir, slug)
        assert (row["status"], row["error"], row["running"]) == ("failed", "interrupted", 0), row
        assert labelled("container", slug) == [] and labelled("network", slug) == []
        assert "Traceback" not in term.text()
        assert termios.tcgetattr(term._slave) == term.cooked
    finally:
        term.close()
        _cleanup(home, workdir, env, before)
