"""The proposals of one instance: one JSON file per proposal, written so none ever tears.

Ids are reserved with ``O_EXCL`` (two writers never share one) and every write goes to a
temporary file renamed over the target, so a reader sees the old file or the new one.

Decided proposals stay on disk, so finding the pending ones must not read them all: an
index, ``pending/<id>`` (one empty file per pending proposal), says which. It changes only
under the queue lock, in an order that a crash at any step leaves readable: a marker is
made before its proposal file and removed after the decision is written, so a marker may
name a proposal that is decided (or was never written) but a pending proposal always has
one. ``pending/.complete`` says the index covers every file; the supervise sidecar builds
it when it starts (:meth:`ProposalQueue.rebuild_index`). Without it, a reader scans
everything, as before there was an index.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bottle.errors import ApplyError
from bottle.files import atomic_write, locked, now
from bottle.proposals.index import (
    COMPLETE,
    INDEX,
    MARKER_RE,
    indexed_pending,
    open_index,
    proposal_ids,
)
from bottle.proposals.limits import too_many_pending
from bottle.proposals.models import Decision, Proposal, Status, check_justification
from bottle.proposals.payloads import (
    Payload,
    validate_payload,
    validation_reasons,
)
from bottle.proposals.rows import load_file

#: The one lock of a queue: creates, decisions and index rebuilds take turns.
_LOCK = ".decide.lock"
#: A zero-byte ``<id>.json`` younger than this is a create in flight, not a problem.
_RESERVED_GRACE_S = 5.0


@dataclass(frozen=True)
class Listing:
    """What :meth:`ProposalQueue.list` found: the proposals, and files it could not read."""

    proposals: tuple[Proposal, ...]
    problems: tuple[str, ...] = field(default=())


class ProposalQueue:
    """The proposals of one instance: ``<directory>/<id>.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)

    def path(self, proposal_id: int) -> Path:
        return self.directory / f"{proposal_id}.json"

    def _ids(self) -> list[int]:
        return proposal_ids(self.directory)

    # -- the pending index ------------------------------------------------------------------

    def _index(self, *, create: bool = False) -> contextlib.AbstractContextManager[int | None]:
        return open_index(self.directory, create=create)

    def indexed_pending(self) -> list[int] | None:
        """Ids the index marks pending, or ``None`` when there is no complete index."""
        return indexed_pending(self.directory)

    def _mark(self, fd: int, name: int | str) -> bool:
        """Make the marker ``name``; ``False`` if it was there already."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            os.close(os.open(str(name), flags, 0o644, dir_fd=fd))
        except FileExistsError:
            return False
        return True

    def _unmark(self, proposal_id: int) -> None:
        with self._index() as fd:
            if fd is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(str(proposal_id), dir_fd=fd)

    def rebuild_index(self) -> int:
        """Make ``pending/`` name exactly the pending proposals; returns how many there are.

        Reads every file once (the supervise sidecar does it when it starts). An unreadable
        file is indexed too, so that every listing names it until the operator moves it.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        with locked(self.directory / _LOCK):
            return len(self._rebuild())

    def _rebuild(self) -> set[int]:
        # For a caller that holds the lock.
        with self._index(create=True) as fd:
            if fd is None:
                raise ApplyError(
                    f"{self.directory / INDEX} is not a directory",
                    hint="Move it aside; the supervise sidecar makes a new one.",
                )
            pending = set()
            for proposal_id in self._ids():
                try:
                    if self._load(self.path(proposal_id)).status != "pending":
                        continue
                except FileNotFoundError:
                    continue
                except (OSError, ValueError):
                    pass  # unreadable: indexed, so every listing reports it to the operator
                pending.add(proposal_id)
            for name in os.listdir(fd):
                if MARKER_RE.match(name) and int(name) not in pending:
                    os.unlink(name, dir_fd=fd)
            for proposal_id in pending:
                self._mark(fd, proposal_id)
            self._mark(fd, COMPLETE)
            return pending

    def _pending_now(self) -> list[int]:
        """Under the lock: the pending ids, stale markers (a crash after a decision) dropped."""
        ids = self.indexed_pending()
        if ids is None:
            return sorted(self._rebuild())
        live = []
        for proposal_id in ids:
            try:
                status = self._load(self.path(proposal_id)).status
            except FileNotFoundError:
                status = None
            except (OSError, ValueError):
                status = "pending"  # unreadable: the operator must look at it, so it counts
            if status == "pending":
                live.append(proposal_id)
            else:
                self._unmark(proposal_id)
        return live

    # -- filing -----------------------------------------------------------------------------

    def create(
        self,
        tool: str,
        payload: Mapping[str, Any],
        justification: str,
        *,
        base_ref: str | None = None,
        max_pending: int | None = None,
    ) -> Proposal:
        """Validate and file a new pending proposal; ``ApplyError`` says what to fix.

        Nothing is written unless the whole proposal is valid and, with ``max_pending``,
        fewer than that many wait for a decision. Ids are reserved with ``O_EXCL``, so two
        writers never share one; the content then lands atomically.
        """
        typed = validate_payload(tool, payload, base_ref=base_ref)
        text = check_justification(justification)
        self.directory.mkdir(parents=True, exist_ok=True)
        with locked(self.directory / _LOCK):
            marked = self.indexed_pending()
            if marked is None:
                marked = sorted(self._rebuild())
            if max_pending is not None and len(marked) >= max_pending:
                pending = self._pending_now()  # only at the bound: drop stale markers
                if len(pending) >= max_pending:
                    raise too_many_pending(len(pending), max_pending)
            with self._index() as fd:
                if fd is None:  # pragma: no cover - made above, under the lock
                    raise ApplyError(f"{self.directory / INDEX} vanished")
                return self._file(fd, typed, text)

    def _file(self, index_fd: int, typed: Payload, text: str) -> Proposal:
        ids = self._ids()
        candidate = (ids[-1] if ids else 0) + 1
        for _ in range(1000):
            target = self.path(candidate)
            # The marker first: a crash now leaves a marker without a file, never a
            # pending proposal that the index does not name.
            marked = self._mark(index_fd, candidate)
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:  # a writer that does not take the lock (an old sidecar)
                if marked:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(str(candidate), dir_fd=index_fd)
                candidate += 1
                continue
            os.close(fd)
            break
        else:  # pragma: no cover - a thousand concurrent creates
            raise ApplyError(f"could not reserve a proposal id in {self.directory}")
        proposal = Proposal(
            id=candidate,
            tool=typed.tool,
            created_at=now(),
            justification=text,
            payload=typed,
        )
        try:
            atomic_write(target, proposal.to_json())
        except BaseException:
            with contextlib.suppress(OSError):
                target.unlink()
            with contextlib.suppress(OSError):
                os.unlink(str(candidate), dir_fd=index_fd)
            raise
        return proposal

    def _load(self, path: Path) -> Proposal:
        data = load_file(path)
        proposal = Proposal.model_validate(data)
        expected = int(path.name.removesuffix(".json"))
        if proposal.id != expected:
            raise ValueError(f"the file says id {proposal.id}")
        return proposal

    def get(self, proposal_id: int) -> Proposal:
        """The proposal with this id; ``ApplyError`` when there is none or it is unreadable."""
        path = self.path(proposal_id)
        for attempt in range(20):
            try:
                if path.stat().st_size == 0 and attempt < 19:
                    time.sleep(0.01)  # reserved, its content is on the way
                    continue
                return self._load(path)
            except FileNotFoundError:
                ids = self._ids()
                known = f"ids so far: {ids[0]}..{ids[-1]}" if ids else "there are none yet"
                raise ApplyError(
                    f"no proposal {proposal_id} in {self.directory} ({known})"
                ) from None
            except (OSError, ValueError) as exc:
                raise ApplyError(
                    f"proposal file {path} is unreadable: {_short(exc)}",
                    hint="Move the file aside; the other proposals are unaffected.",
                ) from None
        raise ApplyError(f"proposal {proposal_id} is still being written; try again")

    def list(self, status: Status | None = None) -> Listing:
        """Every readable proposal in id order (only ``status`` ones if given).

        A file that does not parse is named in ``problems`` and otherwise skipped. The
        pending ones are found through the index, so decided proposals are not read.
        """
        ids = self.indexed_pending() if status == "pending" else None
        found: list[Proposal] = []
        problems: list[str] = []
        for proposal_id in self._ids() if ids is None else ids:
            path = self.path(proposal_id)
            try:
                stat = path.stat()
                if stat.st_size == 0:
                    if time.time() - stat.st_mtime > _RESERVED_GRACE_S:
                        problems.append(f"{path}: empty file (an interrupted create?)")
                    continue
                proposal = self._load(path)
            except FileNotFoundError:
                continue  # a marker made just before its file, or left by a crash
            except (OSError, ValueError) as exc:
                problems.append(f"{path}: {_short(exc)}")
                continue
            if status is None or proposal.status == status:
                found.append(proposal)
        return Listing(proposals=tuple(found), problems=tuple(problems))

    def decide(
        self,
        proposal_id: int,
        *,
        approved: bool,
        by: str,
        reason: str | None = None,
        applied: bool = False,
        error: str | None = None,
        edited_payload: Mapping[str, Any] | None = None,
        base_ref: str | None = None,
        image: str | None = None,
    ) -> Proposal:
        """Record the operator's decision on a pending proposal, atomically.

        Call it after trying to apply an approval: ``applied`` says whether that worked and
        ``error`` why not. ``edited_payload`` replaces what the agent asked for (validated
        like a new one; ``base_ref`` as in :func:`validate_payload`); the original is kept
        in ``decision.original_payload``. A proposal that is already decided is refused
        with ``ApplyError``.
        """
        if not approved and applied:
            raise ApplyError("a rejected proposal cannot be applied")
        with locked(self.directory / _LOCK):
            current = self.get(proposal_id)
            if current.status != "pending":
                assert current.decision is not None
                raise ApplyError(
                    f"proposal {proposal_id} was already {current.status} by "
                    f"{current.decision.by} at {current.decision.at.isoformat()}",
                    hint="A decision is final; the agent can file a new proposal.",
                )
            payload = current.payload
            original = None
            if edited_payload is not None:
                edited = validate_payload(current.tool, edited_payload, base_ref=base_ref)
                if edited != current.payload:
                    payload, original = edited, current.payload
            try:
                decision = Decision(
                    by=by,
                    at=now(),
                    reason=reason or None,
                    applied=applied,
                    error=error or None,
                    edited=original is not None,
                    image=image,
                    original_payload=original,
                )
            except ValidationError as exc:
                raise ApplyError(f"bad decision: {validation_reasons(exc, 'decision')}") from None
            decided = current.model_copy(
                update={
                    "status": "approved" if approved else "rejected",
                    "payload": payload,
                    "decision": decision,
                }
            )
            decided = Proposal.model_validate(decided.model_dump())  # re-check invariants
            atomic_write(self.path(proposal_id), decided.to_json())
            # After the decision is on disk: a crash in between leaves a stale marker,
            # which readers skip, never a pending proposal without one.
            self._unmark(proposal_id)
            return decided

    def wait(self, proposal_id: int, timeout_s: float, poll_s: float = 0.1) -> Proposal:
        """Poll until the proposal is decided or ``timeout_s`` passes; return it either way."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        while True:
            proposal = self.get(proposal_id)
            remaining = deadline - time.monotonic()
            if proposal.status != "pending" or remaining <= 0:
                return proposal
            time.sleep(min(max(poll_s, 0.001), remaining))


def _short(exc: BaseException) -> str:
    if isinstance(exc, ValidationError):
        return validation_reasons(exc, "proposal")
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg} at line {exc.lineno})"
    return str(exc) or type(exc).__name__
