"""The decision log's one record type: what egress decided about one request, tunnel or message.

Egress writes one :class:`LogRecord` per decision as a JSON line of ``logs/egress.jsonl``; the
host (``bottle egress log``) reads each line back with :meth:`LogRecord.model_validate_json`.
Only pydantic here, so both sides import it. A record holds no headers, no query string and
no secret: hosts and paths are redacted before they get here.

The log lies on the host's disk and the agent decides how many requests it makes, so it is
bounded: past :data:`MAX_FILE_BYTES` the file moves aside and a new one starts. The first file
of the run becomes ``egress.jsonl.0`` and is kept for good (an injected agent's first moves
are there, and a flood of requests later must not push them out); every later one becomes
``egress.jsonl.1`` (``.1`` becomes ``.2``, up to :data:`KEEP`; the oldest is dropped). So at
most ``KEEP + 2`` files of :data:`MAX_FILE_BYTES` lie on disk. When records were dropped the
new file opens with a ``note`` that counts them by decision and names the time they span
(:class:`Tally`); it carries on the counts of the notes it dropped, so the newest note covers
the whole gap after ``.0``. :func:`log_files` lists the files oldest first.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

Decision = Literal["allow", "refuse", "dlp-block", "dlp-warn", "note"]
#: One file of the log grows to this much before it is rotated.
MAX_FILE_BYTES = 16 << 20
#: The most of a record's text field (a path, a reason) kept; the rest is counted.
MAX_TEXT_CHARS = 8192
#: Rotated files kept beside the one being written and the run's first (``.1`` … ``.KEEP``).
KEEP = 2
#: The oldest rotated file an older egress kept (``.3``): still read, never written.
_READ_BACK = 3


class LogRecord(BaseModel):
    """One line of the decision log. Unknown fields (a newer egress) are ignored on read."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    time: str = ""  # ISO 8601, milliseconds, set when written
    generation: int = 0  # the route table in force
    method: str = ""  # an HTTP method, or CONNECT, WEBSOCKET, TCP, UDP
    host: str = ""
    path: str = ""  # no query string
    route: int | None = None  # index into the route table in force
    decision: Decision
    reason: str = ""
    findings: tuple[str, ...] | None = None  # DLP: "kind in where", never the matched text
    scrubbed: tuple[str, ...] | None = None  # "secret:NAME in where", removed from the response
    request_bytes: int | None = None
    response_bytes: int | None = None
    status: int | None = None  # the HTTP status sent back, when there was one

    @field_validator("method", "host", "path", "reason")
    @classmethod
    def _text(cls, value: str) -> str:
        # The agent picks the path (mitmproxy bounds no request line): a record stays a few
        # KiB, so every one of them fits the host reader's bound on a line.
        if len(value) > MAX_TEXT_CHARS:
            value = f"{value[:MAX_TEXT_CHARS]}…[{len(value) - MAX_TEXT_CHARS} more characters]"
        # Undecodable request bytes reach us as lone surrogates, which are not JSON text.
        return value.encode("utf-8", "backslashreplace").decode("utf-8")

    def to_line(self) -> str:
        return self.model_dump_json() + "\n"


class Note(LogRecord):
    """A ``note``: egress's own record about the log. Its fields are not on every record
    (a fifth of each file, and time on the request path), so a reader parses a line whose
    decision is ``note`` again as one of these."""

    decision: Decision = "note"
    #: A drop: the records lost since ``.0``, by decision, and the time they span.
    dropped: dict[str, int] | None = None
    dropped_from: str | None = None
    dropped_to: str | None = None
    #: An outage: the records that could not be written.
    unwritten: int | None = None


def first_file(path: Path) -> Path:
    """``egress.jsonl.0``: the run's first file, never dropped."""
    return path.with_name(f"{path.name}.0")


def log_files(path: Path, keep: int = KEEP) -> list[Path]:
    """The log's files, oldest first (``.0``, ``.3`` … ``.1``, then ``path``), present or
    not; ``.3`` only an older egress wrote (it kept three and no ``.0``)."""
    back = max(keep, _READ_BACK)
    return (
        [first_file(path)]
        + [path.with_name(f"{path.name}.{n}") for n in range(back, 0, -1)]
        + [path]
    )


