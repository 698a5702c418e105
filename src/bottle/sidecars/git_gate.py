"""git-gate: brokered git to the bottle's declared remotes.

The agent's git rewrites each remote URL (``insteadOf``) to the gate; the gate fetches from
the real remote and, on push, scans for secrets before forwarding with a key only it holds.
Rendered only when the bottle declares remotes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from bottle import layout
from bottle.plan import BottlePlan
from bottle.sidecars._common import bind, sidecar_base


class _GitGate:
    name = "git-gate"

    def enabled(self, plan: BottlePlan) -> bool:
        return plan.git_gate is not None

    def files(self, plan: BottlePlan) -> Mapping[str, bytes]:
        assert plan.git_gate is not None
        remotes = [r.model_dump(mode="json", exclude_none=True) for r in plan.git_gate.remotes]
        return {"remotes.json": json.dumps({"remotes": remotes}, indent=2).encode() + b"\n"}

    def compose_service(self, plan: BottlePlan) -> dict[str, Any]:
        assert plan.git_gate is not None
        state = plan.state_dir
        service = sidecar_base(plan, self.name, "bottle.runtime.git_gate")
        service |= {
            "environment": list(plan.git_gate.secret_refs),
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

    def agent_gitconfig(self, plan: BottlePlan) -> str:
        """insteadOf rewrites that send every declared remote through the gate."""
        assert plan.git_gate is not None
        lines = []
        for remote in plan.git_gate.remotes:
            gate = f"http://git-gate:{layout.GIT_GATE_PORT}/{remote.name}.git"
            lines += [f'[url "{gate}"]', f"\tinsteadOf = {remote.url}"]
        return "\n".join(lines) + "\n"


GIT_GATE = _GitGate()
