"""The sidecars: one module each, all behind the small ``Sidecar`` protocol.

Adding a sidecar means writing its module and adding one line to ``SIDECARS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from bottle.plan import BottlePlan
from bottle.sidecars.egress import EGRESS
from bottle.sidecars.git_gate import GIT_GATE
from bottle.sidecars.supervise import SUPERVISE


@runtime_checkable
class Sidecar(Protocol):
    """What the renderer and the lifecycle need to know about one sidecar."""

    name: str

    def enabled(self, plan: BottlePlan) -> bool:
        """Whether this instance runs the sidecar."""
        ...

    def compose_service(self, plan: BottlePlan) -> dict[str, Any]:
        """Its service stanza (no secret values: secrets are named, never written)."""
        ...

    def files(self, plan: BottlePlan) -> Mapping[str, bytes]:
        """Files for ``live-config/<name>/``, by name relative to that directory."""
        ...


SIDECARS: tuple[Sidecar, ...] = (EGRESS, SUPERVISE, GIT_GATE)


def enabled_sidecars(plan: BottlePlan) -> tuple[Sidecar, ...]:
    return tuple(s for s in SIDECARS if s.enabled(plan))


__all__ = ["SIDECARS", "Sidecar", "enabled_sidecars"]
