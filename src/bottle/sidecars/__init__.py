"""The sidecars: one module each, all behind the ``Sidecar`` protocol (``base.py``).

Adding a sidecar means writing its module (exporting ``SIDECAR``) and adding one line to
``_MODULES``. The registry is loaded on first use, never at import time, so a sidecar module
may import the manifest models, the state helpers and the runtime formats freely.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bottle.sidecars.base import AgentAddon, PlanContext, Sidecar, SidecarBase, SidecarHost

if TYPE_CHECKING:
    from bottle.plan import BottlePlan

#: The registry, in rendering order (egress first: the agent's way out).
_MODULES = (
    "bottle.sidecars.egress",
    "bottle.sidecars.supervise",
    "bottle.sidecars.git_gate",
)


@functools.cache
def registry() -> tuple[Sidecar[Any, Any], ...]:
    """Every sidecar this version of bottle knows."""
    found: list[Sidecar[Any, Any]] = []
    for module in _MODULES:
        sidecar = importlib.import_module(module).SIDECAR
        if not isinstance(sidecar, Sidecar):
            raise TypeError(f"{module}.SIDECAR does not implement the Sidecar protocol")
        found.append(sidecar)
    return tuple(found)


def sidecar(name: str) -> Sidecar[Any, Any]:
    for candidate in registry():
        if candidate.name == name:
            return candidate
    raise KeyError(name)


def import_records(state_dir: Path) -> list[str]:
    """Every sidecar's records for the host's audit log, imported (``Sidecar.import_records``):
    the problems, each named by its sidecar. Every sidecar is asked, enabled or not: an
    instance's plan need not be read for it, and one that never ran has logged nothing."""
    problems = []
    for candidate in registry():
        problem = candidate.import_records(state_dir)
        if problem:
            problems.append(f"{candidate.name}: {problem}")
    return problems


def enabled_sidecars(plan: BottlePlan) -> tuple[Sidecar[Any, Any], ...]:
    """The sidecars this instance runs, in registry order."""
    return tuple(s for s in registry() if s.name in plan.sidecars)


__all__ = [
    "AgentAddon",
    "PlanContext",
    "Sidecar",
    "SidecarBase",
    "SidecarHost",
    "enabled_sidecars",
    "import_records",
    "registry",
    "sidecar",
]
