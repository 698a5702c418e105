"""supervise: the agent's only way to ask a human for more.

An MCP server (``bottle.runtime.supervise``) on the internal network alone. Its tools file
proposals as files in ``state/<slug>/proposals/``; the operator decides them on the host
(``bottle approve`` / ``bottle reject``), and the apply flows change the live instance.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bottle import layout
from bottle.plan import BottlePlan
from bottle.sidecars._common import bind, sidecar_base


class _Supervise:
    name = "supervise"

    def enabled(self, plan: BottlePlan) -> bool:
        return plan.supervise is not None

    def files(self, plan: BottlePlan) -> Mapping[str, bytes]:
        return {}

    def compose_service(self, plan: BottlePlan) -> dict[str, Any]:
        assert plan.supervise is not None
        state = plan.state_dir
        service = sidecar_base(plan, self.name, "bottle.runtime.supervise")
        service |= {
            "environment": [
                f"BOTTLE_SUPERVISE_WAIT={plan.supervise.wait_seconds}",
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

    def mcp_url(self) -> str:
        return f"http://supervise:{layout.SUPERVISE_PORT}/mcp"


SUPERVISE = _Supervise()
