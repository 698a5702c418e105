"""A proposal file's content: the request, its justification, and the operator's decision."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import Field, model_validator

from bottle.errors import ApplyError
from bottle.proposals.payloads import (
    CapabilityBlock,
    GitPushAllow,
    Payload,
    StrictModel,
    ToolName,
)

Status = Literal["pending", "approved", "rejected"]

MAX_JUSTIFICATION_CHARS = 4000
MAX_REASON_CHARS = 4000


class Decision(StrictModel):
    """What the operator decided, and whether applying it worked."""

    by: str = Field(min_length=1, max_length=200)
    at: datetime
    reason: str | None = Field(None, max_length=MAX_REASON_CHARS)
    applied: bool = False
    error: str | None = Field(None, max_length=MAX_REASON_CHARS)
    edited: bool = False
    #: The agent image an applied capability-block put in force.
    image: str | None = Field(None, max_length=300)
    original_payload: Payload | None = Field(
        None, description="what the agent asked for, when the operator edited the payload"
    )


class Proposal(StrictModel):
    """One request from the agent, and the operator's decision once there is one."""

    id: int = Field(ge=1)
    tool: ToolName
    created_at: datetime
    status: Status = "pending"
    justification: str = Field(min_length=1, max_length=MAX_JUSTIFICATION_CHARS)
    payload: Payload
    decision: Decision | None = None

    @model_validator(mode="before")
    @classmethod
    def _payload_names_its_tool(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and isinstance(data.get("payload"), Mapping):
            payload = data["payload"]
            if "tool" not in payload and "tool" in data:
                return {**data, "payload": {**payload, "tool": data["tool"]}}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Proposal:
        if self.payload.tool != self.tool:
            raise ValueError(f"payload is for {self.payload.tool}, but tool is {self.tool}")
        if (self.status == "pending") != (self.decision is None):
            raise ValueError("a pending proposal has no decision, a decided one has one")
        if self.status == "rejected" and self.decision is not None and self.decision.applied:
            raise ValueError("a rejected proposal cannot have been applied")
        return self

    def to_json(self) -> str:
        data = self.model_dump(mode="json")
        decision = data.get("decision")
        if decision is not None and decision.get("image") is None:
            # Left out unless set: a supervise of an older bottle (still running in an
            # instance started before an upgrade) refuses keys it does not know.
            del decision["image"]
        return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def check_justification(justification: str) -> str:
    text = justification.strip() if isinstance(justification, str) else ""
    if not text:
        raise ApplyError(
            "the justification is empty",
            hint="Say in a sentence or two why you need this, so the operator can decide; "
            "nothing was queued.",
        )
    if len(text) > MAX_JUSTIFICATION_CHARS:
        raise ApplyError(
            f"the justification is {len(text)} characters, more than the "
            f"{MAX_JUSTIFICATION_CHARS} allowed",
            hint="Shorten it to the essentials; nothing was queued.",
        )
    return text


def describe(proposal: Proposal) -> str:
    """One paragraph for the agent: what happened to its proposal and what to do next."""
    pid = proposal.id
    if proposal.status == "pending" or proposal.decision is None:
        return (
            f"pending, id {pid} — the operator has not decided yet; "
            f"call proposal-status with id {pid} later"
        )
    decision = proposal.decision
    why = f" Reason: {decision.reason}" if decision.reason else ""
    if proposal.status == "rejected":
        return (
            f"rejected, id {pid}, by {decision.by}.{why or ' No reason was given.'} "
            "Do not file the same request again unchanged."
        )
    what = proposal.payload.summary()
    edited = " The operator edited your request before approving it." if decision.edited else ""
    if decision.applied:
        if isinstance(proposal.payload, CapabilityBlock):
            done = f"approved and applied, id {pid}, by {decision.by}: {what} was built."
            if decision.image:
                done = done.removesuffix(".") + f"; your container now runs {decision.image}."
        elif isinstance(proposal.payload, GitPushAllow):
            done = (
                f"approved and applied, id {pid}, by {decision.by}: git-gate lets through, "
                f"once, the {what.removeprefix('push ')}. Push exactly that commit again."
            )
        else:
            done = f"approved and applied, id {pid}, by {decision.by}: egress now allows {what}."
        return done + edited + why
    error = f" Error: {decision.error}" if decision.error else ""
    return (
        f"approved, id {pid}, by {decision.by}, but not applied (yet): {what}.{error}"
        + edited
        + why
    )
