"""``instance.proposals``: what the agent asked for through supervise, and the decisions.

Approve = (in one transaction) check it is still pending → validate (an operator's edit
like a new proposal) → apply it live → record the decision → audit. On any failure the
proposal stays pending and the instance is as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bottle.changes.transaction import Change, operator_name, transaction
from bottle.errors import ApplyError, ApplyFailed, BottleError, Refused, StateError
from bottle.pending import Pending
from bottle.policy import Routes
from bottle.proposals import (
    CapabilityBlock,
    EgressBlock,
    GitPushAllow,
    Listing,
    PipelockBlock,
    Proposal,
    ProposalQueue,
    Status,
    validate_payload,
)
from bottle.settings import Settings

if TYPE_CHECKING:
    from bottle.instance import Instance

Progress = Callable[[str], None]


class ProposalsControl:
    """The proposal queue of one instance, and the operator's decisions on it."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance
        self.queue = ProposalQueue(instance.state.proposals)

    def list(self, status: Status | None = None) -> Listing:
        return self.queue.list(status)

    def get(self, proposal_id: int) -> Proposal:
        return self.queue.get(proposal_id)

    def pending(self, proposal_id: int) -> Proposal:
        """The proposal with this id if it still waits for a decision; ``ApplyError`` if not."""
        proposal = self.queue.get(proposal_id)
        if proposal.status != "pending":
            raise ApplyError(
                f"proposal {proposal_id} is already {proposal.status}",
                hint="See 'bottle queue' for pending proposals.",
            )
        return proposal

    def approve(
        self,
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
        ``progress`` gets the lines of a capability build; ``offline`` builds it with no
        network (else through the bottle's egress).
        """
        settings = Settings.default() if settings is None else settings
        with transaction(self.instance) as change:
            proposal = self.pending(proposal_id)
            agent_image = self.instance.metadata.images.get("agent")
            if agent_image is None:
                raise StateError(
                    f"{self.instance.slug}'s metadata names no agent image",
                    hint=f"The state directory {self.instance.state.path} is damaged; "
                    "stop the instance.",
                )
            payload = proposal.payload
            if edited_payload is not None:
                try:
                    payload = validate_payload(
                        proposal.tool, dict(edited_payload), base_ref=agent_image
                    )
                except ApplyError as exc:
                    raise ApplyError(
                        f"the edited proposal {proposal_id} is invalid: {exc.message}",
                        hint="Nothing changed and the proposal stays pending; edit it again.",
                    ) from None
            before: str | Routes | None = None
            after: str | Routes | None = None
            new_image: str | None = None
            try:
                if isinstance(payload, EgressBlock | PipelockBlock):
                    before = self.instance.routes.current()
                    after = before.with_route(payload.to_route())
                    self.instance.routes.write_live(after)
                elif isinstance(payload, CapabilityBlock):
                    from bottle.capability import replace_agent_image

                    before = agent_image
                    after = new_image = replace_agent_image(
                        self.instance,
                        payload.dockerfile,
                        settings=settings,
                        progress=progress,
                        offline=offline,
                    )
                elif isinstance(payload, GitPushAllow):
                    after = _allow_push(self.instance, payload, proposal_id)
            except BottleError as exc:
                # The kind is kept: a refused Dockerfile is bad input, a failed build is not.
                kind = ApplyError if isinstance(exc, Refused) else ApplyFailed
                raise kind(
                    f"proposal {proposal_id} could not be applied: {exc.message}",
                    hint=((exc.hint or "") + " The proposal stays pending.").strip(),
                ) from exc
            except (OSError, KeyError) as exc:
                # The instance's own files (compose file, live config) are damaged or gone.
                raise ApplyFailed(
                    f"proposal {proposal_id} could not be applied: {type(exc).__name__}: {exc}",
                    hint=f"The state directory {self.instance.state.path} may be damaged; "
                    "the proposal stays pending.",
                ) from exc
            decided = self.queue.decide(
                proposal_id,
                approved=True,
                by=by or operator_name(),
                reason=reason,
                applied=True,
                edited_payload=dict(edited_payload) if edited_payload is not None else None,
                base_ref=agent_image,
                image=new_image,
            )
            _record_decision(change, decided, before=before, after=after)
        return decided

    def reject(self, proposal_id: int, *, reason: str, by: str | None = None) -> Proposal:
        with transaction(self.instance) as change:
            decided = self.queue.decide(
                proposal_id, approved=False, by=by or operator_name(), reason=reason
            )
            _record_decision(change, decided)
        return decided


def _allow_push(instance: Instance, payload: GitPushAllow, proposal_id: int) -> str:
    """Write the allowance git-gate reads for this one push; its text, for the audit log."""
    from bottle.files import atomic_write
    from bottle.runtime import git_gate as gate

    config_dir = instance.state.live_config(gate.NAME)
    try:
        config = gate.GateConfig.model_validate_json((config_dir / gate.CONFIG_FILE).read_bytes())
    except FileNotFoundError:
        raise ApplyError(
            f"{instance.slug} has no git-gate: there is no push to let through",
            hint="Reject the proposal.",
        ) from None
    if config.remote(payload.remote) is None:
        names = ", ".join(r.name for r in config.remotes)
        raise ApplyError(
            f"{instance.slug} has no git remote {payload.remote!r} (it has: {names})",
            hint="Edit the proposal to name one of them, or reject it.",
        )
    from bottle.gate_audit import refused_push

    # Decided on the gate's own record of the refusal, never on the agent's `finding`.
    refusal = refused_push(instance.state.path, payload.remote, payload.ref, payload.commit)
    if refusal is None:
        raise ApplyError(
            f"git-gate never refused a push of {payload.commit[:12]} to {payload.remote} "
            f"{payload.ref} for what its scan found: there is no such push to let through",
            hint="Reject the proposal; the agent must push that commit first and ask with "
            "the remote, ref and commit the refusal named.",
        )
    allowance = gate.Allowance(
        remote=payload.remote,
        ref=payload.ref,
        commit=payload.commit,
        proposal_id=proposal_id,
        findings=tuple(refusal.findings),
    )
    allow_dir = config_dir / gate.ALLOW_DIR
    allow_dir.mkdir(exist_ok=True)
    text = allowance.to_json()
    atomic_write(allow_dir / allowance.file_name, text)
    return text.decode()


def _record_decision(
    change: Change,
    decided: Proposal,
    *,
    before: str | Routes | None = None,
    after: str | Routes | None = None,
) -> None:
    """The audit entry of a decision, taken from the decided proposal itself."""
    assert decided.decision is not None
    change.record(
        who=decided.decision.by,
        action="approve" if decided.status == "approved" else "reject",
        tool=decided.tool,
        proposal_id=decided.id,
        before=before,
        after=after,
        reason=decided.decision.reason,
    )


def pending_proposals(
    settings: Settings | None = None,
) -> tuple[list[Pending], list[str]]:
    """Pending proposals of every running instance, and the problems met.

    A proposal file that cannot be read is named in the problems and otherwise skipped: one
    bad file never hides the rest of the queue. Liveness comes from the state directories
    (:mod:`bottle.pending`), so this stays fast with many decided proposals on disk.
    """
    from bottle.pending import pending_proposals as from_state_dirs

    return from_state_dirs(settings)
