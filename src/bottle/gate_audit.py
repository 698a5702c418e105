"""Every push through git-gate as an entry of the host's audit log.

The gate cannot write the audit log (it is the host's, and a sidecar must not hold its
lock or its anchor), so it writes each push as a :class:`GateRecord` with an ``id`` to
``logs/git-gate.jsonl`` and the host imports what it has not imported yet: whenever the log
is read through :func:`bottle.operator.audit_log` (``bottle audit verify``), before every
operator change, and at stop. Importing is idempotent by that id, under its own lock.

The gate's log sits in a directory a sidecar writes: it is read with :mod:`bottle.safefs`
(no links, bounded) and every line is validated; a line that is not a push record is
skipped, never trusted.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from pydantic import ValidationError

from bottle import layout, safefs
from bottle.audit import AuditLog, canonical
from bottle.errors import StateError
from bottle.files import locked
from bottle.runtime.git_gate import ALLOW_DIR, LOG_FILE, NAME, GateRecord, allowance_name
from bottle.state import StateDir

ACTION = "git-push"
LOCK = ".git-gate-import.lock"
MAX_LOG_BYTES = 64 * 1024 * 1024


def push_records(logs: Path) -> list[GateRecord]:
    """The push records of the gate's log in ``logs`` (none if there is no log yet)."""
    try:
        raw = safefs.read_regular(logs / LOG_FILE, max_bytes=MAX_LOG_BYTES, root=logs.parent)
    except FileNotFoundError:
        return []
    records = []
    for line in raw.split(b"\n"):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            if isinstance(data, dict) and "id" not in data:
                # Written by a gate older than ids: the line itself names it, once.
                data["id"] = hashlib.sha256(line).hexdigest()[:32]
            record = GateRecord.model_validate(data)
        except (ValueError, ValidationError):
            continue
        if record.op == "push":
            records.append(record)
    return records


def refused_push(state_dir: Path, remote: str, ref: str, commit: str) -> GateRecord | None:
    """The gate's own record of its latest refusal, for what the scan found, of a push of
    ``commit`` to ``ref`` of ``remote``: what a ``git-push-allow`` is decided on (never the
    agent's account of it). ``None`` when the gate never refused such a push."""
    found = None
    for record in push_records(state_dir / layout.LOGS.name):
        if (
            record.remote == remote
            and record.decision == "refuse"
            and record.scan == "findings"
            and record.findings
            and any(u.ref == ref and u.new == commit for u in record.refs)
        ):
            found = record
    return found


def imported_ids(log: AuditLog) -> set[str]:
    ids = set()
    for entry in log.entries():
        if entry.action == ACTION and entry.after:
            try:
                ids.add(str(json.loads(entry.after)["id"]))
            except (ValueError, KeyError, TypeError):
                continue
    return ids


def entry_text(record: GateRecord) -> str:
    """The audited form of a push: every field the gate logged, as canonical JSON."""
    return canonical(record.model_dump(mode="json")).decode() + "\n"


def import_pushes(state_dir: Path) -> int:
    """Append the gate's pushes not yet in ``state_dir``'s audit log; how many were added.

    ``StateError`` when the audit log is damaged (nothing is appended to a broken chain).
    """
    logs = state_dir / layout.LOGS.name
    with locked(state_dir / LOCK, wait_s=30.0):
        records = push_records(logs)
        if not records:
            return 0
        log = AuditLog.of(StateDir(state_dir))
        done = imported_ids(log)
        added = 0
        for record in records:
            if record.id in done:
                continue
            log.append(
                who=NAME,
                action=ACTION,
                tool=NAME,
                after=entry_text(record),
                diff="",
                reason=f"{record.decision} push to {record.remote}"
                + (f": {record.reason}" if record.reason else ""),
            )
            done.add(record.id)
            added += 1
            _retire_allowances(state_dir, record)
        return added


def _retire_allowances(state_dir: Path, record: GateRecord) -> None:
    """An allowance that let a push land upstream is gone for good, not just for this run
    of the gate (whose record of it is on a tmpfs)."""
    if not record.allowed_by or record.upstream != "ok":
        return
    allow_dir = state_dir / "live-config" / NAME / ALLOW_DIR
    for update in record.refs:
        with contextlib.suppress(OSError):
            (allow_dir / allowance_name(record.remote, update.ref, update.new)).unlink()


def try_import(state_dir: Path) -> str | None:
    """:func:`import_pushes`, for callers that go on anyway: the problem, or ``None``."""
    try:
        import_pushes(state_dir)
    except (StateError, OSError) as exc:
        return getattr(exc, "message", None) or str(exc)
    return None
