"""What an operator ran in an instance: lines appended to files of its transcript.

``bottle exec`` records its command words and exit code in ``transcript/exec.log`` (never
an environment value). The agent writes that directory: a link or FIFO it left there is
refused, never followed (the host may run as root) and never waited on. Light on purpose:
``bottle exec``'s quick path records through here with no model library loaded.
"""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bottle import safefs
from bottle.errors import StateError
from bottle.files import now

#: The transcript file of what ``bottle exec`` ran, and how it ended.
EXEC_LOG = "exec.log"


def append(state_path: Path, name: str, text: str) -> None:
    """Append ``text`` to ``transcript/<name>`` of the state directory at ``state_path``."""
    path = state_path / "transcript" / name
    try:
        with safefs.open_append_regular(path, root=state_path) as handle:
            handle.write(text.encode("utf-8"))
    except OSError as exc:
        raise StateError(
            f"not written to {path}: {exc.strerror or exc}",
            hint="The agent replaced a transcript file; look at what it put there.",
        ) from None


def recorded(state_path: Path, argv: Sequence[str], service: str, run: Callable[[], int]) -> int:
    """``run()`` (``argv`` in ``service``), its command and exit code in ``exec.log``.

    A log the agent spoiled (a link, a FIFO) is warned about and does not stop the command.
    """
    _try(state_path, f"{now().isoformat()} [{service}] $ {shlex.join(argv)}\n")
    code: int | str = "interrupted"
    try:
        code = run()
        return code
    finally:
        _try(state_path, f"{now().isoformat()} [{service}] exit {code}\n")


def _try(state_path: Path, line: str) -> None:
    try:
        append(state_path, EXEC_LOG, line)
    except StateError as exc:
        sys.stderr.write(f"warning: {exc.message}\n")
