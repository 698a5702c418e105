"""Listing and cleaning up instances: state directories joined with ``docker compose ls``.

Nothing else is a source of truth: the state directory says what ran and how it ended,
compose says what is still up.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bottle.engine import compose as engine
from bottle.engine.compose import ServiceState
from bottle.errors import BottleError, InstanceNotFound, StateError
from bottle.files import locked
from bottle.instance import DOWN_FAILED, WELL, Instance, health_of
from bottle.settings import Settings
from bottle.state import DOWN, InstanceStatus, StateDir, owner_alive, state_dirs

_PREFIX = "bottle-"


class InstanceInfo(BaseModel):
    """One row of ``bottle ls``."""

    slug: str
    agent: str | None
    bottle: str | None
    status: str  # an InstanceStatus, "degraded" (running, a sidecar is not) or "orphan"
    recorded_status: str | None  # what metadata.json says, when it differs from ``status``
    sidecars: dict[str, str] = {}  # a running instance's sidecars: name -> state (see health)
    compose_project: str
    running: int  # containers up now
    started_at: datetime | None
    cwd: str | None
    state_dir: str | None
    sidecar_info: dict[str, dict[str, Any]] = {}  # what each sidecar describes (no secrets)
    error: str | None = None  # what metadata.json says went wrong (e.g. "down failed: …")

    @property
    def down_failed(self) -> bool:
        """Its ``down`` left something behind: shown until cleanup takes it down."""
        return self.status == InstanceStatus.PRESERVED.value and (self.error or "").startswith(
            DOWN_FAILED
        )


#: What ``ls`` shows for a running instance one of whose sidecars is not running well.
DEGRADED = "degraded"


def _effective(status: InstanceStatus, running: int, owner_ok: bool) -> InstanceStatus:
    if status == InstanceStatus.STARTING and owner_ok:
        return status  # its containers may not exist yet
    live = (InstanceStatus.RUNNING, InstanceStatus.STARTING, InstanceStatus.STOPPING)
    if status in live and (not owner_ok or running == 0):
        return InstanceStatus.PRESERVED
    return status


def _sidecars(services: list[str], found: list[ServiceState]) -> dict[str, str]:
    """The sidecars' states of a running instance."""
    health = health_of(services, found)
    return {name: value for name, value in sorted(health.items()) if name != "agent"}


def instances(settings: Settings | None = None) -> list[InstanceInfo]:
    """Every instance with a state directory, plus compose projects of ours that lack one."""
    settings = Settings.default() if settings is None else settings
    # One docker child for every instance's containers: ls answers at once with 20 running.
    listed = engine.containers("bottle.slug")
    states: dict[str, list[ServiceState]] = {}
    for container in listed:
        states.setdefault(container.project, []).append(container.state)
    projects = {
        name: (
            sum(s.state == "running" for s in found),
            sum(s.state != "running" for s in found),
        )
        for name, found in states.items()
        if name
    }
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
        found = states.get(meta.compose_project, [])
        sidecars = _sidecars(meta.services, found) if status == InstanceStatus.RUNNING else {}
        shown = DEGRADED if any(v not in WELL for v in sidecars.values()) else status.value
        rows.append(
            InstanceInfo(
                slug=meta.slug,
                agent=meta.agent,
                bottle=meta.bottle,
                status=shown,
                recorded_status=meta.status.value if shown != meta.status else None,
                sidecars=sidecars,
                compose_project=meta.compose_project,
                running=running,
                started_at=meta.started_at,
                cwd=meta.cwd,
                state_dir=str(state.path),
                sidecar_info=meta.sidecar_info,
                error=meta.error,
            )
        )
    # A project without a state dir is an orphan only if this home started it.
    ours = {_PREFIX + c.slug for c in listed if c.home == settings.home_id}
    for name, (running, _exited) in sorted(projects.items()):
        if name in ours and name not in seen:
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
    #: Stopped and failed state dirs, kept unless asked for (``everything``): they hold an
    #: audit log, proposals and capabilities someone may still need.
    kept_state: list[str] = field(default_factory=list)

    def remove_kept(self) -> None:
        """Remove the stopped and failed state dirs too (the user said so)."""
        self.remove_state += self.kept_state
        self.kept_state = []

    @property
    def empty(self) -> bool:
        return not (
            self.take_down or self.remove_state or self.orphan_containers or self.orphan_networks
        )


def plan_cleanup(settings: Settings, *, everything: bool = False) -> CleanupPlan:
    """What cleanup would do: finished state dirs go; stopped and failed ones only with
    ``everything`` (else they are in ``kept_state``)."""
    plan = CleanupPlan()
    live_slugs: set[str] = set()
    for row in instances(settings):
        if row.status in {InstanceStatus.PRESERVED.value, "orphan"}:
            plan.take_down.append(row.slug)
        elif row.status == InstanceStatus.FINISHED.value:
            plan.remove_state.append(row.slug)
        elif row.status in {s.value for s in DOWN}:
            (plan.remove_state if everything else plan.kept_state).append(row.slug)
        else:
            live_slugs.add(row.slug)
    keep = live_slugs | set(plan.take_down)
    # Only this home's: another BOTTLE_HOME's instances on the same engine are not orphans.
    containers, networks = engine.labelled(
        f"bottle.home={settings.home_id}", value_of="bottle.slug"
    )
    plan.orphan_containers = [c for c, slug in containers.items() if slug not in keep]
    plan.orphan_networks = [n for n, slug in networks.items() if slug not in keep]
    return plan


