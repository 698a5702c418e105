"""The index of pending proposals: ``pending/<id>``, one empty file per pending proposal.

Pure (the standard library alone), so the operator's ``bottle queue`` finds the pending
proposals without importing the models; :class:`~bottle.proposals.queue.ProposalQueue`
keeps the index under its lock (see there for the order that survives a crash).
``pending/.complete`` says the index covers every proposal file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator
from pathlib import Path

INDEX = "pending"
COMPLETE = ".complete"
MARKER_RE = re.compile(r"^[1-9][0-9]{0,8}$")
ID_FILE_RE = re.compile(r"^([1-9][0-9]{0,8})\.json$")


@contextlib.contextmanager
def open_index(directory: Path, *, create: bool = False) -> Iterator[int | None]:
    """A descriptor of ``<directory>/pending/`` (``None`` if absent), never through a link.

    The directory is shared with the sidecar: a link planted in place of ``pending`` must
    not make the host list or unlink files elsewhere.
    """
    index = directory / INDEX
    if create:
        with contextlib.suppress(FileExistsError):
            os.mkdir(index, 0o755)
    try:
        fd = os.open(index, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        yield None
        return
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def indexed_pending(directory: Path) -> list[int] | None:
    """Ids the index marks pending, or ``None`` when there is no complete index."""
    with open_index(directory) as fd:
        if fd is None:
            return None
        names = os.listdir(fd)
    if COMPLETE not in names:
        return None
    return sorted(int(name) for name in names if MARKER_RE.match(name))


def proposal_ids(directory: Path) -> list[int]:
    """Every ``<id>.json`` in the directory, in id order."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(m.group(1)) for name in names if (m := ID_FILE_RE.match(name)))
