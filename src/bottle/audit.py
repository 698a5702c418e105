"""The audit log: an append-only, hash-chained JSON-lines file on the host.

Every decision and every live-config change the operator makes is one line::

    {"action":"approve","after":"routes:\\n- host: pypi.org\\n","at":"2025-01-01T12:00:00Z",
     "before":"routes: []\\n","diff":"--- before\\n+++ after\\n...","hash":"<64 hex>",
     "prev":"<64 hex>","proposal_id":3,"reason":null,"seq":1,"tool":"egress-block",
     "who":"alice"}

A line is the canonical JSON of its entry (keys sorted, no spaces, ASCII with ``\\u``
escapes) and ends in ``\\n``.
``hash`` is the SHA-256 of the canonical JSON of the entry without ``hash``; ``prev`` is the
SHA-256 of the previous line's bytes (without its newline), or 64 zeros on the first line;
``seq`` counts from 1. So changing any byte, reordering or deleting lines, or cutting the
file in the middle breaks the chain, and :meth:`AuditLog.verify` names the first bad line.

Cutting whole lines off the end would leave a valid shorter chain, so the head is anchored
outside the log: every append, under the same lock, atomically rewrites
``<log>.head`` (``{"seq": N, "head": "<sha256 of line N>"}``), and ``verify`` fails when the
log and its anchor disagree (a cut tail, a replaced last line, a deleted anchor). An append
refuses such a log too: re-anchoring a cut end would hide the cut for good.

The ``.head`` sits beside the log, so deleting both would read as an empty, intact log. An
instance's log (:meth:`AuditLog.of`) therefore also checkpoints ``{seq, head}`` in its
``metadata.json`` on every append, still under the log's lock (then the metadata lock:
that order everywhere); the checkpoint only moves forward, and ``verify`` fails when the
log no longer reaches it or holds another entry there. A path-only ``AuditLog`` (no
instance) has the ``.head`` alone. Keeping :meth:`AuditLog.head` somewhere else still (a
commit, a ticket) guards against someone who rewrites all three.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bottle.errors import InstanceNotFound, StateError
from bottle.files import atomic_write, locked
from bottle.policy import Routes
from bottle.state import AuditMark, StateDir

GENESIS = "0" * 64


class AuditEntry(BaseModel):
    """One line of the audit log."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=1)
    at: str
    who: str
    action: str
    tool: str | None = None
    proposal_id: int | None = None
    before: str | None = None
    after: str | None = None
    diff: str = ""
    reason: str | None = None
    prev: str = Field(pattern=r"^[0-9a-f]{64}$")
    hash: str = Field(pattern=r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class VerifyResult:
    """What :meth:`AuditLog.verify` found.

    ``entries`` counts the lines that verified before the first bad one (all of them when
    ``ok``); ``first_bad_line`` is 1-based; ``head`` is the hash of the last good line.
    """

    ok: bool
    entries: int
    first_bad_line: int | None = None
    problem: str | None = None
    head: str = GENESIS


def canonical(data: dict[str, Any]) -> bytes:
    """The canonical JSON bytes of ``data``: sorted keys, no spaces, ASCII (\\u escapes)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entry_hash(data: dict[str, Any]) -> str:
    """The ``hash`` an entry must carry: SHA-256 of its canonical JSON without ``hash``."""
    return _sha256(canonical({k: v for k, v in data.items() if k != "hash"}))


def routes_yaml(routes: Routes) -> str:
    """Routes as the YAML text egress reads (``{routes: [...]}``), for before/after."""
    return routes.to_yaml().decode()


def unified_diff(before: str | None, after: str | None) -> str:
    """A unified diff of two texts (``None`` is empty); empty when they are equal."""
    lines = difflib.unified_diff(
        (before or "").splitlines(keepends=True),
        (after or "").splitlines(keepends=True),
        fromfile="before",
        tofile="after",
    )
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


def diff_routes(before: Routes, after: Routes) -> str:
    """A unified diff of two route tables as YAML."""
    return unified_diff(routes_yaml(before), routes_yaml(after))


def _text(value: str | Routes | None) -> str | None:
    if isinstance(value, Routes):
        return routes_yaml(value)
    return value


class AuditLog:
    """An append-only audit log at ``path`` (created with its directory on first append).

    With ``state``, the instance whose log it is: its head is also checkpointed in that
    instance's metadata.json (:meth:`of`).
    """

    def __init__(self, path: Path, *, state: StateDir | None = None) -> None:
        self.path = Path(path)
        self.state = state

    @classmethod
    def of(cls, state: StateDir) -> AuditLog:
        """The audit log of the instance at ``state``, checkpointed in its metadata.json."""
        return cls(state.audit_log, state=state)

    @property
    def anchor_path(self) -> Path:
        return self.path.with_name(self.path.name + ".head")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[int]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.path, flags=os.O_WRONLY | os.O_APPEND) as fd:
            yield fd

    def check_appendable(self) -> None:
        """``StateError`` unless an entry can be appended: call it before making a change
        that must be audited, so a damaged log is found before the change, not after."""
        self._next_link()

    def _next_link(self) -> tuple[int, str]:
        """The ``seq`` and ``prev`` of the next entry; ``StateError`` on a damaged last line."""
        last = self._last_line()
        if last is None:
            problem = self._empty_refused()
            if problem is not None:
                raise StateError(f"audit log {self.path}: {problem}", hint=self._restart_hint())
            return 1, GENESIS
        try:
            previous = AuditEntry.model_validate_json(last)
        except ValidationError:
            raise StateError(
                f"the last line of audit log {self.path} is not an audit entry",
                hint="Run verify on it and move the damaged file aside before appending.",
            ) from None
        head = _sha256(last)
        problem = self._anchor_refuses(previous, head) or self._mark_refuses(previous, head)
        if problem is not None:
            raise StateError(f"audit log {self.path}: {problem}", hint=self._restart_hint())
        return previous.seq + 1, head

    def _restart_hint(self) -> str:
        """How to start a new log once the damaged one is kept as evidence."""
        aside = "the log and its .head aside"
        if self.state is not None:
            # The checkpoint outlives the files on purpose: starting afresh is a decision.
            aside += f' and remove "audit" from {self.state.metadata_file}'
        return (
            f"Run `bottle audit verify` on it; keep the files as evidence, and move {aside} "
            "before anything more is appended."
        )

    def _anchor_refuses(self, last: AuditEntry, head: str) -> str | None:
        """Why the anchor forbids chaining after ``last`` (None: it may be extended).

        Appending re-anchors the end, so an append after a cut tail would hide the cut for
        good: the log may only grow from the end its anchor vouches for, or from one entry
        past it whose ``prev`` is that end (bottle died between the line and the anchor).
        """
        anchor = self._anchor()
        if isinstance(anchor, str):
            return anchor
        seq, anchored = anchor
        if (seq, anchored) == (last.seq, head):
            return None
        if (seq, anchored) == (last.seq - 1, last.prev):
            return None
        if seq > last.seq:
            return f"it ends at entry {last.seq} but its anchor says {seq}: its tail was cut"
        if seq == last.seq:
            return "its last entry is not the one the anchor recorded: it was replaced"
        return f"entries {seq + 1}..{last.seq} come after the anchored head"

    def _empty_refused(self) -> str | None:
        """Why an empty (or missing) log may not start afresh: an anchor says it had more."""
        if self.anchor_path.exists():
            anchor = self._anchor()
            if isinstance(anchor, str):
                return anchor
            return f"it is empty but its anchor says {anchor[0]} entries: they were removed"
        mark = self._mark()
        if isinstance(mark, str):
            return mark
        if mark is not None:
            return (
                f"it is empty but metadata.json's checkpoint says {mark.seq} entries: the log "
                "and its .head were removed"
            )
        return None

    def _mark_refuses(self, last: AuditEntry, head: str) -> str | None:
        """Why metadata.json's checkpoint forbids chaining after ``last`` (None: it may)."""
        mark = self._mark()
        if isinstance(mark, str):
            return mark
        if mark is None or mark.seq < last.seq:
            return None  # the .head vouches for what came after the checkpoint
        if mark.seq > last.seq:
            return (
                f"it ends at entry {last.seq} but metadata.json's checkpoint says {mark.seq}: "
                "its tail was cut"
            )
        if mark.head != head:
            return "its last entry is not the one metadata.json's checkpoint recorded"
        return None

    def _mark(self) -> AuditMark | str | None:
        """metadata.json's checkpoint (``AuditMark``), ``None`` when there is none to go by
        (a path-only log, a state dir without metadata, a log older than checkpoints), or
        why it cannot be read."""
        if self.state is None:
            return None
        try:
            return self.state.read_metadata().audit
        except InstanceNotFound:
            return None
        except StateError as exc:
            return f"its checkpoint in metadata.json cannot be read: {exc.message}"

    def _last_line(self) -> bytes | None:
        """The last complete line (without newline), or ``None`` for an empty or missing log."""
        try:
            handle = open(self.path, "rb")  # noqa: SIM115  (closed by the with below)
        except FileNotFoundError:
            return None
        with handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            if size == 0:
                return None
            handle.seek(size - 1)
            if handle.read(1) != b"\n":
                raise StateError(
                    f"audit log {self.path} ends in a partial line",
                    hint="Run verify on it and move the damaged file aside before appending.",
                )
            end = size - 1
            start = end
            chunk = 4096
            while start > 0:
                step = min(chunk, start)
                handle.seek(start - step)
                block = handle.read(step)
                newline = block.rfind(b"\n")
                if newline >= 0:
                    start = start - step + newline + 1
                    break
                start -= step
            handle.seek(start)
            return handle.read(end - start)

    def append(
        self,
        *,
        who: str,
        action: str,
        tool: str | None = None,
        proposal_id: int | None = None,
        before: str | Routes | None = None,
        after: str | Routes | None = None,
        reason: str | None = None,
        diff: str | None = None,
    ) -> AuditEntry:
        """Append one entry, chained to the last line, and fsync it.

        ``before`` / ``after`` are texts (routes are written as YAML); ``diff`` defaults to
        their unified diff. Raises ``StateError`` when the last line is damaged, so a
        broken chain is never extended.
        """
        before_text, after_text = _text(before), _text(after)
        with self._locked() as fd:
            seq, prev = self._next_link()
            data: dict[str, Any] = {
                "seq": seq,
                "at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "who": who,
                "action": action,
                "tool": tool,
                "proposal_id": proposal_id,
                "before": before_text,
                "after": after_text,
                "diff": diff if diff is not None else unified_diff(before_text, after_text),
                "reason": reason,
                "prev": prev,
            }
            data["hash"] = entry_hash(data)
            entry = AuditEntry.model_validate(data)
            line = canonical(data)
            os.write(fd, line + b"\n")
            os.fsync(fd)
            head = _sha256(line)
            anchor = {"seq": seq, "head": head}
            atomic_write(self.anchor_path, json.dumps(anchor, sort_keys=True) + "\n")
            if self.state is not None:
                self.state.mark_audit(seq, head)
        return entry

    def entries(self) -> list[AuditEntry]:
        """Every entry, after checking the chain; ``StateError`` if it is broken."""
        result = self.verify()
        if not result.ok:
            raise StateError(
                f"audit log {self.path} fails verification at line {result.first_bad_line}: "
                f"{result.problem}",
                hint="Someone or something changed the file; keep it as evidence.",
            )
        if result.entries == 0:
            return []
        return [
            AuditEntry.model_validate_json(line)
            for line in self.path.read_bytes().split(b"\n")
            if line
        ]

    def head(self) -> str:
        """The hash of the last verified line (64 zeros for an empty log)."""
        return self.verify().head

    def verify(self) -> VerifyResult:
        """Check every line and the chain between them, the ``.head`` anchor, and for an
        instance's log its checkpoint in metadata.json; a missing file is an empty log."""
        result, hashes = self._verify_chain()
        if not result.ok:
            return result
        mark = self._mark()
        problem: str | None = None
        line = 1
        if isinstance(mark, str):
            problem = mark
        elif mark is not None and mark.seq > len(hashes):
            cut = mark.seq - len(hashes)
            problem = (
                f"the log ends at entry {len(hashes)} but metadata.json's checkpoint says "
                f"{mark.seq}: {cut} entr{'y was' if cut == 1 else 'ies were'} cut off the "
                "end (the log and its .head were cut or removed together)"
            )
            line = len(hashes) + 1
        elif mark is not None and hashes[mark.seq - 1] != mark.head:
            problem = (
                f"entry {mark.seq} is not the one metadata.json's checkpoint recorded: the "
                "log was replaced"
            )
            line = mark.seq
        if problem is None:
            return result
        return VerifyResult(
            ok=False, entries=result.entries, first_bad_line=line, problem=problem, head=result.head
        )

    def _verify_chain(self) -> tuple[VerifyResult, list[str]]:
        """The log checked against itself and its ``.head``; the hash of each line."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            raw = b""
        if not raw:
            empty = self._check_anchor(0, GENESIS) if self.anchor_path.exists() else None
            if empty is not None:
                return VerifyResult(ok=False, entries=0, first_bad_line=1, problem=empty), []
            return VerifyResult(ok=True, entries=0), []
        lines = raw.split(b"\n")
        complete = raw.endswith(b"\n")
        if complete:
            lines = lines[:-1]
        prev = GENESIS
        hashes: list[str] = []
        for index, line in enumerate(lines):
            number = index + 1
            if not complete and number == len(lines):
                problem: str | None = "the last line is cut off (no newline at the end)"
            else:
                problem = _check_line(line, number, prev)
            if problem is not None:
                bad = VerifyResult(
                    ok=False, entries=index, first_bad_line=number, problem=problem, head=prev
                )
                return bad, hashes
            prev = _sha256(line)
            hashes.append(prev)
        disagreement = self._check_anchor(len(lines), prev)
        if disagreement is not None:
            bad = VerifyResult(
                ok=False,
                entries=len(lines),
                first_bad_line=len(lines) + 1 if "cut" in disagreement else len(lines),
                problem=disagreement,
                head=prev,
            )
            return bad, hashes
        return VerifyResult(ok=True, entries=len(lines), head=prev), hashes

    def _anchor(self) -> tuple[int, str] | str:
        """The anchored ``(seq, head)``, or why there is none to go by."""
        try:
            raw = self.anchor_path.read_bytes()
        except FileNotFoundError:
            return "its head anchor is missing: the end of the log cannot be vouched for"
        except OSError as exc:
            return f"its head anchor cannot be read: {exc.strerror}"
        try:
            anchor = json.loads(raw)
            return int(anchor["seq"]), str(anchor["head"])
        except (ValueError, KeyError, TypeError):
            return "its head anchor is not {seq, head} JSON"

    def _check_anchor(self, entries: int, head: str) -> str | None:
        """Why the anchored head disagrees with a log of ``entries`` lines ending in ``head``."""
        anchor = self._anchor()
        if isinstance(anchor, str):
            return anchor
        seq, anchored = anchor
        if seq > entries:
            return (
                f"the log ends at entry {entries} but its anchor says {seq}: "
                f"{seq - entries} entr{'y was' if seq - entries == 1 else 'ies were'} cut "
                "off the end"
            )
        if seq < entries:
            return (
                f"entries {seq + 1}..{entries} come after the anchored head: appended outside "
                "bottle (or bottle died in the middle of an append)"
            )
        if anchored != head:
            return "the last entry is not the one the anchor recorded: it was replaced"
        return None


def _check_line(line: bytes, number: int, prev: str) -> str | None:
    """Why line ``number`` is not the entry that follows a line hashing to ``prev``."""
    try:
        data = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return f"not JSON: {exc}"
    if not isinstance(data, dict):
        return "not a JSON object"
    fields = set(AuditEntry.model_fields)  # every field is written, null or not
    if set(data) != fields:
        missing = sorted(fields - set(data))
        extra = sorted(set(data) - fields)
        return f"wrong fields (missing {missing}, unexpected {extra})"
    try:
        AuditEntry.model_validate(data)
    except ValidationError as exc:
        return f"not an audit entry: {exc.errors()[0]['msg']}"
    if data["seq"] != number:
        return f"seq is {data['seq']}, expected {number}: lines were deleted or moved"
    if data["prev"] != prev:
        before = f"line {number - 1}" if number > 1 else "the start of the log"
        return f"prev does not match {before}: it was changed, or lines were deleted or moved"
    if data["hash"] != entry_hash(data):
        return "hash does not match the entry: the line was changed"
    if canonical(data) != line:
        return "the line is not in canonical form: it was rewritten"
    return None
