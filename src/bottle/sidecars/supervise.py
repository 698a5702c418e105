"""supervise: the agent's only way to ask a human for more.

An MCP server (``bottle.runtime.supervise``) on the internal network alone. Its tools file
proposals as files in ``state/<slug>/proposals/``; the operator decides them on the host
(``bottle approve`` / ``bottle reject``), and the apply flows change the live instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field, model_validator

from bottle import layout
from bottle.manifest.models import Strict
from bottle.proposals.limits import DEFAULT_BURST, DEFAULT_MAX_PENDING, DEFAULT_PER_MINUTE
from bottle.sidecars._common import bind, sidecar_base
from bottle.sidecars.base import AgentAddon, PlanContext, SidecarBase

if TYPE_CHECKING:
    from bottle.plan import BottlePlan


class Supervise(Strict):
    """``supervise:`` of a bottle file: ``true``/``false``, or a mapping of its settings.

    What the file does not set stays out of ``model_fields_set``, so ``extends`` can merge
    the settings one by one.
    """

    enabled: bool = True
    wait: int = Field(
        30,
        ge=1,
        le=3600,
        description="seconds a filing tool waits for the operator before answering 'pending'",
    )
    max_pending: int = Field(
        DEFAULT_MAX_PENDING,
        ge=1,
        le=1000,
        description="proposals that may wait for a decision at once; more are refused",
    )
    per_minute: int = Field(
        DEFAULT_PER_MINUTE, ge=1, le=600, description="proposals filed per minute, on average"
    )
    burst: int = Field(
        DEFAULT_BURST, ge=1, le=100, description="proposals filed at once after a quiet spell"
    )

    @model_validator(mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        if isinstance(value, bool):
            return {"enabled": value}
        if value is None:
            return {}
        if not isinstance(value, dict | Supervise):
            raise ValueError("give true, false or settings such as {wait: 30}")
        return value


class SupervisePlan(Strict):
    wait_seconds: int = 30
    max_pending: int = DEFAULT_MAX_PENDING
    per_minute: int = DEFAULT_PER_MINUTE
    burst: int = DEFAULT_BURST


class _Supervise(SidecarBase[Supervise, SupervisePlan]):
    name = "supervise"
    section = "supervise"
    section_model = Supervise
    plan_model = SupervisePlan
    direct = True

    def default_section(self) -> Supervise:
        return Supervise()

    def merge(self, base: Supervise | None, child: Supervise | None) -> Supervise:
        """Field by field: ``supervise: true`` keeps an inherited ``wait``."""
        base = base or Supervise()
        if child is None:
            return base
        return base.model_copy(update={k: getattr(child, k) for k in child.model_fields_set})

    def plan(self, section: Supervise | None, ctx: PlanContext) -> SupervisePlan | None:
        section = section or Supervise()
        if not section.enabled:
            return None
        return SupervisePlan(
            wait_seconds=section.wait,
            max_pending=section.max_pending,
            per_minute=section.per_minute,
            burst=section.burst,
        )

    def summary(self, section: Supervise | None) -> dict[str, int | bool]:
        return {"supervise": (section or Supervise()).enabled}

    def compose_service(self, sub: SupervisePlan, plan: BottlePlan) -> dict[str, Any]:
        state = plan.state_dir
        service = sidecar_base(plan, self.name, "bottle.runtime.supervise")
        service |= {
            "environment": [
                f"BOTTLE_SUPERVISE_WAIT={sub.wait_seconds}",
                f"BOTTLE_SUPERVISE_MAX_PENDING={sub.max_pending}",
                f"BOTTLE_SUPERVISE_PER_MINUTE={sub.per_minute}",
                f"BOTTLE_SUPERVISE_BURST={sub.burst}",
                f"BOTTLE_AGENT_IMAGE={plan.images.agent}",
            ],
            "volumes": [
                bind(
                    state / "live-config" / "egress", layout.LIVE_CONFIG / "egress", read_only=True
                ),
                bind(state / "proposals", layout.PROPOSALS),
                bind(state / "status", layout.STATUS),
            ],
            "networks": ["internal"],
        }
        return service

    def agent(self, sub: SupervisePlan, *, direct: Sequence[str]) -> AgentAddon:
        url = f"http://{self.name}:{layout.SUPERVISE_PORT}/mcp"
        return AgentAddon(mcp_servers={self.name: {"type": "http", "url": url}})


SIDECAR = SUPERVISE = _Supervise()
