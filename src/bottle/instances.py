"""Listing and cleaning up instances: state directories joined with ``docker compose ls``.

Nothing else is a source of truth: the state directory says what ran and how it ended,
compose says what is still up.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel

from bottle.engine import compose as engine
from bottle.errors import BottleError
from bottle.instance import Instance, owner_alive
from bottle.settings import Settings
from bottle.state import DOWN, InstanceStatus, StateDir, state_dirs

_PREFIX = "bottle-"


class InstanceInfo(BaseModel):
    """One row of ``bottle ls``."""

    slug: str
    agent: str | None
    bottle: str | None
    status: str
    recorded_status: str | None  # what metadata.json says, when it differs from ``status``
    compose_project: str
    running: int  # containers up now
    started_at: datetime | None
    cwd: str | None
    state_dir: str | None
    sidecars: dict[str, dict[str, Any]] = {}  # what each sidecar describes (no secrets)


def _effective(status: InstanceStatus, running: int, owner_ok: bool) -> InstanceStatus:
    live = (InstanceStatus.RUNNING, InstanceStatus.STARTING, InstanceStatus.STOPPING)
    if status in live and (not owner_ok or running == 0):
        return InstanceStatus.PRESERVED
    return status


def instances(settings: Settings | None = None) -> list[InstanceInfo]:
    """Every instance with a state directory, plus compose projects of ours that lack one."""
    settings = settings or Settings.from_env()
    projects = engine.compose_ls()
    rows: list[InstanceInfo] = []
    seen: set[str] = set()
    for state in state_dirs(settings.state_root):
        try:
            meta = state.read_metadata()
        except BottleError:
            continue
        seen.add(meta.compose_project)
        running = projects.get(meta.compose_project, (0, 0))[0]
        status = _effective(meta.status, running, owner_alive(meta))
        rows.append(
            InstanceInfo(
                slug=meta.slug,
                agent=meta.agent,
                bottle=meta.bottle,
                status=status.value,
                recorded_status=meta.status.value if status != meta.status else None,
                compose_project=meta.compose_project,
                running=running,
                started_at=meta.started_at,
                cwd=meta.cwd,
                state_dir=str(state.path),
                sidecars=meta.sidecars,
            )
        )
    for name, (running, _exited) in sorted(projects.items()):
        if name.startswith(_PREFIX) and name not in seen:
            rows.append(
                InstanceInfo(
                    slug=name.removeprefix(_PREFIX),
                    agent=None,
                    bottle=None,
                    status="orphan",
                    recorded_status=None,
                    compose_project=name,
                    running=running,
                    started_at=None,
                    cwd=None,
                    state_dir=None,
                )
            )
    return rows


@dataclass
class CleanupPlan:
    """What ``cleanup`` would do; ``bottle cleanup`` shows it and asks first."""

    take_down: list[str] = field(default_factory=list)  # preserved instances (slugs)
    remove_state: list[str] = field(default_factory=list)  # finished state dirs (slugs)
    orphan_containers: list[str] = field(default_factory=list)
    orphan_networks: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (
            self.take_down or self.remove_state or self.orphan_containers or self.orphan_networks
        )


def plan_cleanup(settings: Settings | None = None) -> CleanupPlan:
    settings = settings or Settings.from_env()
    plan = CleanupPlan()
    live_slugs: set[str] = set()
    for row in instances(settings):
        if row.status in {InstanceStatus.PRESERVED.value, "orphan"}:
            plan.take_down.append(row.slug)
        elif row.status in {s.value for s in DOWN}:
            plan.remove_state.append(row.slug)
        else:
            live_slugs.add(row.slug)
    keep = live_slugs | set(plan.take_down)
    containers, networks = engine.labelled("bottle.slug")
    plan.orphan_containers = [c for c, slug in containers.items() if slug not in keep]
    plan.orphan_networks = [n for n, slug in networks.items() if slug not in keep]
    return plan


def run_cleanup(plan: CleanupPlan, settings: Settings | None = None) -> None:
    settings = settings or Settings.from_env()
    for slug in plan.take_down:
        state = StateDir(settings.state_root / slug)
        if state.exists():
            Instance(state).stop(status=InstanceStatus.STOPPED)
        else:
            # A project with no state directory: remove its labelled objects directly.
            engine.remove(*engine.labelled(f"bottle.slug={slug}"))
    engine.remove(plan.orphan_containers, plan.orphan_networks)
    for slug in plan.remove_state:
        shutil.rmtree(settings.state_root / slug, ignore_errors=True)


def resolve(slug: str, settings: Settings | None = None) -> Instance:
    """The instance named by ``slug`` or by a unique prefix of one."""
    from bottle.errors import InstanceNotFound

    settings = settings or Settings.from_env()
    if StateDir(settings.state_root / slug).exists():
        return Instance(StateDir(settings.state_root / slug))
    matches = [s for s in state_dirs(settings.state_root) if s.slug.startswith(slug) and s.exists()]
    if len(matches) == 1:
        return Instance(matches[0])
    if matches:
        names = ", ".join(s.slug for s in matches)
        raise InstanceNotFound(
            f"{slug!r} matches several instances: {names}", hint="Give more of the slug."
        )
    raise InstanceNotFound(f"no instance {slug!r}", hint="List instances with 'bottle ls'.")
