"""``Bottle(...)``: from files to a running instance.

files -> Manifest -> BottlePlan -> compose dict -> state dir -> ``compose up`` -> Instance.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bottle import compose, hardening, subnets, workspace
from bottle.engine.seam import DockerEngine, Engine
from bottle.errors import BottleError, PlanError
from bottle.files import atomic_write, now
from bottle.instance import START_TIMEOUT, Ask, Instance, Progress, compose_env
from bottle.manifest import Manifest, load_manifest
from bottle.plan import BottlePlan, PlanOptions, resolve_plan
from bottle.providers import seed_transcript
from bottle.readiness import up_in_order
from bottle.settings import Settings, package_version
from bottle.sidecars import enabled_sidecars
from bottle.state import InstanceStatus, Metadata, StateDir

__all__ = ["START_TIMEOUT", "Ask", "Bottle", "Progress", "resume"]


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
            self._manifest = load_manifest(
                home=self.settings.home, cwd=self.options.cwd, strict=False
            )
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
        plan.require_workspace()
        if plan.agent_is_root:
            say(
                f"warning: the agent runs as root (bottle {plan.bottle!r} allows it), "
                "without any capability"
            )
        answers = plan.answers(ask)
        subnets.parse_pool(self.settings.subnet_pool)  # a bad setting fails before any build
        found = self.engine.preflight([spec.ref for spec in plan.images.specs])
        say("checking images")
        for spec in plan.images.specs:
            if spec.ref in found.missing:
                self.engine.ensure_image(spec, settings=self.settings, progress=say)
        # Listed with the images; a build takes long enough for other networks to come.
        in_use = self.engine.subnets_in_use if found.missing else lambda: found.subnets

        state = StateDir(plan.state_dir)
        state.create()
        instance = Instance(state, engine=self.engine)
        try:
            hardening.prepare_state(plan, state)
            leased = subnets.lease(
                state.path.parent,
                plan.slug,
                pool=self.settings.subnet_pool,
                in_use=in_use,
            )
            plan = replace(plan, subnets=leased)
            self._write_state(plan, state, owner_pid)
            say(f"starting {plan.compose_project}")
            up_in_order(
                instance,
                enabled_sidecars(plan),
                env=compose_env(plan, self.environ, answers),
                wait_timeout=wait_timeout,
            )
            # A detached start owned the state only while starting; nobody owns it now.
            state.transition(InstanceStatus.RUNNING, pid=owner_pid)
        except BaseException as exc:
            _fail(instance, exc)
            raise
        say(f"{plan.slug} is running")
        return instance

    def _write_state(self, plan: BottlePlan, state: StateDir, owner_pid: int | None) -> None:
        spec = compose.render(plan)
        for sidecar in enabled_sidecars(plan):
            state.write_files(
                state.live_config(sidecar.name), sidecar.files(plan.sidecars[sidecar.name])
            )
        state.write_files(state.path / "agent", compose.agent_files(plan))
        seed_transcript(plan, state.transcript)
        state.make_home_dirs(compose.home_mount_points(plan))
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


def resume(
    slug: str,
    *,
    settings: Settings | None = None,
    environ: Mapping[str, str] | None = None,
    engine: Engine | None = None,
    progress: Progress | None = None,
    ask: Ask | None = None,
    owner_pid: int | None = None,
    wait_timeout: int = START_TIMEOUT,
) -> Instance:
    """Bring instance ``slug`` (preserved, finished or stopped) up again: ``Instance.resume``."""
    settings = Settings.default() if settings is None else settings
    instance = Instance.open(slug, settings=settings, engine=engine)
    return instance.resume(
        environ=environ,
        ask=ask,
        progress=progress,
        owner_pid=owner_pid,
        settings=settings,
        wait_timeout=wait_timeout,
    )


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
