"""Host-side reads and writes inside directories the agent or a sidecar can write.

The host runs as the user (often root); the agent can put a symlink, a FIFO or a device
where the host expects a file, or a symlinked directory above it. Every open here:

* walks from a trusted ``root`` (a directory bottle made, e.g. the state dir) one component
  at a time with ``O_NOFOLLOW | O_DIRECTORY``, so no link is followed, the last one included;
* refuses anything that is not a regular file, checked with ``lstat`` before the open (a
  device must not even be opened) and ``fstat`` after it (the entry may have been swapped);
* opens with ``O_NONBLOCK`` so a FIFO swapped in between cannot hang the open, and
  ``O_CLOEXEC`` so nothing leaks into child processes;
* bounds what it reads.

``UnsafeFileError`` is an ``OSError``, so callers that already handle unreadable files
handle these too.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

#: Default bound of ``read_regular``: status files, proposals and the like are far smaller.
DEFAULT_MAX_BYTES = 16 * 1024 * 1024


class UnsafeFileError(OSError):
    """A path the host was about to use is a link, FIFO, device, or too large."""


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def _parts(path: Path, root: Path | None) -> tuple[Path, list[str], str]:
    """``(trusted root, directories to walk, final name)`` for ``path``."""
    path = Path(path)
    if root is None:
        return path.parent, [], path.name
    root = Path(root)
    try:
        relative = path.relative_to(root) if path.is_absolute() else path
    except ValueError:
        raise UnsafeFileError(errno.EINVAL, f"{path} is not inside {root}") from None
    names = list(relative.parts)
    if not names or any(n in ("", ".", "..") for n in names):
        raise UnsafeFileError(errno.EINVAL, f"{path}: not a plain path under {root}")
    return root, names[:-1], names[-1]


def open_dir(root: Path, names: list[str]) -> int:
    """A descriptor of ``root/names...``, following no link below ``root``."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    walked = Path(root)
    for name in names:
        walked = walked / name
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeFileError(
                    exc.errno, f"{walked} is not a directory (a link is never followed)"
                ) from None
            raise
        finally:
            os.close(fd)
        fd = child
    return fd


def _open_regular(path: Path, flags: int, *, root: Path | None, mode: int = 0o644) -> int:
    base, dirs, name = _parts(path, root)
    dir_fd = open_dir(base, dirs)
    try:
        try:
            before = os.lstat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            if not flags & os.O_CREAT:
                raise
            before = None
        if before is not None and not stat.S_ISREG(before.st_mode):
            raise UnsafeFileError(errno.EPERM, f"{path} is {_kind(before.st_mode)}; refused")
        try:
            fd = os.open(name, flags | _FILE_FLAGS, mode, dir_fd=dir_fd)
        except OSError as exc:
            # ELOOP: swapped for a link; ENXIO: a FIFO with no reader, opened for writing.
            if exc.errno in (errno.ELOOP, errno.ENXIO):
                raise UnsafeFileError(exc.errno, f"{path} is not a regular file; refused") from None
            raise
    finally:
        os.close(dir_fd)
    # Only the kind is checked again, not the inode: a writer that renames a new file over
    # this one (``atomic_write``) swaps the inode between the two calls, and one regular
    # file in place of another gives nothing that the first would not have.
    after = os.fstat(fd)
    if not stat.S_ISREG(after.st_mode):
        os.close(fd)
        raise UnsafeFileError(
            errno.EPERM, f"{path} became {_kind(after.st_mode)} while being opened; refused"
        )
    return fd


def open_append_regular(path: Path, *, root: Path | None = None) -> BinaryIO:
    """``path`` opened to append (created 0644 if missing); never a link, FIFO or device."""
    fd = _open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, root=root)
    return os.fdopen(fd, "ab")


def open_read_regular(path: Path, *, root: Path | None = None) -> BinaryIO:
    """``path`` opened to read (a stream, e.g. a log to follow); never a link, FIFO or device."""
    fd = _open_regular(path, os.O_RDONLY, root=root)
    return os.fdopen(fd, "rb")


