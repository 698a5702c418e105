"""git-gate: brokered git to the bottle's declared remotes.

The agent's git rewrites each remote URL (``insteadOf``) to the gate; the gate fetches from
the real remote and, on push, scans for secrets before forwarding with a key only it holds.
Enabled only when the bottle declares remotes. Its program is not built yet: it renders
(so the shape can be reviewed) but reports itself unavailable, and ``Bottle.start`` refuses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from bottle import layout
from bottle.errors import PlanError
from bottle.manifest.models import Name, Strict
from bottle.policy import EnvName
from bottle.sidecars._common import bind, sidecar_base
from bottle.sidecars.base import AgentAddon, PlanContext, SidecarBase

if TYPE_CHECKING:
    from bottle.plan import BottlePlan


class GitRemote(Strict):
    """A remote the agent may fetch from and push to, through git-gate."""

    name: Name
    url: str = Field(description="ssh (git@host:path, ssh://…) or https URL of the real remote")
    key_ref: EnvName | None = Field(
        None, description="host variable holding the private SSH key (ssh remotes)"
    )
    token_ref: EnvName | None = Field(
        None, description="host variable holding an HTTPS token (https remotes)"
    )
    host_key: str | None = Field(
        None, description="pinned known_hosts line for the remote's SSH host"
    )
    push: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if re.match(r"^(https://|ssh://|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:|file://)", value):
            return value
        raise ValueError(
            f"{value!r} is not a git remote URL: use https://host/path, ssh://user@host/path "
            "or user@host:path"
        )


class Git(Strict):
    """``git:`` of a bottle file."""

    remotes: tuple[GitRemote, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Git:
        names = [r.name for r in self.remotes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"remote names must be unique; repeated: {', '.join(dupes)}")
        return self


class GitGatePlan(Strict):
    remotes: tuple[GitRemote, ...]

    @property
    def secret_refs(self) -> tuple[str, ...]:
        refs = [r.key_ref or r.token_ref for r in self.remotes]
        return tuple(dict.fromkeys(ref for ref in refs if ref))


class _GitGate(SidecarBase[Git, GitGatePlan]):
    name = "git-gate"
    section = "git"
    section_model = Git
    plan_model = GitGatePlan
    direct = True

    def unavailable(self) -> PlanError:
        # Rendered so the shape can be reviewed, but its program is not built yet: say so
        # before the images, rather than when the container exits.
        return PlanError(
            "the bottle declares git remotes, and the git-gate sidecar that would broker "
            "them is not available in this version of bottle",
            hint="Remove git.remotes from the bottle (egress routes can reach a git host "
            "over HTTPS meanwhile).",
        )

    def merge(self, base: Git | None, child: Git | None) -> Git | None:
        """Remotes add up by name; the child's remote of a name wins."""
        remotes = {r.name: r for r in (base.remotes if base else ())}
        remotes.update({r.name: r for r in (child.remotes if child else ())})
        return Git(remotes=tuple(remotes.values())) if remotes else None

    def plan(self, section: Git | None, ctx: PlanContext) -> GitGatePlan | None:
        return GitGatePlan(remotes=section.remotes) if section and section.remotes else None

    def secret_refs(self, sub: GitGatePlan) -> tuple[str, ...]:
        return sub.secret_refs

    def summary(self, section: Git | None) -> dict[str, int | bool]:
        return {"remotes": len(section.remotes) if section else 0}

    def files(self, sub: GitGatePlan) -> Mapping[str, bytes]:
        remotes = [r.model_dump(mode="json", exclude_none=True) for r in sub.remotes]
        return {"remotes.json": json.dumps({"remotes": remotes}, indent=2).encode() + b"\n"}

    def compose_service(self, sub: GitGatePlan, plan: BottlePlan) -> dict[str, Any]:
        state = plan.state_dir
        service = sidecar_base(plan, self.name, "bottle.runtime.git_gate")
        service |= {
            "environment": list(sub.secret_refs),
            "volumes": [
                bind(
                    state / "live-config" / "git-gate",
                    layout.LIVE_CONFIG / "git-gate",
                    read_only=True,
                ),
                bind(state / "status", layout.STATUS),
                bind(state / "logs", layout.LOGS),
            ],
            "networks": ["internal", "egress"],
        }
        return service

    def agent(self, sub: GitGatePlan, *, direct: Sequence[str]) -> AgentAddon:
        """insteadOf rewrites that send every declared remote through the gate."""
        lines = []
        for remote in sub.remotes:
            gate = f"http://{self.name}:{layout.GIT_GATE_PORT}/{remote.name}.git"
            lines += [f'[url "{gate}"]', f"\tinsteadOf = {remote.url}"]
        return AgentAddon(gitconfig="\n".join(lines) + "\n")


SIDECAR = GIT_GATE = _GitGate()
