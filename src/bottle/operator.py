"""The operator's side: decide proposals, widen routes, replace the agent's image.

Every change goes the same way: validate, apply to the live instance, and only then record
the decision and an audit entry. On any failure the proposal stays pending and the routes
in force are unchanged.
"""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from bottle.audit import AuditLog
from bottle.capability import Progress, replace_agent_image
from bottle.errors import ApplyError, BottleError
from bottle.instance import Instance
from bottle.policy import Route, Routes
from bottle.proposals import (
    CapabilityBlock,
    EgressBlock,
    PipelockBlock,
    Proposal,
    ProposalQueue,
    validate_payload,
)
from bottle.settings import Settings
from bottle.sidecars import egress
from bottle.state import locked


def operator_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


def proposal_queue(instance: Instance) -> ProposalQueue:
    return ProposalQueue(instance.state.proposals)


def audit_log(instance: Instance) -> AuditLog:
    return AuditLog(instance.state.audit_log)


@dataclass(frozen=True)
class Pending:
    """A pending proposal and the running instance it belongs to."""

    slug: str
    proposal: Proposal


def pending_proposals(
    settings: Settings | None = None,
) -> tuple[list[Pending], list[str]]:
    """Pending proposals of every running instance, oldest instance first, and the problems.

    A proposal file that cannot be read is named in the problems and otherwise skipped: one
    bad file never hides the rest of the queue.
    """
    from bottle.instances import instances

    found: list[Pending] = []
    problems: list[str] = []
    for info in instances(settings):
        if info.status != "running":
            continue
        listing = proposal_queue(Instance.open(info.slug, settings=settings)).list("pending")
        problems += [f"{info.slug}: {problem}" for problem in listing.problems]
        found += [Pending(info.slug, proposal) for proposal in listing.proposals]
    return found, problems


#: How long an operator change waits for another one on the same instance to finish.
LOCK_WAIT_S = 30.0


@contextlib.contextmanager
def changing(instance: Instance, *, wait_s: float = LOCK_WAIT_S) -> Iterator[None]:
    """Hold the instance's operator lock: one change (check, apply, record) at a time.

    Without it, a rejection during a minutes-long capability build, or two approvals at
    once, would apply a change that is then recorded differently, or not at all. The audit
    log is checked first, so a damaged log stops a change before it is made.
    """
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked(instance.state.path / ".operator.lock", wait_s=wait_s))
        except TimeoutError:
            raise ApplyError(
                f"another operator change to {instance.slug} is still being applied",
                hint="A capability build can take minutes; try again when it is done.",
            ) from None
        audit_log(instance).check_appendable()
        yield


def pending_proposal(instance: Instance, proposal_id: int) -> Proposal:
    """The proposal with this id if it still waits for a decision; ``ApplyError`` if not."""
    proposal = proposal_queue(instance).get(proposal_id)
    if proposal.status != "pending":
        raise ApplyError(
            f"proposal {proposal_id} is already {proposal.status}",
            hint="See 'bottle queue' for pending proposals.",
        )
    return proposal


def allow(instance: Instance, route: Route, *, by: str | None = None, reason: str = "") -> Routes:
    """Add ``route`` to the live routes (operator-initiated) and audit it."""
    with changing(instance):
        before = egress.load_routes(instance)
        after = before.with_route(route)
        egress.apply_routes(instance, after)
        audit_log(instance).append(
            who=by or operator_name(), action="allow", before=before, after=after, reason=reason
        )
    return after


def set_routes(
    instance: Instance,
    routes: Routes,
    *,
    by: str | None = None,
    reason: str = "",
    based_on: bytes | None = None,
) -> None:
    """Replace the live routes (``bottle routes edit``) and audit the diff.

    ``based_on``: the routes file the edit started from. If the file changed since (an
    approval or ``allow`` while the editor was open), nothing is applied: writing the edit
    would silently drop that change.
    """
    with changing(instance):
        path = egress.routes_file(instance)
        if based_on is not None and path.read_bytes() != based_on:
            raise ApplyError(
                "the live routes changed while you were editing (an approval or allow)",
                hint="Nothing changed; run the edit again to start from the routes in force.",
            )
        before = egress.load_routes(instance)
        egress.apply_routes(instance, routes)
        audit_log(instance).append(
            who=by or operator_name(),
            action="edit-routes",
            before=before,
            after=routes,
            reason=reason,
        )


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
    """Apply an approved proposal to the live instance, then record the decision.

    ``edited_payload`` replaces what the agent asked for (validated like a new proposal);
    ``progress`` gets the lines of a capability build; ``offline`` builds it with no network
    (else through the bottle's egress).
    """
    with changing(instance):
        return _approve(
            instance,
            proposal_id,
            by=by,
            reason=reason,
            edited_payload=edited_payload,
            settings=settings,
            progress=progress,
            offline=offline,
        )


def _approve(
    instance: Instance,
    proposal_id: int,
    *,
    by: str | None,
    reason: str | None,
    edited_payload: Mapping[str, Any] | None,
    settings: Settings | None,
    progress: Progress | None,
    offline: bool = False,
) -> Proposal:
    queue = proposal_queue(instance)
    proposal = pending_proposal(instance, proposal_id)
    agent_image = instance.metadata.images["agent"]
    payload = proposal.payload
    if edited_payload is not None:
        try:
            payload = validate_payload(proposal.tool, dict(edited_payload), base_ref=agent_image)
        except ApplyError as exc:
            raise ApplyError(
                f"the edited proposal {proposal_id} is invalid: {exc.message}",
                hint="Nothing changed and the proposal stays pending; edit it again.",
            ) from None
    before: str | Routes | None = None
    after: str | Routes | None = None
    try:
        if isinstance(payload, EgressBlock | PipelockBlock):
            before = egress.load_routes(instance)
            after = before.with_route(payload.to_route())
            egress.apply_routes(instance, after)
        elif isinstance(payload, CapabilityBlock):
            before = agent_image
            after = replace_agent_image(
                instance, payload.dockerfile, settings=settings, progress=progress, offline=offline
            )
    except BottleError as exc:
        raise ApplyError(
            f"proposal {proposal_id} could not be applied: {exc.message}",
            hint=(exc.hint or "") + " The proposal stays pending.",
        ) from exc
    decided = queue.decide(
        proposal_id,
        approved=True,
        by=by or operator_name(),
        reason=reason,
        applied=True,
        edited_payload=dict(edited_payload) if edited_payload is not None else None,
        base_ref=agent_image,
    )
    _audit_decision(instance, decided, before=before, after=after)
    return decided


def reject(instance: Instance, proposal_id: int, *, reason: str, by: str | None = None) -> Proposal:
    with changing(instance):
        decided = proposal_queue(instance).decide(
            proposal_id, approved=False, by=by or operator_name(), reason=reason
        )
        _audit_decision(instance, decided)
    return decided


def _audit_decision(
    instance: Instance,
    decided: Proposal,
    *,
    before: str | Routes | None = None,
    after: str | Routes | None = None,
) -> None:
    """The audit entry of a decision, taken from the decided proposal itself."""
    assert decided.decision is not None
    audit_log(instance).append(
        who=decided.decision.by,
        action="approve" if decided.status == "approved" else "reject",
        tool=decided.tool,
        proposal_id=decided.id,
        before=before,
        after=after,
        reason=decided.decision.reason,
    )
