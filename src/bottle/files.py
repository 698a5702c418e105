"""The two file primitives every side shares: an atomic write and an exclusive lock.

Pure (the standard library alone), so the sidecar runtimes import them without pulling in
the host's state, plan or manifest modules.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path


def now() -> datetime:
    return datetime.now(UTC)


@contextlib.contextmanager
def locked(path: Path, *, flags: int = os.O_RDWR, wait_s: float | None = None) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); yields its descriptor.

    ``wait_s=None`` waits as long as it takes; otherwise ``TimeoutError`` after ``wait_s``.
    The lock goes with the descriptor, so a process that dies never leaves it held.
    """
    import fcntl
    import time

    # Lock files may sit in a sidecar-writable directory: never follow a link or block on a FIFO.
    fd = os.open(path, flags | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    try:
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{path} is locked") from None
                time.sleep(0.05)
        yield fd
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, *, mode: int = 0o644) -> None:
    """Write via a temp file in the same directory and rename: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), mode)  # by descriptor: the name could be swapped for a link
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
