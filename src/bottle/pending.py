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
from dataclasses import dataclass
from pathlib import Path

from bottle import safefs
from bottle.proposals import Proposal, ProposalQueue
from bottle.settings import Settings

_METADATA_MAX_BYTES = 1024 * 1024


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


def pending_proposals(settings: Settings | None = None) -> tuple[list[Pending], list[str]]:
    """Pending proposals of every live instance, by slug, and the problems met.

    A proposal file that cannot be read is named in the problems and otherwise skipped:
    one bad file never hides the rest of the queue.
    """
    settings = Settings.default() if settings is None else settings
    root = settings.state_root
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return [], []
    found: list[Pending] = []
    problems: list[str] = []
    for slug in names:
        state_dir = root / slug
        if slug.startswith(".") or not state_dir.is_dir() or not live(state_dir):
            continue
        listing = ProposalQueue(state_dir / "proposals").list("pending")
        problems += [f"{slug}: {problem}" for problem in listing.problems]
        found += [Pending(slug, proposal) for proposal in listing.proposals]
    return found, problems
