"""What the agent may ask for: the typed payload of each proposal tool, and its checks.

Every check here is the one the host applies again: a route is checked by
:mod:`bottle.policy`, a Dockerfile by :mod:`bottle.dockerfiles`. Free of Docker, YAML and CLI
imports: it runs inside the supervise sidecar too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from bottle.dockerfiles import MAX_DOCKERFILE_BYTES, check_capability_dockerfile
from bottle.errors import ApplyError
from bottle.policy import Host, Method, PathRule, Route
from bottle.proposals.rows import wire_note

ToolName = Literal["egress-block", "pipelock-block", "capability-block", "git-push-allow"]

TOOLS: tuple[ToolName, ...] = (
    "egress-block",
    "pipelock-block",
    "capability-block",
    "git-push-allow",
)
#: The largest payload accepted, measured as its JSON encoding.
MAX_PAYLOAD_BYTES = MAX_DOCKERFILE_BYTES


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- payloads


class EgressBlock(StrictModel):
    """Allow requests to ``host`` (optionally only these paths and methods).

    There is no ``auth``: whether a route gets a credential is the operator's call, never
    the agent's, so an ``auth`` key the agent sends is dropped before validation.
    """

    tool: Literal["egress-block"] = "egress-block"
    host: Host
    paths: tuple[PathRule, ...] = ()
    methods: tuple[Method, ...] = ()
    # What is asked for on the wire: https to 443 unless the agent says otherwise, and then
    # the operator sees it (summary), since plain HTTP or another port is a wider door.
    scheme: Literal["https", "http"] = "https"
    port: int | None = Field(None, ge=1, le=65535)

    @model_validator(mode="before")
    @classmethod
    def _drop_auth(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "auth" in data:
            return {k: v for k, v in data.items() if k != "auth"}
        return data

    @model_serializer(mode="wrap")
    def _wire_if_asked(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # https to 443 is what every proposal asked before scheme and port existed: the file
        # says scheme and port only when the agent asked for something else.
        data: dict[str, Any] = handler(self)
        if data.get("scheme") == "https":
            data.pop("scheme")
        if data.get("port") is None:
            data.pop("port", None)
        return data

    @model_validator(mode="after")
    def _is_a_route(self) -> EgressBlock:
        self.to_route()  # the very checks egress applies to its routes
        return self

    def to_route(self) -> Route:
        return _route(
            host=self.host,
            paths=self.paths,
            methods=self.methods,
            scheme=self.scheme,
            port=self.port,
        )

    def summary(self) -> str:
        paths = ", ".join(self.paths) if self.paths else "any path"
        methods = ", ".join(self.methods) if self.methods else "any method"
        return f"{self.host} ({methods}; {paths}){wire_note(self.scheme, self.port)}"


class PipelockBlock(StrictModel):
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
        wire = wire_of_url(self.url)
        if wire is None:
            return _route(host=self.host)
        return _route(host=self.host, scheme=wire[0], port=wire[1])

    def summary(self) -> str:
        wire = wire_of_url(self.url)
        where = f"{wire[0]} port {wire[1]}; " if wire else ""
        return f"{self.host} ({where}any method; any path)"


class CapabilityBlock(StrictModel):
    """A Dockerfile that builds on the agent image; the operator builds and restarts."""

    tool: Literal["capability-block"] = "capability-block"
    dockerfile: str = Field(min_length=1)

    @field_validator("dockerfile")
    @classmethod
    def _rules(cls, value: str, info: ValidationInfo) -> str:
        context = info.context if isinstance(info.context, Mapping) else None
        if context is not None and "base_ref" in context:
            check_capability_dockerfile(value, base_ref=context["base_ref"])
        else:
            # Read back from disk: the file was checked against the real ref when filed.
            check_capability_dockerfile(value, base_ref=None, any_literal_base=True)
        return value

    def summary(self) -> str:
        lines = len(self.dockerfile.splitlines())
        return f"a Dockerfile of {lines} line(s) on the agent image"


class GitPushAllow(StrictModel):
    """Let one push git-gate's secret scan refused through, once: ``commit`` to ``ref`` of
    ``remote``, findings and all. The operator reads ``finding`` (what the gate said) and
    the justification; approving writes an allowance the gate consumes on that push."""

    tool: Literal["git-push-allow"] = "git-push-allow"
    remote: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    ref: str = Field(max_length=255, pattern=r"^refs/[A-Za-z0-9._/+-]+$")
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    finding: str = Field(min_length=1, max_length=4096)

    @field_validator("commit", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("ref")
    @classmethod
    def _ref(cls, value: str) -> str:
        parts = value.split("/")
        if ".." in value or "" in parts or any(p.startswith(".") or p.endswith(".lock")
                                               for p in parts):  # fmt: skip
            raise ValueError(f"{value!r} is not a ref name (git check-ref-format)")
        return value

    def summary(self) -> str:
        return f"push {self.commit[:12]} to {self.remote} {self.ref} despite the secret scan"


Payload = Annotated[
    EgressBlock | PipelockBlock | CapabilityBlock | GitPushAllow, Field(discriminator="tool")
]
AnyPayload = EgressBlock | PipelockBlock | CapabilityBlock | GitPushAllow


def request_fields(payload: AnyPayload) -> dict[str, Any]:
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


def wire_of_url(url: str) -> tuple[str, int] | None:
    """(scheme, port) when the URL names a port other than its scheme's default, else None:
    a route then allows exactly that port (routes match the standard ports by default)."""
    text = url.strip()
    parts = urlsplit(text if "://" in text else "https://" + text)
    try:
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if port is None or port == {"https": 443, "http": 80}.get(scheme):
        return None
    return scheme, port


def _route(**fields: Any) -> Route:
    """A ``Route``, or ``ValueError`` carrying the policy's own reasons."""
    try:
        return Route(**fields)
    except ValidationError as exc:
        raise ValueError(validation_reasons(exc, "")) from None


def validation_reasons(exc: ValidationError, prefix: str) -> str:
    parts: list[str] = []
    for error in exc.errors():
        loc = ".".join(str(p) for p in error["loc"] if p not in TOOLS)
        msg = str(error["msg"]).removeprefix("Value error, ")
        name = ".".join(part for part in (prefix, loc) if part)
        parts.append(f"{name}: {msg}" if name else msg)
    return "; ".join(parts)


def validate_payload(
    tool: str, payload: Mapping[str, Any], *, base_ref: str | None = None
) -> AnyPayload:
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
    models: dict[str, type[AnyPayload]] = {
        "egress-block": EgressBlock,
        "pipelock-block": PipelockBlock,
        "capability-block": CapabilityBlock,
        "git-push-allow": GitPushAllow,
    }
    model = models[tool]
    data = {k: v for k, v in payload.items() if k != "tool"}
    try:
        return model.model_validate(data, context={"base_ref": base_ref})
    except ValidationError as exc:
        raise ApplyError(
            f"{tool} refused: {validation_reasons(exc, 'payload')}",
            hint="Fix the field named above and file the request again; nothing was queued.",
        ) from None