@dataclass(frozen=True)
class CleanupStep:
    """One thing ``run_cleanup`` did, or tried: ``error`` says why it failed."""

    action: str  # "take down", "remove dir", "remove container", "remove network"
    target: str  # a slug, or a container or network id
    error: BottleError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def run_cleanup(plan: CleanupPlan, settings: Settings) -> list[CleanupStep]:
    """Do ``plan``, every item even after one fails; one step per item, in order."""
    steps = [_step("take down", s, partial(_take_down, s, settings)) for s in plan.take_down]
    steps += [
        _step("remove container", c, partial(engine.remove, [c], []))
        for c in plan.orphan_containers
    ]
    steps += [
        _step("remove network", n, partial(engine.remove, [], [n])) for n in plan.orphan_networks
    ]
    steps += [
        _step("remove dir", s, partial(_remove_state, s, settings)) for s in plan.remove_state
    ]
    return steps


def _step(action: str, target: str, do: Callable[[], None]) -> CleanupStep:
    try:
        do()
    except BottleError as exc:
        return CleanupStep(action, target, exc)
    return CleanupStep(action, target)


def _take_down(slug: str, settings: Settings) -> None:
    state = StateDir.lookup(settings.state_root, slug)
    if state.exists():
        instance = Instance(state)
        try:
            with locked(state.path / ".operator.lock", wait_s=0):
                _require_still_preserved(instance)
                instance.stop(status=InstanceStatus.STOPPED)
        except TimeoutError:
            raise StateError(
                f"{slug} is being changed (a resume or an approval): not taken down",
                hint="Run 'bottle cleanup' again once it is done.",
            ) from None
        if instance.status == InstanceStatus.PRESERVED:
            raise StateError(
                instance.metadata.error or f"{slug} is still not down",
                hint="See what holds its network ('docker network inspect'), then run "
                "'bottle cleanup' again.",
            )
    else:
        # A project with no state directory: remove its labelled objects directly.
        engine.remove(*engine.labelled(f"bottle.slug={slug}"))


def _remove_state(slug: str, settings: Settings) -> None:
    state = StateDir.lookup(settings.state_root, slug)
    path = state.path
    try:
        # Under the operator lock, and only if still down: cleanup asks before it acts, and
        # a 'bottle resume' meanwhile must keep its state dir.
        with locked(path / ".operator.lock", wait_s=0):
            _require_down(state)
            try:
                shutil.rmtree(path)
            except PermissionError:
                # The agent runs as this user and may have locked what it made (chmod 000).
                _open_dirs(path)
                shutil.rmtree(path)
    except TimeoutError:
        raise StateError(
            f"{slug} is being changed (a resume or an approval): not removed",
            hint="Run 'bottle cleanup' again once it is done.",
        ) from None
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StateError(
            f"cannot remove {path}: {exc.strerror or exc}",
            hint="Check its owner and permissions (the agent may have written files as "
            "another user), then run 'bottle cleanup' again.",
        ) from None


def _require_still_preserved(instance: Instance) -> None:
    """StateError when a 'bottle resume' brought it back since cleanup planned to stop it."""
    metadata = instance.metadata
    live = metadata.status == InstanceStatus.RUNNING and owner_alive(metadata)
    if live and instance.health().get("agent") in WELL:
        raise StateError(
            f"{instance.slug} is running again: not taken down",
            hint=f"Stop it with 'bottle stop {instance.slug}' if it should go.",
        )


def _require_down(state: StateDir) -> None:
    """StateError when the instance came back up since cleanup planned to remove it."""
    try:
        status = state.read_metadata().status
    except (StateError, InstanceNotFound):
        return  # no or unreadable metadata: nothing runs that bottle could resume
    if status not in DOWN:
        raise StateError(
            f"{state.slug} is {status.value} now: not removed",
            hint="See 'bottle ls'; stop it first if it should go.",
        )


def _open_dirs(top: Path) -> None:
    """Give this user rwx on every directory below ``top`` again, following no link.

    Each child is chmodded before the walk enters it; a name that is not a directory (a
    link included) is left alone. Only for a state dir no container runs on any more.
    """
    os.chmod(top, 0o700)
    for parent, dirs, _files in os.walk(top):
        for name in dirs:
            child = os.path.join(parent, name)
            with contextlib.suppress(OSError):
                if stat.S_ISDIR(os.lstat(child).st_mode):
                    os.chmod(child, 0o700)


def resolve(slug: str, settings: Settings) -> Instance:
    """The instance named by ``slug`` or by a unique prefix of one; ``SlugError`` if not a slug."""
    exact = StateDir.lookup(settings.state_root, slug)
    if exact.exists():
        return Instance(exact)
    matches = [s for s in state_dirs(settings.state_root) if s.slug.startswith(slug) and s.exists()]
    if len(matches) == 1:
        return Instance(matches[0])
    if matches:
        names = ", ".join(s.slug for s in matches)
        raise InstanceNotFound(
            f"{slug!r} matches several instances: {names}", hint="Give more of the slug."
        )
    raise InstanceNotFound(f"no instance {slug!r}", hint="List instances with 'bottle ls'.")