def read_regular(
    path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, root: Path | None = None
) -> bytes:
    """The whole of a regular file of at most ``max_bytes``; ``UnsafeFileError`` otherwise."""
    with open_read_regular(path, root=root) as handle:
        size = os.fstat(handle.fileno()).st_size
        if size > max_bytes:
            raise UnsafeFileError(
                errno.EFBIG, f"{path} is {size} bytes, more than the {max_bytes} allowed"
            )
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafeFileError(errno.EFBIG, f"{path} grew past {max_bytes} bytes while read")
    return data


def iter_regular(directory: Path, *, root: Path | None = None) -> Iterator[str]:
    """Names of the regular files directly in ``directory`` (links and the rest skipped)."""
    base, dirs, name = _parts(directory, root)
    fd = open_dir(base, [*dirs, name])
    try:
        with os.scandir(fd) as entries:
            names = sorted(e.name for e in entries if e.is_file(follow_symlinks=False))
    finally:
        os.close(fd)
    yield from names


#: Directories below a copied tree's top that ``copy_tree`` enters at the most.
COPY_MAX_DEPTH = 64


def copy_tree(
    source: Path, target: Path, *, root: Path | None = None, max_bytes: int | None = None
) -> list[str]:
    """Copy ``source`` to a new ``target``: directories, regular files, links as links.

    Nothing is followed and nothing but regular files is opened; FIFOs, sockets and
    devices are left out, and so are directories deeper than ``COPY_MAX_DEPTH`` and files
    that would take the copy past ``max_bytes`` (by their size: a sparse file counts
    whole). Returns what was left out or could not be read.
    """
    base, dirs, name = _parts(source, root)
    src_fd = open_dir(base, [*dirs, name])
    skipped: list[str] = []
    budget = [max_bytes if max_bytes is not None else -1]
    try:
        _copy_dir(src_fd, Path(source), Path(target), skipped, budget=budget, depth=0)
    finally:
        os.close(src_fd)
    return skipped


def _copy_dir(
    src_fd: int, source: Path, target: Path, skipped: list[str], *, budget: list[int], depth: int
) -> None:
    target.mkdir(mode=0o755)
    with os.scandir(src_fd) as it:
        entries = sorted(it, key=lambda e: e.name)
    for entry in entries:
        where = source / entry.name
        try:
            info = entry.stat(follow_symlinks=False)
            mode = info.st_mode
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(entry.name, dir_fd=src_fd), target / entry.name)
            elif stat.S_ISDIR(mode) and depth >= COPY_MAX_DEPTH:
                skipped.append(f"{where} (deeper than {COPY_MAX_DEPTH} directories)")
            elif stat.S_ISDIR(mode):
                child = os.open(entry.name, _DIR_FLAGS, dir_fd=src_fd)
                try:
                    _copy_dir(
                        child, where, target / entry.name, skipped, budget=budget, depth=depth + 1
                    )
                finally:
                    os.close(child)
            elif stat.S_ISREG(mode) and budget[0] >= 0 and info.st_size > budget[0]:
                skipped.append(f"{where} ({info.st_size} bytes: past the copy's bound)")
            elif stat.S_ISREG(mode):
                if budget[0] >= 0:
                    budget[0] -= info.st_size
                _copy_file(src_fd, entry.name, target / entry.name)
            else:
                skipped.append(f"{where} ({_kind(mode)})")
        except OSError as exc:
            skipped.append(f"{where} ({exc.strerror or exc})")


def _copy_file(dir_fd: int, name: str, target: Path) -> None:
    fd = os.open(name, os.O_RDONLY | _FILE_FLAGS, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafeFileError(errno.EPERM, "not a regular file")
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        with os.fdopen(out, "wb") as handle:
            while chunk := os.read(fd, 1024 * 1024):
                handle.write(chunk)
    finally:
        os.close(fd)
