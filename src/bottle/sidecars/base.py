"""The ``Sidecar`` protocol: everything the rest of bottle may know about one sidecar.

A sidecar owns, in its own module: the model of its section of a bottle file (``egress:``,
``git:``, ``supervise:``) and how ``extends`` merges it, its sub-plan (``None``: not enabled),
the host variables whose values it holds, its files for ``live-config/<name>/``, its compose
service, what it adds to the agent, its catalog columns, its status and its reload. The
manifest loader, the planner, the renderer and ``Bottle.start`` only walk the registry.

This module imports no sidecar (they import it), so the layering stays acyclic.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

from pydantic import BaseModel

from bottle import safefs
from bottle.errors import ApplyError, PlanError
from bottle.runtime.status import SidecarStatus

if TYPE_CHECKING:
    from bottle.plan import BottlePlan

#: The model of a sidecar's section of a bottle file.
S = TypeVar("S", bound=BaseModel)
#: A sidecar's sub-plan: frozen, persisted in ``plan.json``, never holding a secret value.
P = TypeVar("P", bound=BaseModel)


class HostState(Protocol):
    def status_file(self, sidecar: str) -> Path: ...

    def live_config(self, sidecar: str) -> Path: ...


class HostCompose(Protocol):
    def kill(self, service: str, signal: str) -> None: ...


class SidecarHost(Protocol):
    """What a sidecar needs of a running instance (``bottle.instance.Instance`` has it)."""

    @property
    def slug(self) -> str: ...

    @property
    def state(self) -> HostState: ...

    @property
    def compose(self) -> HostCompose: ...


@dataclass(frozen=True)
class PlanContext:
    """Where a section came from, so a sidecar's errors can name the file and field."""

    bottle: str
    path: Path | None


@dataclass(frozen=True)
class AgentAddon:
    """What one sidecar adds to the agent container."""

    env: Mapping[str, str] = field(default_factory=dict)
    #: Entries of ``mcpServers`` in the agent's ``mcp.json``.
    mcp_servers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: Lines for the agent's ``gitconfig`` (included through ``GIT_CONFIG_*``).
    gitconfig: str = ""


@runtime_checkable
class Sidecar(Protocol[S, P]):
    """One sidecar; ``name`` is its compose service, ``status/<name>.json`` and
    ``live-config/<name>/``; ``section`` its key in a bottle file."""

    name: str
    section: str
    section_model: type[S]
    plan_model: type[P]
    #: The agent reaches it directly on ``internal`` (so it belongs in ``NO_PROXY``).
    direct: bool

    def unavailable(self) -> PlanError | None:
        """The error that refuses to start an instance enabling it (None: it can run)."""
        ...

    def cautions(self, sub: P) -> Sequence[tuple[str, str]]:
        """What of its sub-plan cannot work though it starts: (problem, fix) pairs, for
        ``bottle render`` (e.g. a git remote with no credential)."""
        ...

    def default_section(self) -> S | None:
        """The section of a bottle file that does not mention it."""
        ...

    def merge(self, base: S | None, child: S | None) -> S | None:
        """``extends``: ``child``'s section over its parent's."""
        ...

    def plan(self, section: S | None, ctx: PlanContext) -> P | None:
        """Its sub-plan; None when the bottle does not enable it. Raises ManifestError."""
        ...

    def secret_refs(self, sub: P) -> tuple[str, ...]:
        """Host variables whose values it holds: they must never be written anywhere."""
        ...

    def files(self, sub: P) -> Mapping[str, bytes]:
        """Files for ``live-config/<name>/``, by name relative to that directory."""
        ...

    def compose_service(self, sub: P, plan: BottlePlan) -> dict[str, Any]:
        """Its service stanza (no secret values: secrets are named, never written)."""
        ...

    def agent(self, sub: P, *, direct: Sequence[str]) -> AgentAddon:
        """What it adds to the agent; ``direct`` names every enabled ``direct`` sidecar."""
        ...

    def summary(self, section: S | None) -> dict[str, int | bool]:
        """Its columns in ``bottle bottles``."""
        ...

    def describe(self, sub: P) -> dict[str, Any]:
        """What ``metadata.json`` and ``bottle ls --json`` show of it (never a secret)."""
        ...

    def status(self, host: SidecarHost) -> SidecarStatus:
        """``status/<name>.json`` as it is now (``ready=False`` when there is none)."""
        ...

    def reload(self, host: SidecarHost, *, timeout: float = 10.0) -> SidecarStatus:
        """Make it take its ``live-config`` now; ApplyError when it cannot."""
        ...

    def import_records(self, state_dir: Path) -> str | None:
        """Add what it logged for the host's audit log (in the state dir at ``state_dir``)
        that is not there yet: before the audit log is read or appended to, and at stop.
        Idempotent; the problem when it could not (callers go on: ``audit verify`` says it)."""
        ...


class SidecarBase(Generic[S, P]):
    """Defaults for the parts a simple sidecar does not need; subclasses set the rest."""

    name: str
    section: str
    section_model: type[S]
    plan_model: type[P]
    direct: bool = False
    status_model: type[SidecarStatus] = SidecarStatus

    def unavailable(self) -> PlanError | None:
        return None

    def cautions(self, sub: P) -> Sequence[tuple[str, str]]:
        return ()

    def default_section(self) -> S | None:
        return None

    def merge(self, base: S | None, child: S | None) -> S | None:
        return child if child is not None else base

    def secret_refs(self, sub: P) -> tuple[str, ...]:
        return ()

    def files(self, sub: P) -> Mapping[str, bytes]:
        return {}

    def agent(self, sub: P, *, direct: Sequence[str]) -> AgentAddon:
        return AgentAddon()

    def summary(self, section: S | None) -> dict[str, int | bool]:
        return {}

    def describe(self, sub: P) -> dict[str, Any]:
        return {}

    def import_records(self, state_dir: Path) -> str | None:
        return None

    def status(self, host: SidecarHost) -> SidecarStatus:
        path = host.state.status_file(self.name)
        try:
            # A sidecar-written file: no link followed, bounded.
            return self.status_model.model_validate_json(
                safefs.read_regular(path, max_bytes=1 << 20)
            )
        except (OSError, ValueError):
            return self.status_model(ready=False)

    def reload(self, host: SidecarHost, *, timeout: float = 10.0) -> SidecarStatus:
        raise ApplyError(
            f"the {self.name} sidecar has no live reload",
            hint=f"Its configuration is fixed at start; stop {host.slug} and start again.",
        )
