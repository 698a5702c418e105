"""Every push through git-gate as an entry of the host's audit log.

The gate cannot write the audit log (it is the host's, and a sidecar must not hold its
lock or its anchor), so it writes each push as a :class:`GateRecord` with an ``id`` to
``logs/git-gate.jsonl`` and the host imports what it has not imported yet: whenever the log
is read through :func:`bottle.operator.audit_log` (``bottle audit verify``), before every
operator change, and at stop. Importing is idempotent by that id, under its own lock.

The gate's log sits in a directory a sidecar writes, so it is hostile input: it is opened
with :mod:`bottle.safefs` (no links, no FIFO or device), read as a stream up to the size it
had when opened, one line of at most ``MAX_LINE_BYTES`` in memory at a time, and every line
is validated; a line that is not a push record is skipped, never trusted. No size of the
log, and no one line in it, stops the import: a line longer than any the gate writes is
skipped and counted (``try_import`` reports it), and the pushes after it are imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from pydantic import ValidationError

from bottle import layout, safefs
from bottle.audit import AuditLog, canonical
from bottle.errors import StateError
from bottle.files import locked
from bottle.runtime.git_gate import (
    ALLOW_DIR,
    LOG_FILE,
    MAX_RECORD_BYTES,
    NAME,
    GateRecord,
    allowance_name,
)
from bottle.state import StateDir

ACTION = "git-push"
LOCK = ".git-gate-import.lock"
#: The longest line read: the gate writes none longer. Memory is this, whatever the log holds.
MAX_LINE_BYTES = MAX_RECORD_BYTES
_CHUNK = 1 << 20  # what is read at a time of a line being skipped


class PushRecords:
    """The push records of the gate's log in ``logs``, read as they are iterated (none if
    there is no log yet). ``oversized``: the lines skipped for their length, so far."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.oversized = 0

    def __iter__(self) -> Iterator[GateRecord]:
        try:
            handle = safefs.open_read_regular(self.logs / LOG_FILE, root=self.logs.parent)
        except FileNotFoundError:
            return
        with handle:
            for line in self._lines(handle):
                record = parse_line(line)
                if record is not None and record.op == "push":
                    yield record

    def _lines(self, handle: BinaryIO) -> Iterator[bytes]:
        # Up to the size at open: a gate writing all along cannot keep the reader here.
        left = os.fstat(handle.fileno()).st_size
        while left > 0:
            line = handle.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            left -= len(line)
            if len(line) <= MAX_LINE_BYTES:
                yield line
                continue
            self.oversized += 1
            while not line.endswith(b"\n"):  # the rest of it, a chunk at a time
                line = handle.readline(_CHUNK)
                if not line:
                    return
                left -= len(line)


def parse_line(line: bytes) -> GateRecord | None:
    """The record a line of the gate's log holds, or ``None`` for anything else."""
    line = line.rstrip(b"\n")
    if not line.strip():
        return None
    try:
        data = json.loads(line)
        if isinstance(data, dict) and "id" not in data:
            # Written by a gate older than ids: the line itself names it, once.
            data["id"] = hashlib.sha256(line).hexdigest()[:32]
        return GateRecord.model_validate(data)
    except (ValueError, ValidationError, RecursionError):
        # (RecursionError: "[[[[…" nested deeper than the parser goes, in a line of 4 MiB.)
        return None


def push_records(logs: Path) -> list[GateRecord]:
    """Every push record of the gate's log in ``logs``, as a list (for tests and small logs;
    the importer streams ``PushRecords``)."""
    return list(PushRecords(logs))


def refused_push(state_dir: Path, remote: str, ref: str, commit: str) -> GateRecord | None:
    """The gate's own record of its latest refusal, for what the scan found, of a push of
    ``commit`` to ``ref`` of ``remote``: what a ``git-push-allow`` is decided on (never the
    agent's account of it). ``None`` when the gate never refused such a push."""
    found = None
    for record in PushRecords(state_dir / layout.LOGS.name):
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


def import_pushes(state_dir: Path, records: PushRecords | None = None) -> int:
    """Append the gate's pushes not yet in ``state_dir``'s audit log; how many were added.

    ``StateError`` when the audit log is damaged (nothing is appended to a broken chain).
    """
    logs = state_dir / layout.LOGS.name
    records = PushRecords(logs) if records is None else records
    with locked(state_dir / LOCK, wait_s=30.0):
        log: AuditLog | None = None
        done: set[str] = set()
        added = 0
        for record in records:
            if log is None:  # opened for the first push: a log of fetches alone costs nothing
                log = AuditLog.of(StateDir(state_dir))
                done = imported_ids(log)
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
    records = PushRecords(state_dir / layout.LOGS.name)
    try:
        import_pushes(state_dir, records)
    except (StateError, OSError) as exc:
        return getattr(exc, "message", None) or str(exc)
    if records.oversized:
        # The gate writes no such line: something else wrote its log. What else it held
        # is imported; this is for ``bottle audit verify`` to show.
        return (
            f"{records.oversized} line(s) of {LOG_FILE} longer than {MAX_LINE_BYTES} bytes, "
            "which the gate never writes, were skipped"
        )
    return None
