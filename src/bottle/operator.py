"""The operator's side across instances, as plain functions (``bottle.operator``).

Each one is a thin door onto the per-instance controls in :mod:`bottle.changes`
(``instance.routes``, ``instance.proposals``), where every change is one transaction:
lock → validate → apply → decide → audit.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bottle.audit import AuditLog
from bottle.changes import (
    LOCK_WAIT_S,
    Pending,
    ProposalsControl,
    operator_name,
    pending_proposals,
    transaction,
)
from bottle.changes.decisions import Progress
from bottle.instance import Instance
from bottle.policy import Route, Routes
from bottle.proposals import Proposal, ProposalQueue
from bottle.settings import Settings

#: Kept for callers of the first API: the transaction is ``bottle.changes.transaction``.
changing = transaction


def proposal_queue(instance: Instance) -> ProposalQueue:
    return instance.proposals.queue


def audit_log(instance: Instance) -> AuditLog:
    """The instance's audit log, with what its sidecars logged for it imported first (when
    it can be: a damaged sidecar log is left as it is, for ``verify`` to report)."""
    from bottle.sidecars import import_records

    import_records(instance.state.path)
    return AuditLog.of(instance.state)


def pending_proposal(instance: Instance, proposal_id: int) -> Proposal:
    """The proposal with this id if it still waits for a decision; ``ApplyError`` if not."""
    return instance.proposals.pending(proposal_id)


def allow(instance: Instance, route: Route, *, by: str | None = None, reason: str = "") -> Routes:
    """Add ``route`` to the live routes (operator-initiated) and audit it."""
    return instance.routes.allow(route, by=by, reason=reason)


def set_routes(
    instance: Instance,
    routes: Routes,
    *,
    by: str | None = None,
    reason: str = "",
    based_on: bytes | None = None,
) -> None:
    """Replace the live routes (``bottle routes edit``) and audit the diff."""
    instance.routes.apply(routes, by=by, reason=reason, based_on=based_on)


def approve(
    instance: Instance,
    proposal_id: int,
    *,
    by: str | None = None,
    reason: str | None = None,
    edited_payload: Mapping[str, Any] | None = None,
    settings: Settings | None = None,
    progress: Progress | None = None,
    offline: bool = False,
) -> Proposal:
    """Apply an approved proposal to the live instance, then record the decision."""
    return instance.proposals.approve(
        proposal_id,
        by=by,
        reason=reason,
        edited_payload=edited_payload,
        settings=settings,
        progress=progress,
        offline=offline,
    )


def reject(instance: Instance, proposal_id: int, *, reason: str, by: str | None = None) -> Proposal:
    return instance.proposals.reject(proposal_id, reason=reason, by=by)


__all__ = [
    "LOCK_WAIT_S",
    "Pending",
    "ProposalsControl",
    "allow",
    "approve",
    "audit_log",
    "changing",
    "operator_name",
    "pending_proposal",
    "pending_proposals",
    "proposal_queue",
    "reject",
    "set_routes",
]