@dataclass
class Tally:
    """Records dropped from the log, by decision, and the time they span."""

    counts: dict[str, int] = field(default_factory=dict)
    first: str = ""
    last: str = ""

    @property
    def records(self) -> int:
        return sum(self.counts.values())

    def add(self, record: dict[str, object]) -> None:
        """Count one record of a dropped file. A note is not a decision: an outage's counts
        what never reached the log; a drop's is about older files (see :func:`rotate`)."""
        if record.get("decision") == "note":
            unwritten = record.get("unwritten")
            if isinstance(unwritten, int) and unwritten > 0:
                self._count("unwritten", unwritten)
                self._span(record.get("time"))
            return
        self.count_one(str(record.get("decision")), record.get("time"))

    def count_one(self, decision: str, stamp: object) -> None:
        self._count(decision, 1)
        self._span(stamp)

    def after(self, note: dict[str, object]) -> None:
        """Add what an older drop's ``note`` counted (records written before these)."""
        counted = note.get("dropped")
        if not isinstance(counted, dict):
            return
        for kind, n in counted.items():
            if isinstance(n, int) and n > 0:
                self._count(str(kind), n)
        earlier = note.get("dropped_from")
        if isinstance(earlier, str) and earlier:
            self.first = earlier
            self.last = self.last or earlier

    def _count(self, kind: str, n: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n

    def _span(self, stamp: object) -> None:
        if isinstance(stamp, str) and stamp:  # a file is written in time order
            self.first = self.first or stamp
            self.last = stamp

    def note(self, path: Path, max_bytes: int) -> Note:
        """The ``note`` that opens the file after a drop (time and generation set by the writer)."""
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.counts.items()))
        return Note(
            method="LOG",
            reason=f"{self.records} older records were dropped ({kinds or 'none'}), written "
            f"from {self.first or '?'} to {self.last or '?'}: the log keeps the run's first "
            f"file ({path.name}.0) and the last {KEEP + 1}, of {max_bytes >> 20} MiB each",
            dropped=dict(sorted(self.counts.items())),
            dropped_from=self.first or None,
            dropped_to=self.last or None,
        )


#: A decision record's time and decision as :meth:`LogRecord.to_line` writes them. Inside a
#: JSON string every quote is escaped, so the agent's text cannot look like these fields.
_HEAD = re.compile(rb'\{"time":"([^"\\]*)",.*?,"route":(?:null|\d+),"decision":"([a-z-]+)"')


def _tally(path: Path) -> Tally:
    """The :class:`Tally` of one file; a rotation waits for it, so records are not parsed
    whole (a 16 MiB file costs 0.34 s so), only notes and lines of another shape are."""
    found = Tally()
    with path.open("rb") as fh:
        for line in fh:
            head = _HEAD.match(line)
            if head is not None and head[2] != b"note":
                found.count_one(head[2].decode(), head[1].decode())
                continue
            try:
                value = json.loads(line)
            except (ValueError, RecursionError):
                continue  # a line cut by a crash: not a record
            if isinstance(value, dict):
                found.add(value)
    return found


def _drop_note(path: Path) -> dict[str, object] | None:
    """The drop note that opens ``path`` (the writer puts it first), if there is one."""
    try:
        with path.open("rb") as fh:
            value = json.loads(fh.readline())
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError):
        return None  # no note first: a line cut by a crash, or an empty file
    if not isinstance(value, dict) or value.get("decision") != "note" or "dropped" not in value:
        return None
    return value


def rotate(path: Path, keep: int = KEEP) -> Tally | None:
    """``path`` moves aside: to ``.0`` when the run has none yet, else to ``.1`` (each ``.n``
    becomes ``.n+1``, ``.keep`` is dropped). What was dropped since ``.0``, or None when
    nothing is now: the records of ``.keep`` and what the newest drop note counted (the
    files dropped before it, so each note covers the whole gap). Only the writer calls it,
    in a directory of its own; it reads the dropped file whole (it is bounded)."""
    first = first_file(path)
    if not first.exists():
        path.replace(first)
        return None
    files = [path.with_name(f"{path.name}.{n}") for n in range(keep, 0, -1)] + [path]
    dropped: Tally | None = None
    # The oldest goes only when the next one moves onto it.
    if files[0].exists() and files[1].exists():
        dropped = _tally(files[0])
        for newer in reversed(files):
            note = _drop_note(newer)
            if note is not None:
                dropped.after(note)
                break
    for older, newer in itertools.pairwise(files):
        if newer.exists():
            newer.replace(older)
    return dropped
