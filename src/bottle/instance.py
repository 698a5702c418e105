"""A running (or preserved) instance: exec, attach, logs, stop."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from bottle import execlog, workspace
from bottle.engine.compose import ExecResult, ServiceState
from bottle.engine.seam import DockerEngine, Engine, Project
from bottle.errors import BottleError, DownIncomplete, Refused, StateError
from bottle.files import atomic_write
from bottle.machine import host_addresses
from bottle.settings import Settings
from bottle.state import (
    DOWN,
    RESUMABLE,
    InstanceStatus,
    Metadata,
    StateDir,
    owner_alive,
    state_dirs,
)

if TYPE_CHECKING:
    from bottle.changes import ProposalsControl, RoutesControl
    from bottle.plan import BottlePlan

Progress = Callable[[str], None]
Ask = Callable[[str, str], str]  # (variable, question) -> answer

#: How long ``up`` may wait for every healthcheck, in seconds.
START_TIMEOUT = 120


class Instance:
    """One compose project and its state directory. A context manager: leaving stops it."""

    def __init__(self, state: StateDir, *, engine: Engine | None = None) -> None:
        self.state = state
        self.engine: Engine = DockerEngine() if engine is None else engine
        self._compose: Project | None = None

    @classmethod
    def open(
        cls, slug: str, *, settings: Settings | None = None, engine: Engine | None = None
    ) -> Instance:
        """The instance with this slug; raises SlugError (not a slug) or InstanceNotFound."""
        settings = Settings.default() if settings is None else settings
        state = StateDir.lookup(settings.state_root, slug)
        state.read_metadata()
        return cls(state, engine=engine)

    def __repr__(self) -> str:
        return f"<bottle.Instance {self.slug}>"

    @property
    def slug(self) -> str:
        return self.state.slug

    @property
    def metadata(self) -> Metadata:
        return self.state.read_metadata()

    @property
    def status(self) -> InstanceStatus:
        return self.metadata.status

    def effective_status(self) -> InstanceStatus:
        """The status, with a live one whose owning session died counted as PRESERVED."""
        metadata = self.metadata
        live = (InstanceStatus.RUNNING, InstanceStatus.STOPPING)
        if metadata.status in live and not owner_alive(metadata):
            return InstanceStatus.PRESERVED
        return metadata.status

    @property
    def compose(self) -> Project:
        if self._compose is None:
            self._compose = self.engine.project(
                compose_file=self.state.compose_file,
                project=self.metadata.compose_project,
                project_dir=self.state.path,
            )
        return self._compose

    @property
    def routes(self) -> RoutesControl:
        """The egress routes in force, and live changes to them (one transaction each)."""
        from bottle.changes import RoutesControl

        return RoutesControl(self)

    @property
    def proposals(self) -> ProposalsControl:
        """What the agent asked for through supervise, and the operator's decisions."""
        from bottle.changes import ProposalsControl

        return ProposalsControl(self)

    def health(self) -> dict[str, str]:
        """Each service's state now, from ``docker compose ps``: service -> state.

        ``running`` or ``healthy`` is well; otherwise the container's health (``unhealthy``,
        ``starting``) or state (``exited``, ``restarting``, ...), and ``missing`` for a
        service of the instance that has no container at all.
        """
        return health_of(self.metadata.services, self.compose.ps())

    # -- using it --------------------------------------------------------------------------

    def exec(
        self,
        argv: Sequence[str],
        *,
        tty: bool = False,
        capture: bool = False,
        service: str = "agent",
        user: str | None = None,
        stdin: bytes | None = None,
        record: bool = False,
    ) -> ExecResult:
        """Run a command in the agent (or another service); returns its exit code.

        ``record``: the command and its exit code go to the state dir's ``exec.log``
        (what an operator ran with ``bottle exec``; see ``recorded``).
        """
        self._require_up()
        result: list[ExecResult] = []

        def run() -> int:
            result.append(
                self.compose.exec(
                    service, list(argv), tty=tty, capture=capture, user=user, stdin=stdin
                )
            )
            return result[0].exit_code

        if record:
            self.recorded(argv, service, run)
        else:
            run()
        return result[0]

    def recorded(self, argv: Sequence[str], service: str, run: Callable[[], int]) -> int:
        """``run()`` (``argv`` in ``service``), its command and exit code in ``exec.log``
        (``bottle.execlog.recorded``)."""
        return execlog.recorded(self.state.path, argv, service, run)

    def attach(self, *, tty: bool = True, resume: bool = False) -> int:
        """Hand this terminal to the agent program (``exec -it``, never ``docker attach``);
        ``resume`` continues the conversation the transcript holds."""
        from bottle.providers import provider  # the manifest models: not for ls or exec

        metadata = self.metadata
        self.require_agent()
        argv = provider(metadata.provider).interactive_command(metadata.agent_args, resume=resume)
        return self.exec(argv, tty=tty).exit_code

    def require_agent(self) -> None:
        """StateError, naming ``bottle resume``, when the agent container does not run."""
        self._require_up()
        state = self.health().get("agent", "missing")
        if state not in WELL:
            raise StateError(
                f"the agent of {self.slug} is not running (its container is {state})",
                hint=f"Bring it back with 'bottle resume {self.slug}'.",
            )

    # -- bringing it back ------------------------------------------------------------------

    def resume(
        self,
        *,
        environ: Mapping[str, str] | None = None,
        ask: Ask | None = None,
        progress: Progress | None = None,
        owner_pid: int | None = None,
        settings: Settings | None = None,
        wait_timeout: int = START_TIMEOUT,
    ) -> Instance:
        """Bring a preserved, finished or stopped instance up again, as it was.

        The same state dir: the compose file is rendered again from ``plan.json`` (the
        agent image a capability approval installed included), the routes in force are
        ``live-config/``'s, the transcript, ``home/`` and the workspace are where they were.
        Host variables come from ``environ`` and ``?questions`` are asked again (they were
        never written down). Missing images are rebuilt when this version of bottle makes
        the same ones. The audit log records the resume. On any failure what was started is
        taken down and the status it had is put back. Attach with ``attach(resume=True)``.
        """
        # The package, not its ``transaction`` submodule: only this one door is allowed.
        import bottle.changes
        from bottle import compose, hardening, subnets  # the renderer: not for ls or exec
        from bottle.readiness import up_in_order
        from bottle.sidecars import enabled_sidecars

        say = progress or (lambda _msg: None)
        settings = Settings.default() if settings is None else settings
        environ = dict(os.environ if environ is None else environ)
        with bottle.changes.transaction(self) as change:
            prior = self._resumable()
            plan = self.state.read_plan()
            plan.require_workspace()
            plan.require_env(environ)
            answers = plan.answers(ask)
            found = self.engine.preflight([plan.images.sidecar, plan.images.agent])
            self._ensure_images(plan, settings, say, found.missing)
            if plan.subnets or prior != InstanceStatus.PRESERVED:
                # The held lease while its networks are up; new subnets once they went down
                # (a preserved instance of an older bottle keeps the networks it has).
                leased = subnets.lease(
                    self.state.path.parent,
                    self.slug,
                    pool=settings.subnet_pool,
                    # Listed with the images, unless a rebuild took time since.
                    in_use=self.engine.subnets_in_use if found.missing else lambda: found.subnets,
                )
                plan = replace(plan, subnets=leased)
                self.state.write_plan(plan)
            self.state.make_agent_dirs()
            hardening.prepare_state(plan, self.state)
            self.state.make_home_dirs(compose.home_mount_points(plan))
            if prior != InstanceStatus.PRESERVED:
                # Only once stop checked the workspace: with the agent maybe still up, a
                # new baseline would accept what it planted since.
                workspace.record_baseline(self.state.path, plan.cwd)
            atomic_write(self.state.compose_file, compose.dump_yaml(compose.render(plan)))
            before = self.metadata
            # ``replacing`` too: under the operator lock no replacement is under way, so one
            # recorded is an approver's that died (a session would wait for it in vain).
            self.state.transition(
                InstanceStatus.STARTING, pid=os.getpid(), error=None, exit_code=None, replacing=None
            )
            say(f"resuming {self.slug} (it was {prior.value})")
            states = self.health()
            for sidecar in enabled_sidecars(plan):
                if states.get(sidecar.name) not in WELL:
                    # Its last run's status file would count as ready before the new
                    # container removes it: the agent would start before egress listens.
                    self.state.status_file(sidecar.name).unlink(missing_ok=True)
            try:
                up_in_order(
                    self,
                    enabled_sidecars(plan),
                    env=compose_env(plan, environ, answers),
                    wait_timeout=wait_timeout,
                )
                self.state.transition(InstanceStatus.RUNNING, pid=owner_pid)
            except BaseException as exc:
                self._undo_resume(before, prior, exc)
                raise
            change.record(action="resume", reason=f"it was {prior.value}")
        say(f"{self.slug} is running again")
        return self

    def _resumable(self) -> InstanceStatus:
        """The status a resume starts from; Refused when it is not one to resume."""
        metadata = self.metadata
        status = metadata.status
        if status == InstanceStatus.RUNNING:
            if owner_alive(metadata) and self.health().get("agent") in WELL:
                raise Refused(
                    f"instance {self.slug} is running",
                    hint=f"Attach to it with 'bottle attach {self.slug}'.",
                )
            # Its session's process died, or its containers stopped: what ls calls preserved.
            self.preserve("its session ended without a stop")
            return InstanceStatus.PRESERVED
        if status not in RESUMABLE:
            hint = "Wait for it, or see 'bottle ls'."
            if status == InstanceStatus.FAILED:
                hint = "Its start failed, so no agent ran to continue: start a new one."
            raise Refused(f"instance {self.slug} is {status.value}; it cannot resume", hint=hint)
        return status

    def _ensure_images(
        self, plan: BottlePlan, settings: Settings, say: Progress, gone: frozenset[str]
    ) -> None:
        """Every image the instance runs, rebuilt when ``gone`` if this bottle makes the same."""
        from bottle.images import plan_images

        missing = [ref for ref in (plan.images.sidecar, plan.images.agent) if ref in gone]
        if not missing:
            return
        try:
            specs = plan_images(settings, plan.provider, plan.agent_dockerfile)
        except Refused:
            specs = []  # the custom Dockerfile is gone or changed: reported below
        known = {spec.ref for spec in specs}
        for ref in missing:
            if ref not in known:
                capability = (self.state.path / "capabilities").is_dir()
                raise Refused(
                    f"image {ref} of {self.slug} is gone, and this bottle cannot build it "
                    "again (its inputs changed since, or an approved capability made it)",
                    hint=f"Start a new instance with 'bottle start {plan.agent}'"
                    + (
                        f"; the capability Dockerfiles it approved are in "
                        f"{self.state.path / 'capabilities'}."
                        if capability
                        else "."
                    ),
                )
        say(f"rebuilding {len(missing)} image(s) of {self.slug}")
        for spec in specs:
            self.engine.ensure_image(spec, settings=settings, progress=say)

    def _undo_resume(self, before: Metadata, prior: InstanceStatus, exc: BaseException) -> None:
        """Take down what the failed resume started and put the status it had back.

        Written directly, not as a transition: the instance is what it was before (no
        container runs), only the error says that a resume was tried.
        """
        reason = "interrupted" if isinstance(exc, KeyboardInterrupt) else str(exc)
        with contextlib.suppress(BottleError):
            self._down_logged()
        with contextlib.suppress(BottleError, OSError):
            self.state.write_metadata(
                before.model_copy(
                    update={"status": prior, "pid": None, "error": f"resume failed: {reason}"}
                )
            )

    def _down_logged(
        self,
        *,
        while_stopping: Callable[[], None] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> StateError | None:
        """``_down``, ``compose.log`` written once every container stopped and before any is
        removed, or of what a failed ``down`` leaves; returns why the log was not written.
        ``while_stopping``: run while docker stops the containers; ``meanwhile``: what waits
        for the containers alone, run while the networks go."""
        kept = False
        lost: StateError | None = None

        def keep(text: str) -> None:
            nonlocal kept, lost
            kept = True
            try:
                self._write_compose_log(text)
            except OSError as exc:  # the containers still go: the log's loss is said
                lost = StateError(f"could not write {self.state.compose_log}: {exc}")

        try:
            self._down(keep_logs=keep, while_stopping=while_stopping, meanwhile=meanwhile)
        except BottleError as exc:
            if not kept and not isinstance(exc, DownIncomplete):
                with contextlib.suppress(BottleError, OSError):
                    self.save_compose_log()  # what is left: its logs while they can be read
            raise
        return lost

    def _down(
        self,
        *,
        keep_logs: Callable[[str], None] | None = None,
        while_stopping: Callable[[], None] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """``down`` (``keep_logs``, ``while_stopping`` and ``meanwhile`` as it says), then
        give the networks' subnets back (kept while a network is left)."""
        from bottle import subnets

        self.compose.down(keep_logs=keep_logs, while_stopping=while_stopping, meanwhile=meanwhile)
        subnets.release(self.state.path.parent, self.slug)

    def logs(self, *, services: Sequence[str] = (), tail: int | None = None) -> str:
        return self.compose.logs(services=services, tail=tail)

    def follow_logs(
        self, *, services: Sequence[str] = (), on_line: Callable[[str], None] | None = None
    ) -> int:
        """Each log line to ``on_line`` (containers' own text: show it inert) until Ctrl-C."""
        return self.compose.follow_logs(services, on_line=on_line)

    def record(self, name: str, line: str) -> None:
        """Append one time-stamped line to a record in the state dir's root
        (``layout.RUN_LOG``: a headless run's command and exit code), out of the agent's
        reach; ``bottle.execlog.append``."""
        execlog.append(self.state.path, name, execlog.entry(line))

    # -- ending it -------------------------------------------------------------------------

    def stop(
        self, *, status: InstanceStatus = InstanceStatus.STOPPED, exit_code: int | None = None
    ) -> None:
        """Save ``compose.log``, take every container and network down, record ``status``.

        Safe to call twice, and on an instance that never fully started: the log is saved
        once every container has stopped and before any is removed (so it holds their last
        lines too), or before the failed ``down`` leaves them, and ``down`` of a project
        with nothing left is a no-op. A start whose process died (``kill -9``) ends as
        ``failed``; one still going is refused.
        """
        metadata = self.metadata
        if metadata.status in DOWN and metadata.status != InstanceStatus.FAILED:
            return
        self.state.transition(InstanceStatus.STOPPING)
        error: BottleError | None = None
        left: DownIncomplete | None = None
        planted: list[str] = []

        def containers_gone() -> None:
            from bottle.sidecars import import_records

            import_records(self.state.path)  # the sidecars are down: all they logged is there
            planted.extend(self._check_workspace(metadata))

        def while_stopping() -> None:
            from bottle.sidecars import registry

            # Their modules (the manifest's models: a third of a second to import) are
            # loaded while docker stops the containers, not after: containers_gone asks them.
            registry()

        try:
            error = self._down_logged(while_stopping=while_stopping, meanwhile=containers_gone)
        except DownIncomplete as exc:
            left = exc  # the containers are gone: the rest of stop goes on
        except BottleError as exc:
            self.state.transition(InstanceStatus.PRESERVED, error=str(exc))
            raise
        final = status
        if metadata.status == InstanceStatus.STARTING:
            final = InstanceStatus.FAILED
            error = error or StateError(f"its start was cut short (process {metadata.pid} died)")
        elif metadata.status == InstanceStatus.FAILED:
            final = InstanceStatus.FAILED
        if left is not None:
            # Kept visible ('preserved', 'down failed' in ls) until cleanup gets it down.
            final, error = InstanceStatus.PRESERVED, StateError(f"{DOWN_FAILED}: {left.message}")
            sys.stderr.write(f"warning: {error.message}\nhint: {left.hint}\n")
        self.state.transition(
            final,
            exit_code=exit_code if exit_code is not None else metadata.exit_code,
            pid=None,
            error=str(error) if error else _kept_error(metadata.error),
            planted_git=sorted({*metadata.planted_git, *planted}),
        )

    def check_workspace(self) -> workspace.WorkspaceReport:
        """Git dirs that appeared in the workspace since start; reported, not touched.

        ``stop`` also renames them, once the agent can no longer race the rename.
        """
        return workspace.check(self.state.path, Path(self.metadata.cwd), quarantine=False)

    def _check_workspace(self, metadata: Metadata) -> list[str]:
        """After ``down``: remove the placeholders, neutralise planted git dirs, say so.

        Printed here, not left to callers: a planted git dir is a security warning that
        must reach the user before they next run git in that directory.
        """
        cwd = Path(metadata.cwd)
        if not self._cwd_shared(cwd):
            workspace.remove_placeholders(self.state.path, cwd)
        try:
            report = workspace.check(self.state.path, cwd, quarantine=True)
        except OSError as exc:
            sys.stderr.write(f"warning: could not check {cwd} for planted git dirs: {exc}\n")
            return []
        for line in report.warnings(cwd):
            sys.stderr.write(f"warning: {line}\n")
        return report.planted

    def _cwd_shared(self, cwd: Path) -> bool:
        """Whether another live instance works in ``cwd`` (its placeholders must stay)."""
        for other in state_dirs(self.state.path.parent):
            if other.slug == self.slug:
                continue
            with contextlib.suppress(BottleError, OSError):
                found = other.read_metadata()
                if found.cwd == str(cwd) and found.status not in DOWN:
                    return True
        return False

    def save_compose_log(self) -> None:
        """``docker compose logs --timestamps`` into ``compose.log`` (kept if there is none now)."""
        self._write_compose_log(self.compose.logs())

    def _write_compose_log(self, text: str) -> None:
        """``text`` as ``compose.log``; none (every container gone) keeps the one there."""
        if text.strip() or not self.state.compose_log.exists():
            atomic_write(self.state.compose_log, text + ("\n" if text else ""))

    def preserve(self, reason: str) -> None:
        """Leave the containers as they are (Ctrl-C, crash) and say so in the metadata."""
        with contextlib.suppress(StateError):
            self.state.transition(InstanceStatus.PRESERVED, error=reason, pid=None)

    def _require_up(self) -> None:
        status = self.status
        if status in DOWN:
            raise StateError(
                f"instance {self.slug} is {status.value}",
                hint="Start a new one with 'bottle start'.",
            )

    def __enter__(self) -> Instance:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop(status=InstanceStatus.FINISHED if exc is None else InstanceStatus.STOPPED)


#: How ``metadata.error`` of an instance whose ``down`` left a network behind begins.
DOWN_FAILED = "down failed"


def _kept_error(error: str | None) -> str | None:
    """The recorded error a later stop keeps: not a ``down`` failure that is now mended."""
    return None if error and error.startswith(DOWN_FAILED) else error


def compose_env(
    plan: BottlePlan, environ: Mapping[str, str], answers: Mapping[str, str]
) -> dict[str, str]:
    """What compose's own environment holds at ``up``: host values, answers, our addresses.

    Never written anywhere: it holds the secrets egress injects.
    """
    from bottle import chatgpt_login  # the policy models: not for ls

    values = {name: environ[name] for name in plan.host_vars}
    values |= chatgpt_login.compose_values(plan)
    machine = {"BOTTLE_HOST_ADDRESSES": ",".join(host_addresses())}
    return {**values, **answers, **machine}


#: Service states in which a service does its job.
WELL = frozenset({"running", "healthy"})


def health_of(services: Sequence[str], found: Sequence[ServiceState]) -> dict[str, str]:
    """Each of ``services``' state, from the containers ``found``: ``missing`` if it has none."""
    return {**dict.fromkeys(services, "missing"), **{s.service: _state_of(s) for s in found}}


def _state_of(service: ServiceState) -> str:
    if service.state == "running" and service.health:
        return service.health
    return service.state
