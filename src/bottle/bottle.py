"""``Bottle(...)``: from files to a running instance.

files -> Manifest -> BottlePlan -> compose dict -> state dir -> ``compose up`` -> Instance.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bottle import compose, hardening, workspace
from bottle.engine.seam import DockerEngine, Engine
from bottle.errors import BottleError, PlanError
from bottle.files import atomic_write, now
from bottle.instance import Instance
from bottle.machine import host_addresses
from bottle.manifest import Manifest, load_manifest
from bottle.plan import BottlePlan, PlanOptions, resolve_plan
from bottle.readiness import wait_ready
from bottle.settings import Settings, package_version
from bottle.sidecars import Sidecar, enabled_sidecars
from bottle.state import InstanceStatus, Metadata, StateDir

Progress = Callable[[str], None]
Ask = Callable[[str, str], str]  # (variable, question) -> answer

#: How long a start may wait for every service to run and every sidecar to serve, in seconds.
START_TIMEOUT = 120


class Bottle:
    """One agent in one bottle, from one working directory; ``start()`` brings it up."""

    def __init__(
        self,
        agent: str = "shell",
        *,
        bottle: str | None = None,
        cwd: Path | str | None = None,
        args: Sequence[str] = (),
        settings: Settings | None = None,
        environ: Mapping[str, str] | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.settings = Settings.default() if settings is None else settings
        self.engine: Engine = DockerEngine() if engine is None else engine
        self.environ = dict(os.environ if environ is None else environ)
        self.options = PlanOptions(
            agent=agent,
            bottle=bottle,
            cwd=Path(cwd) if cwd is not None else Path.cwd(),
            extra_args=tuple(args),
        )
        self._manifest: Manifest | None = None
        self._plan: BottlePlan | None = None

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = load_manifest(home=self.settings.home, cwd=self.options.cwd)
        return self._manifest

    def plan(self) -> BottlePlan:
        """The resolved plan; the same object on every call."""
        if self._plan is None:
            self._plan = resolve_plan(
                self.manifest,
                self.options,
                settings=self.settings,
                environ=self.environ,
                version=package_version(),
            )
        return self._plan

    def render(self) -> dict[str, Any]:
        return compose.render(self.plan())

    def start(
        self,
        *,
        progress: Progress | None = None,
        ask: Ask | None = None,
        owner_pid: int | None = None,
        wait_timeout: int = START_TIMEOUT,
    ) -> Instance:
        """Build what is missing, write the state directory and bring the project up.

        All or nothing: on any exception, Ctrl-C included, ``compose.log`` is written,
        everything started is taken down, the metadata says ``failed``, and it re-raises.
        ``owner_pid`` marks an attended session: if that process dies, ``bottle ls`` shows
        the instance as preserved.
        """
        say = progress or (lambda _msg: None)
        plan = self.plan()
        _require_available(plan)
        plan.require_env()
        plan.require_user()
        if plan.agent_is_root:
            say(
                f"warning: the agent runs as root (bottle {plan.bottle!r} allows it), "
                "without any capability"
            )
        answers = self._answers(plan, ask)
        self.engine.check()
        say("checking images")
        for spec in plan.images.specs:
            self.engine.ensure_image(spec, settings=self.settings, progress=say)

        state = StateDir(plan.state_dir)
        state.create()
        hardening.prepare_state(plan, state)
        instance = Instance(state, engine=self.engine)
        try:
            self._write_state(plan, state, owner_pid)
            say(f"starting {plan.compose_project}")
            values = {name: self.environ[name] for name in self._host_vars(plan)}
            machine = {"BOTTLE_HOST_ADDRESSES": ",".join(host_addresses())}
            env = {**values, **answers, **machine}
            _up(instance, enabled_sidecars(plan), env=env, wait_timeout=wait_timeout)
            # A detached start owned the state only while starting; nobody owns it now.
            state.transition(InstanceStatus.RUNNING, pid=owner_pid)
        except BaseException as exc:
            _fail(instance, exc)
            raise
        say(f"{plan.slug} is running")
        return instance

    @staticmethod
    def _host_vars(plan: BottlePlan) -> list[str]:
        names = [e.value for e in plan.env if e.kind == "host"]
        return list(dict.fromkeys([*names, *plan.secret_refs]))

    @staticmethod
    def _answers(plan: BottlePlan, ask: Ask | None) -> dict[str, str]:
        asked = [e for e in plan.env if e.kind == "ask"]
        if asked and ask is None:
            raise PlanError(
                f"bottle {plan.bottle!r} asks for {', '.join(e.name for e in asked)} at start",
                hint="Start it from a terminal so bottle can ask, or set the value in the "
                "bottle's env.",
            )
        return {e.process_var: ask(e.name, e.value) for e in asked} if ask else {}

    def _write_state(self, plan: BottlePlan, state: StateDir, owner_pid: int | None) -> None:
        spec = compose.render(plan)
        for sidecar in enabled_sidecars(plan):
            state.write_files(
                state.live_config(sidecar.name), sidecar.files(plan.sidecars[sidecar.name])
            )
        state.write_files(state.path / "agent", compose.agent_files(plan))
        workspace.record_baseline(state.path, plan.cwd)
        atomic_write(state.compose_file, compose.dump_yaml(spec))
        state.write_plan(plan)
        stamp = now()
        state.write_metadata(
            Metadata(
                slug=plan.slug,
                agent=plan.agent,
                bottle=plan.bottle,
                provider=plan.provider,
                agent_args=list(plan.agent_args),
                cwd=str(plan.cwd),
                compose_project=plan.compose_project,
                images={"agent": plan.images.agent, "sidecar": plan.images.sidecar},
                services=list(spec["services"]),
                sidecar_info={
                    s.name: s.describe(plan.sidecars[s.name]) for s in enabled_sidecars(plan)
                },
                status=InstanceStatus.STARTING,
                started_at=stamp,
                updated_at=stamp,
                # Even a detached start has an owner while it starts: if this process dies
                # mid-start, stop and cleanup can tell (bottle.state's recovery).
                pid=os.getpid() if owner_pid is None else owner_pid,
                version=plan.version,
            )
        )


def _up(
    instance: Instance,
    sidecars: Sequence[Sidecar[Any, Any]],
    *,
    env: Mapping[str, str],
    wait_timeout: int,
) -> None:
    """The sidecars first, then, once their status files say they serve, the agent.

    Readiness is read from the status files rather than a compose healthcheck (an exec in
    every sidecar every second, for the instance's whole life); the agent is started in a
    second step so that it never runs before its sidecars serve.
    """
    deadline = time.monotonic() + wait_timeout
    if sidecars:
        instance.compose.up(env=env, wait_timeout=wait_timeout, services=[s.name for s in sidecars])
        wait_ready(instance, sidecars, timeout=max(deadline - time.monotonic(), 1.0))
    left = max(int(deadline - time.monotonic()), 1)
    instance.compose.up(env=env, wait_timeout=left, services=["agent"])


def _require_available(plan: BottlePlan) -> None:
    """Refuse, before any image is built, a sidecar this version renders but cannot run."""
    for sidecar in enabled_sidecars(plan):
        refusal = sidecar.unavailable()
        if refusal is not None:
            raise PlanError(f"bottle {plan.bottle!r}: {refusal.message}", hint=refusal.hint)


def _fail(instance: Instance, exc: BaseException) -> None:
    """Undo a half-done start: keep the log, take everything down, say why."""
    reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc) or type(exc).__name__
    with contextlib.suppress(BottleError, OSError):
        if not instance.state.metadata_file.exists():
            # Nothing was started: leave no half-written state directory behind.
            shutil.rmtree(instance.state.path, ignore_errors=True)
            return
        instance.state.transition(InstanceStatus.FAILED, error=reason)
        instance.stop(status=InstanceStatus.FAILED)
