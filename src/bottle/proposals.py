"""Proposals: what the agent asks the operator for, one JSON file each.

Shared by both sides of the boundary. Inside the bottle, the ``supervise`` sidecar validates
what the agent sends and files it with :meth:`ProposalQueue.create`; on the host, the operator
(the ``bottle`` CLI, or a test through the library) reads the same directory and records a
decision with :meth:`ProposalQueue.decide`. The directory is the only channel between them:
``state/<slug>/proposals/`` on the host, ``layout.PROPOSALS`` in the sidecar.

A proposal file is ``<id>.json`` (ids 1, 2, 3, ...)::

    {"id": 3, "tool": "egress-block", "created_at": "2025-01-01T12:00:00Z",
     "status": "pending", "justification": "pip needs the index",
     "payload": {"tool": "egress-block", "host": "pypi.org", "paths": ["/simple/"],
                 "methods": ["GET"]},
     "decision": null}

and once decided, ``status`` is ``approved`` or ``rejected`` and ``decision`` is
``{"by", "at", "reason", "applied", "error", "edited", "original_payload"}``. Every write
goes to a temporary file in the same directory and is renamed over the target, so a reader
sees the old file or the new one, never half of one.

Keep this module free of Docker, YAML and CLI imports: it runs inside the sidecar too.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bottle import safefs
from bottle.dockerfiles import AGENT_IMAGE_ARG, DIRECTIVE_RE, logical_lines
from bottle.errors import ApplyError
from bottle.policy import Host, Method, PathRule, Route
from bottle.state import atomic_write, locked, now

ToolName = Literal["egress-block", "pipelock-block", "capability-block"]
Status = Literal["pending", "approved", "rejected"]

TOOLS: tuple[ToolName, ...] = ("egress-block", "pipelock-block", "capability-block")
#: The largest payload accepted, measured as its JSON encoding.
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_JUSTIFICATION_CHARS = 4000
MAX_REASON_CHARS = 4000

_ID_FILE_RE = re.compile(r"^([1-9][0-9]{0,8})\.json$")
#: A zero-byte ``<id>.json`` younger than this is a create in flight, not a problem.
_RESERVED_GRACE_S = 5.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- payloads


class EgressBlock(_Strict):
    """Allow requests to ``host`` (optionally only these paths and methods).

    There is no ``auth``: whether a route gets a credential is the operator's call, never
    the agent's, so an ``auth`` key the agent sends is dropped before validation.
    """

    tool: Literal["egress-block"] = "egress-block"
    host: Host
    paths: tuple[PathRule, ...] = ()
    methods: tuple[Method, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _drop_auth(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "auth" in data:
            return {k: v for k, v in data.items() if k != "auth"}
        return data

    @model_validator(mode="after")
    def _is_a_route(self) -> EgressBlock:
        self.to_route()  # the very checks egress applies to its routes
        return self

    def to_route(self) -> Route:
        return _route(host=self.host, paths=self.paths, methods=self.methods)

    def summary(self) -> str:
        paths = ", ".join(self.paths) if self.paths else "any path"
        methods = ", ".join(self.methods) if self.methods else "any method"
        return f"{self.host} ({methods}; {paths})"


class PipelockBlock(_Strict):
    """Allow a whole host, named by a URL the agent was refused (``host`` is derived)."""

    tool: Literal["pipelock-block"] = "pipelock-block"
    url: str = Field(max_length=8192)
    host: Host

    @model_validator(mode="before")
    @classmethod
    def _derive_host(cls, data: Any) -> Any:
        if not isinstance(data, Mapping) or not isinstance(data.get("url"), str):
            return data
        derived = host_of_url(data["url"])
        given = data.get("host")
        if given is not None and isinstance(given, str) and given.lower() != derived:
            raise ValueError(
                f"host {given!r} does not match the url's host {derived!r}: send only the url"
            )
        return {**data, "host": derived}

    def to_route(self) -> Route:
        return _route(host=self.host)

    def summary(self) -> str:
        return f"{self.host} (any method; any path)"


class CapabilityBlock(_Strict):
    """A Dockerfile that builds on the agent image; the operator builds and restarts."""

    tool: Literal["capability-block"] = "capability-block"
    dockerfile: str = Field(min_length=1)

    @field_validator("dockerfile")
    @classmethod
    def _rules(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, Mapping) else None
        if context is not None and "base_ref" in context:
            check_dockerfile(value, base_ref=context["base_ref"])
        else:
            # Read back from disk: the file was checked against the real ref when filed.
            check_dockerfile(value, base_ref=None, any_literal_base=True)
        return value

    def summary(self) -> str:
        lines = len(self.dockerfile.splitlines())
        return f"a Dockerfile of {lines} line(s) on the agent image"


Payload = Annotated[EgressBlock | PipelockBlock | CapabilityBlock, Field(discriminator="tool")]


def request_fields(payload: EgressBlock | PipelockBlock | CapabilityBlock) -> dict[str, Any]:
    """What was asked, as the agent sends it: no ``tool``, nothing derived (pipelock's host)."""
    derived = {"tool", "host"} if isinstance(payload, PipelockBlock) else {"tool"}
    fields: dict[str, Any] = payload.model_dump(mode="json", exclude=derived)
    return fields


def host_of_url(url: str) -> str:
    """The host a URL names, checked like a route's host; raises ``ValueError``."""
    text = url.strip()
    if "://" not in text:
        text = "https://" + text
    try:
        parts = urlsplit(text)
        hostname = parts.hostname
    except ValueError as exc:
        raise ValueError(f"{url!r} is not a URL: {exc}") from None
    if parts.scheme not in {"http", "https"}:
        raise ValueError(f"{url!r}: only http and https URLs can be allowed")
    if not hostname:
        raise ValueError(f"{url!r} names no host: send a URL like https://example.com/path")
    _route(host=hostname)  # raises with the policy's own message
    return hostname.lower().rstrip(".")


def _route(**fields: Any) -> Route:
    """A ``Route``, or ``ValueError`` carrying the policy's own reasons."""
    try:
        return Route(**fields)
    except ValidationError as exc:
        raise ValueError(_reasons(exc, "")) from None


# --------------------------------------------------------------------------- Dockerfiles

_HEREDOC_RE = re.compile(r"<<-?\s*[\"']?[A-Za-z_]")
_ARG_REF_RE = re.compile(rf"^\$(\{{{AGENT_IMAGE_ARG}\}}|{AGENT_IMAGE_ARG})$")
_FORBIDDEN = {
    "ENTRYPOINT": "ENTRYPOINT is not allowed: the bottle decides how the agent starts, and a "
    "new entrypoint would replace the agent program; install tools and leave startup alone",
    "CMD": "CMD is not allowed: the bottle decides the agent's command; install tools and "
    "leave the command alone",
    "USER": "USER is not allowed: the bottle decides which user the agent runs as; RUN steps "
    "run as the agent image's build user, so drop the USER lines",
    "ONBUILD": "ONBUILD is not allowed: it would run instructions in a later build the "
    "operator never reviewed",
}


def check_dockerfile(text: str, *, base_ref: str | None, any_literal_base: bool = False) -> None:
    """Raise ``ValueError`` unless ``text`` is a capability Dockerfile bottle accepts.

    The rules: the first instruction is ``FROM ${BOTTLE_AGENT_IMAGE}`` (or ``FROM <base_ref>``,
    the exact agent image), optionally preceded by ``ARG BOTTLE_AGENT_IMAGE``; there is no
    other FROM (no multi-stage builds, no ``COPY --from``); no ENTRYPOINT, CMD, USER or
    ONBUILD; no heredocs and no parser directives. ``any_literal_base`` accepts any single
    image reference after FROM, for re-reading a file that was checked when it was filed.
    """
    if len(text.encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"the Dockerfile is larger than {MAX_PAYLOAD_BYTES} bytes")
    for raw in text.splitlines():
        stripped = raw.strip()
        if not stripped:
            continue
        match = DIRECTIVE_RE.match(stripped)
        if match and match.group(1).lower() in {"syntax", "escape", "check"}:
            raise ValueError(
                f"parser directive '# {match.group(1)}=' is not allowed: a custom syntax "
                "frontend runs code the operator cannot review; delete that line"
            )
        if not stripped.startswith("#"):
            break

    wanted = f"FROM ${{{AGENT_IMAGE_ARG}}}" + (f" or FROM {base_ref}" if base_ref else "")
    seen_from = False
    for number, line in logical_lines(text):
        word, *tail = re.split(r"\s+", line, maxsplit=1)
        instruction = word.upper()
        rest = tail[0].strip() if tail else ""
        where = f"line {number}"
        if not seen_from:
            if instruction == "ARG" and re.fullmatch(rf"{AGENT_IMAGE_ARG}(=\S*)?", rest):
                default = rest.partition("=")[2]
                if default and default != base_ref and not any_literal_base:
                    raise ValueError(
                        f"{where}: ARG {AGENT_IMAGE_ARG} may not set a default of its own: "
                        f"write 'ARG {AGENT_IMAGE_ARG}' and let the build pass the agent image"
                    )
                continue
            if instruction != "FROM":
                raise ValueError(
                    f"{where}: a capability Dockerfile must start with {wanted} "
                    f"(found {instruction or line!r})"
                )
            image = rest
            ok = bool(_ARG_REF_RE.fullmatch(image)) or (base_ref is not None and image == base_ref)
            if not ok and any_literal_base:
                ok = bool(image) and " " not in image and not image.startswith("-")
            if not ok:
                raise ValueError(
                    f"{where}: 'FROM {image}' is not the agent image: write exactly {wanted} "
                    "(no --platform, no AS, no other image)"
                )
            seen_from = True
            continue
        if instruction == "FROM":
            raise ValueError(
                f"{where}: a second FROM is not allowed: build on the agent image in a "
                "single stage (no multi-stage builds)"
            )
        if instruction in _FORBIDDEN:
            raise ValueError(f"{where}: {_FORBIDDEN[instruction]}")
        if instruction in {"COPY", "ADD"} and re.search(r"(^|\s)--from[=\s]", rest):
            raise ValueError(
                f"{where}: {instruction} --from is not allowed: it copies from another image; "
                "install what you need with RUN instead"
            )
        if instruction in {"RUN", "COPY", "ADD"} and _HEREDOC_RE.search(rest):
            raise ValueError(
                f"{where}: heredocs (<<EOF) are not accepted: write the commands on RUN "
                "lines joined with && and \\ continuations"
            )
    if not seen_from:
        raise ValueError(f"the Dockerfile has no instructions: start it with {wanted}")


# --------------------------------------------------------------------------- proposals


class Decision(_Strict):
    """What the operator decided, and whether applying it worked."""

    by: str = Field(min_length=1, max_length=200)
    at: datetime
    reason: str | None = Field(None, max_length=MAX_REASON_CHARS)
    applied: bool = False
    error: str | None = Field(None, max_length=MAX_REASON_CHARS)
    edited: bool = False
    original_payload: Payload | None = Field(
        None, description="what the agent asked for, when the operator edited the payload"
    )


class Proposal(_Strict):
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
        return json.dumps(self.model_dump(mode="json"), indent=2, ensure_ascii=False) + "\n"


def _reasons(exc: ValidationError, prefix: str) -> str:
    parts: list[str] = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"] if p not in TOOLS)
        msg = str(error["msg"]).removeprefix("Value error, ")
        name = ".".join(part for part in (prefix, loc) if part)
        parts.append(f"{name}: {msg}" if name else msg)
    return "; ".join(parts)


def validate_payload(
    tool: str, payload: Mapping[str, Any], *, base_ref: str | None = None
) -> EgressBlock | PipelockBlock | CapabilityBlock:
    """The typed payload for ``tool``, or ``ApplyError`` naming what to fix.

    ``base_ref`` is the exact agent image reference a capability Dockerfile may name after
    FROM (besides ``${BOTTLE_AGENT_IMAGE}``).
    """
    if tool not in TOOLS:
        raise ApplyError(
            f"unknown proposal tool {tool!r}",
            hint=f"Use one of: {', '.join(TOOLS)}; nothing was queued.",
        )
    if not isinstance(payload, Mapping):
        raise ApplyError(f"{tool}: the payload must be an object", hint="Nothing was queued.")
    try:
        size = len(json.dumps(dict(payload), ensure_ascii=False, default=str).encode())
    except (TypeError, ValueError) as exc:
        raise ApplyError(
            f"{tool}: the payload is not plain JSON data: {exc}", hint="Nothing was queued."
        ) from None
    if size > MAX_PAYLOAD_BYTES:
        raise ApplyError(
            f"{tool}: the payload is {size} bytes, more than the {MAX_PAYLOAD_BYTES} allowed",
            hint="Ask for less at once: fewer paths, or a shorter Dockerfile; nothing was queued.",
        )
    models: dict[str, type[EgressBlock] | type[PipelockBlock] | type[CapabilityBlock]] = {
        "egress-block": EgressBlock,
        "pipelock-block": PipelockBlock,
        "capability-block": CapabilityBlock,
    }
    model = models[tool]
    data = {k: v for k, v in payload.items() if k != "tool"}
    try:
        return model.model_validate(data, context={"base_ref": base_ref})
    except ValidationError as exc:
        raise ApplyError(
            f"{tool} refused: {_reasons(exc, 'payload')}",
            hint="Fix the field named above and file the request again; nothing was queued.",
        ) from None


def _check_justification(justification: str) -> str:
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


# --------------------------------------------------------------------------- the queue


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
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        ids = []
        for name in names:
            match = _ID_FILE_RE.match(name)
            if match:
                ids.append(int(match.group(1)))
        return sorted(ids)

    def create(
        self,
        tool: str,
        payload: Mapping[str, Any],
        justification: str,
        *,
        base_ref: str | None = None,
    ) -> Proposal:
        """Validate and file a new pending proposal; ``ApplyError`` says what to fix.

        Nothing is written unless the whole proposal is valid. Ids are reserved with
        ``O_EXCL``, so two writers never share one; the content then lands atomically.
        """
        typed = validate_payload(tool, payload, base_ref=base_ref)
        text = _check_justification(justification)
        self.directory.mkdir(parents=True, exist_ok=True)
        ids = self._ids()
        candidate = (ids[-1] if ids else 0) + 1
        for _ in range(1000):
            target = self.path(candidate)
            try:
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
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
            raise
        return proposal

    def _load(self, path: Path) -> Proposal:
        raw = safefs.read_regular(path, max_bytes=16 * MAX_PAYLOAD_BYTES).decode("utf-8")
        data = json.loads(raw)
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

        A file that does not parse is named in ``problems`` and otherwise skipped.
        """
        found: list[Proposal] = []
        problems: list[str] = []
        for proposal_id in self._ids():
            path = self.path(proposal_id)
            try:
                stat = path.stat()
                if stat.st_size == 0:
                    if time.time() - stat.st_mtime > _RESERVED_GRACE_S:
                        problems.append(f"{path}: empty file (an interrupted create?)")
                    continue
                proposal = self._load(path)
            except FileNotFoundError:
                continue
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
        with locked(self.directory / ".decide.lock"):
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
                    original_payload=original,
                )
            except ValidationError as exc:
                raise ApplyError(f"bad decision: {_reasons(exc, 'decision')}") from None
            decided = current.model_copy(
                update={
                    "status": "approved" if approved else "rejected",
                    "payload": payload,
                    "decision": decision,
                }
            )
            decided = Proposal.model_validate(decided.model_dump())  # re-check invariants
            atomic_write(self.path(proposal_id), decided.to_json())
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
        return _reasons(exc, "proposal")
    if isinstance(exc, json.JSONDecodeError):
        return f"not JSON ({exc.msg} at line {exc.lineno})"
    return str(exc) or type(exc).__name__


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
        else:
            done = f"approved and applied, id {pid}, by {decision.by}: egress now allows {what}."
        return done + edited + why
    error = f" Error: {decision.error}" if decision.error else ""
    return (
        f"approved, id {pid}, by {decision.by}, but not applied (yet): {what}.{error}"
        + edited
        + why
    )
