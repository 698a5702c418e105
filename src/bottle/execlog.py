"""What an operator ran in an instance: lines appended to files of its state directory.

``bottle exec`` records its command words and exit code in ``exec.log``, ``bottle run`` in
``run.log`` (never an environment value). Both sit in the state dir's root, which is 0700
and the host's alone: in ``transcript/``, which the agent writes, it could erase or forge
the record of what the operator ran. Still opened link-safe (``bottle.safefs``, cheap): a
link or FIFO found there is refused, never followed (the host may run as root) and never
waited on. Light on purpose: ``bottle exec``'s quick path records through here with no
model library loaded.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bottle import layout, safefs
from bottle.errors import StateError
from bottle.files import now
from bottle.text import inert

#: The state dir's file of what ``bottle exec`` ran, and how it ended.
EXEC_LOG = layout.EXEC_LOG


def append(state_path: Path, name: str, text: str) -> None:
    """Append ``text`` to ``<name>`` in the root of the state directory at ``state_path``."""
    path = state_path / name
    try:
        with safefs.open_append_regular(path, root=state_path) as handle:
            handle.write(text.encode("utf-8"))
    except OSError as exc:
        raise StateError(
            f"not written to {path}: {exc.strerror or exc}",
            hint="Only bottle writes that file: look at what replaced it, and at who else "
            "can write the state directory.",
        ) from None


def entry(line: str) -> str:
    """One record: the time, then ``line`` with every newline and control character
    written out, so a command word with a newline in it cannot start a line that reads
    as another record (an ``exit 0`` that never happened)."""
    return f"{now().isoformat()} {inert(line)}\n"


def recorded(state_path: Path, argv: Sequence[str], service: str, run: Callable[[], int]) -> int:
    """``run()`` (``argv`` in ``service``), its command and exit code in ``exec.log``.

    A log the agent spoiled (a link, a FIFO) is warned about and does not stop the command.
    """
    _try(state_path, entry(f"[{service}] $ {shlex.join(argv)}"))
    code: int | str = "interrupted"
    try:
        code = run()
        return code
    finally:
        _try(state_path, entry(f"[{service}] exit {code}"))


def _try(state_path: Path, line: str) -> None:
    try:
        append(state_path, EXEC_LOG, line)
    except StateError as exc:
        sys.stderr.write(f"warning: {exc.message}\n")
