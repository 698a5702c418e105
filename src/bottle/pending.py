"""Pending proposals of this home's live instances, from the state directories alone.

``bottle queue`` runs often (``--watch`` every second) and must answer fast with thousands
of decided proposals on disk, so it asks no engine: ``docker compose ls`` alone takes about
200 ms here, and its client library as long to import. An instance counts as live when its
``metadata.json`` says ``running``, the process that owns it (if any) still runs, and its
supervise sidecar says it listens (``status/supervise.json``, removed when it stops): a
pending proposal of a stopped or crashed instance is not shown as something to decide.

Every file here was written by an instance (the proposals by its supervise sidecar), so
each is read with a size bound and a bad one is reported, never fatal to the rest.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bottle import safefs
from bottle.proposals.index import indexed_pending, proposal_ids
from bottle.proposals.rows import Row, read_row
from bottle.settings import Settings

if TYPE_CHECKING:
    from bottle.proposals import Proposal

_METADATA_MAX_BYTES = 1024 * 1024
#: A zero-byte ``<id>.json`` younger than this is a create in flight, not a problem.
_RESERVED_GRACE_S = 5.0


@dataclass(frozen=True)
class Pending:
    """A pending proposal and the running instance it belongs to."""

    slug: str
    proposal: Proposal


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def live(state_dir: Path) -> bool:
    """Whether the instance of ``state_dir`` runs now, by its own files (no engine)."""
    try:
        meta = json.loads(
            safefs.read_regular(state_dir / "metadata.json", max_bytes=_METADATA_MAX_BYTES)
        )
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict) or meta.get("status") != "running":
        return False
    pid = meta.get("pid")
    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0 and not _pid_alive(pid):
        return False
    return (state_dir / "status" / "supervise.json").is_file()


def live_instances(settings: Settings | None = None) -> Iterator[tuple[str, Path]]:
    """``(slug, state dir)`` of every live instance of this home, by slug."""
    settings = Settings.default() if settings is None else settings
    root = settings.state_root
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return
    for slug in names:
        state_dir = root / slug
        if not slug.startswith(".") and state_dir.is_dir() and live(state_dir):
            yield slug, state_dir


def pending_proposals(settings: Settings | None = None) -> tuple[list[Pending], list[str]]:
    """Pending proposals of every live instance, by slug, and the problems met.

    Each is read with every check of the models (what ``approve`` and the view need). A
    proposal file that cannot be read is named in the problems and otherwise skipped:
    one bad file never hides the rest of the queue.
    """
    from bottle.proposals import ProposalQueue

    found: list[Pending] = []
    problems: list[str] = []
    for slug, state_dir in live_instances(settings):
        listing = ProposalQueue(state_dir / "proposals").list("pending")
        problems += [f"{slug}: {problem}" for problem in listing.problems]
        found += [Pending(slug, proposal) for proposal in listing.proposals]
    return found, problems


def pending_rows(settings: Settings | None = None) -> tuple[list[tuple[str, Row]], list[str]]:
    """As :func:`pending_proposals`, as ``(slug, row)`` for ``bottle queue``, without models."""
    import time

    found: list[tuple[str, Row]] = []
    problems: list[str] = []
    for slug, state_dir in live_instances(settings):
        directory = state_dir / "proposals"
        ids = indexed_pending(directory)
        for proposal_id in proposal_ids(directory) if ids is None else ids:
            path = directory / f"{proposal_id}.json"
            try:
                stat = path.stat()
                if stat.st_size == 0:
                    if time.time() - stat.st_mtime > _RESERVED_GRACE_S:
                        problems.append(f"{slug}: {path}: empty file (an interrupted create?)")
                    continue
                row = read_row(path, proposal_id)
            except FileNotFoundError:
                continue  # a marker made just before its file, or left by a crash
            except (OSError, ValueError) as exc:
                problems.append(f"{slug}: {path}: {_short(exc)}")
                continue
            if row is not None:
                found.append((slug, row))
    return found, problems


def _short(exc: BaseException) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg} at line {exc.lineno})"
    return str(exc) or type(exc).__name__
