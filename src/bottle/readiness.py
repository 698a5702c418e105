"""Waiting, on the host, until an instance's sidecars serve: their status files say so.

Each sidecar writes ``status/<name>.json`` (bind-mounted from the state dir) once it serves,
and removes a stale one first. The host reads those files instead of a compose healthcheck:
a healthcheck execs a process in every sidecar every second for the instance's whole life,
which is most of what an idle instance costs the host.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from bottle.errors import StartTimeout
from bottle.text import inert

if TYPE_CHECKING:
    from bottle.engine.seam import Project
    from bottle.sidecars.base import HostState, Sidecar

    Sidecars = Sequence[Sidecar[Any, Any]]


class Starting(Protocol):
    """What the wait needs of an instance being started (``bottle.instance.Instance``)."""

    @property
    def slug(self) -> str: ...

    @property
    def state(self) -> HostState: ...

    @property
    def compose(self) -> Project: ...


#: How often the status files are read while waiting, in seconds.
POLL_S = 0.05
#: How often compose is asked whether a sidecar died meanwhile (a ``ps`` costs ~0.2 s).
PS_EVERY_S = 2.0
#: Lines of a failing sidecar's log the error shows.
TAIL = 8


def wait_ready(
    host: Starting,
    sidecars: Sidecars,
    *,
    timeout: float,
    fresh_since: Mapping[str, float] | None = None,
) -> None:
    """Return once every sidecar's status file parses; StartTimeout after ``timeout`` s.

    ``fresh_since[name]``: that sidecar's file counts only if written at or after that
    ``time.time()`` (one an earlier run left is no sign of this one). A sidecar whose
    container stopped meanwhile fails the wait at once. The error names the sidecars not
    ready and shows the last lines of their logs (inert: a sidecar's output may carry text
    an upstream chose).
    """
    now = time.monotonic
    deadline = now() + timeout
    next_ps = now() + PS_EVERY_S
    waiting = list(sidecars)
    since = fresh_since or {}
    while True:
        waiting = [s for s in waiting if not _ready(host, s, since.get(s.name))]
        if not waiting:
            return
        if now() >= deadline:
            raise _not_ready(host, waiting, f"did not become ready within {timeout:g} s")
        if now() >= next_ps:
            stopped = _stopped(host, waiting)
            if stopped:
                raise _not_ready(host, stopped, "stopped before it became ready")
            next_ps = now() + PS_EVERY_S
        time.sleep(POLL_S)


def _ready(host: Starting, sidecar: Sidecar[Any, Any], since: float | None) -> bool:
    if since is not None:
        try:
            if host.state.status_file(sidecar.name).lstat().st_mtime < since:
                return False
        except OSError:
            return False
    return sidecar.status(host).ready


def _running(host: Starting) -> dict[str, str]:
    """Each running service's container id."""
    return {s.service: s.container_id for s in host.compose.ps() if s.state == "running"}


def _stopped(host: Starting, sidecars: Sidecars) -> Sidecars:
    states = {s.service: s.state for s in host.compose.ps()}
    return [s for s in sidecars if states.get(s.name, "missing") != "running"]


def _not_ready(host: Starting, sidecars: Sidecars, why: str) -> StartTimeout:
    return _failing(host, [s.name for s in sidecars], why)


def _not_running(host: Starting, services: Sequence[str]) -> StartTimeout:
    return _failing(host, services, "stopped as it started")


def _failing(host: Starting, services: Sequence[str], why: str) -> StartTimeout:
    lines = []
    for service in services:
        tail = host.compose.logs(services=[service], tail=TAIL).strip()
        if tail:
            lines.append(f"{service}, last lines:\n{inert(tail, multiline=True)}")
    hint = "\n".join(lines) or "Look at 'bottle logs' for the failing service."
    return StartTimeout(f"{host.slug}: {', '.join(services)} {why}", hint=hint)


def up_in_order(
    instance: Starting,
    sidecars: Sidecars,
    *,
    env: Mapping[str, str],
    wait_timeout: int,
) -> None:
    """Every container up in one compose call, then return once the sidecars serve and
    every container still runs.

    The agent's *program* never runs before its sidecars serve: the host execs it only
    after this returns. Until then the agent container holds ``sleep infinity`` under
    Docker's init and nothing else (compose sets the command; agent and capability
    Dockerfiles may set no ENTRYPOINT or CMD, bottle.dockerfiles), so starting it beside
    the sidecars saves a second compose call (about a second) and gives the agent nothing:
    its one network is ``internal``, where nothing but the sidecars answers, and they fail
    closed until they serve. A capability image that replaced ``sleep`` itself would run
    that code at once, but with exactly the walls it has a moment later.
    """
    deadline = time.monotonic() + wait_timeout
    # A resume finds the last run's status files (egress and git-gate leave theirs): only a
    # sidecar whose same container runs before and after ``up`` may keep its file; any other
    # must write one anew, or the agent could run before egress listens again.
    found = [s for s in sidecars if os.path.lexists(instance.state.status_file(s.name))]
    before = _running(instance) if found else {}
    began = time.time()
    services = [s.name for s in sidecars]
    instance.compose.up(env=env, wait_timeout=wait_timeout, services=[*services, "agent"])
    if sidecars:
        after = _running(instance) if before else {}
        fresh = {
            s.name: began
            for s in found
            if s.name not in before or before[s.name] != after.get(s.name)
        }
        wait_ready(
            instance, sidecars, timeout=max(deadline - time.monotonic(), 1.0), fresh_since=fresh
        )
    # ``up`` returns once every container started, not that it still runs (no ``--wait``):
    # a sidecar that served and died, or an agent container that exited, fails the start.
    states = {s.service: s.state for s in instance.compose.ps()}
    dead = [name for name in [*services, "agent"] if states.get(name, "missing") != "running"]
    if dead:
        raise _not_running(instance, dead)
