"""The state directory of one instance: paths, metadata, atomic writes.

``$BOTTLE_HOME/state/<slug>/`` tells anyone what ran::

    metadata.json        agent, bottle, cwd, times, compose_project, images, status, and
                         the audit log's checkpoint (``audit``: its seq and head)
    plan.json            the BottlePlan it was started from (references, never secret values)
    docker-compose.yml   the exact spec that was brought up (no secret values)
    compose.log          ``docker compose logs --no-color --timestamps``, written at stop
    exec.log run.log     what the operator ran (``bottle exec``, ``bottle run``), its exit code
    transcript/          the agent's conversation
    home/                the agent's /home/agent: kept across agent replacements and resumes
    live-config/<name>/  files the sidecars read (bind-mounted directories)
    agent/               system prompt, MCP and git config for the agent (read-only there)
    ca/ ca-private/      the bottle CA: public cert for the agent, key for egress alone
    logs/ status/        sidecar logs and status files
    proposals/           supervise's queue; audit.jsonl the operator's decisions (+ .head)
    capabilities/        approved capability Dockerfiles, named by the tag of their image
    snapshots/           the transcript as it was before each agent replacement
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bottle import layout
from bottle.errors import InstanceNotFound, StateError
from bottle.files import atomic_write, locked, now
from bottle.quickstate import DOWN, InstanceStatus, check_slug

if TYPE_CHECKING:
    from bottle.plan import BottlePlan

# The slug rule and the statuses live in ``bottle.quickstate`` (the quick commands read
# them without pydantic); this stays the module everyone imports them from.
__all__ = [
    "DOWN",
    "RESUMABLE",
    "AuditMark",
    "InstanceStatus",
    "Metadata",
    "ProviderKind",
    "StateDir",
    "check_slug",
    "owner_alive",
    "state_dirs",
]


_TRANSITIONS: dict[InstanceStatus, frozenset[InstanceStatus]] = {
    InstanceStatus.STARTING: frozenset(
        {InstanceStatus.RUNNING, InstanceStatus.FAILED, InstanceStatus.PRESERVED}
    ),
    InstanceStatus.RUNNING: frozenset(
        {InstanceStatus.STOPPING, InstanceStatus.PRESERVED, InstanceStatus.RUNNING}
    ),
    InstanceStatus.STOPPING: frozenset(
        {
            InstanceStatus.FINISHED,
            InstanceStatus.STOPPED,
            InstanceStatus.PRESERVED,
            InstanceStatus.FAILED,
        }
    ),
    # STARTING again from PRESERVED, FINISHED or STOPPED: ``Instance.resume``.
    InstanceStatus.PRESERVED: frozenset(
        {InstanceStatus.STOPPING, InstanceStatus.RUNNING, InstanceStatus.STARTING}
    ),
    InstanceStatus.FAILED: frozenset({InstanceStatus.STOPPING}),
    InstanceStatus.FINISHED: frozenset({InstanceStatus.STOPPING, InstanceStatus.STARTING}),
    InstanceStatus.STOPPED: frozenset({InstanceStatus.STOPPING, InstanceStatus.STARTING}),
}

#: Statuses ``Instance.resume`` brings up again (a RUNNING one whose owner died counts as
#: PRESERVED); a FAILED start never ran an agent, so there is nothing to continue.
RESUMABLE = frozenset({InstanceStatus.PRESERVED, InstanceStatus.FINISHED, InstanceStatus.STOPPED})

#: What a state left behind by a dead owner may still become: a ``kill -9`` mid-start or
#: mid-stop must never leave an instance that neither ``stop`` nor ``cleanup`` can end.
_RECOVERY: dict[InstanceStatus, frozenset[InstanceStatus]] = {
    InstanceStatus.STARTING: frozenset({InstanceStatus.STOPPING, InstanceStatus.FAILED}),
    InstanceStatus.STOPPING: frozenset({InstanceStatus.STOPPING, InstanceStatus.FAILED}),
}

_DIR_NOFOLLOW = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: ``bottle.manifest.models.ProviderKind``, spelled out: importing the manifest package here
#: would load its YAML and regex stacks into ``ls`` and ``exec`` (a unit test keeps them equal).
ProviderKind = Literal["shell", "claude", "codex", "command"]

#: Held for every read-modify-write of metadata.json (inside the audit log's lock, never
#: around it: one lock order, no deadlock).
METADATA_LOCK = ".metadata.lock"


class AuditMark(BaseModel):
    """The audit log's head as metadata.json records it on every append.

    A second anchor beside ``audit.jsonl.head``: deleting or cutting the log together with
    its ``.head`` leaves this one saying how far the log went and what its entry there was.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: int = Field(ge=1)
    head: str = Field(pattern=r"^[0-9a-f]{64}$")


class Metadata(BaseModel):
    """``metadata.json``."""

    model_config = ConfigDict(extra="ignore")

    slug: str
    agent: str
    bottle: str
    provider: ProviderKind
    agent_args: list[str] = []
    cwd: str
    compose_project: str
    images: dict[str, str]
    services: list[str]
    #: What each enabled sidecar says of itself (``Sidecar.describe``), by name.
    sidecar_info: dict[str, dict[str, Any]] = {}
    status: InstanceStatus
    started_at: datetime
    updated_at: datetime
    pid: int | None = None  # the bottle process starting it, or owning its session
    exit_code: int | None = None
    error: str | None = None
    version: str = "0"
    planted_git: list[str] = []  # git dirs the agent made in the workspace (bottle.workspace)
    #: The image a capability approval is installing now; its container is being replaced.
    replacing: str | None = None
    #: How many times the agent's container was replaced (a capability, or its rollback):
    #: a session whose agent program died sees this change and continues the conversation.
    agent_restarts: int = 0
    #: The audit log's checkpoint (``bottle.audit``); it only ever moves forward.
    audit: AuditMark | None = None


class StateDir:
    """One instance's directory under ``$BOTTLE_HOME/state/``."""

    SUBDIRS = (
        "transcript",
        "home",
        "live-config",
        "agent",
        "ca",
        "ca-private",
        "logs",
        "status",
        "proposals",
    )

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def lookup(cls, root: Path, slug: str) -> StateDir:
        """The state directory of ``slug`` under ``root``; the slug is checked first."""
        return cls(root / check_slug(slug))

    @property
    def slug(self) -> str:
        return self.path.name

    @property
    def compose_file(self) -> Path:
        return self.path / layout.COMPOSE_FILE

    @property
    def metadata_file(self) -> Path:
        return self.path / layout.METADATA

    @property
    def plan_file(self) -> Path:
        return self.path / layout.PLAN_FILE

    @property
    def compose_log(self) -> Path:
        return self.path / layout.COMPOSE_LOG

    @property
    def exec_log(self) -> Path:
        """What ``bottle exec`` ran and how it ended; beside metadata.json, out of the
        agent's reach (it writes ``transcript/``)."""
        return self.path / layout.EXEC_LOG

    @property
    def run_log(self) -> Path:
        """What ``bottle run`` ran and how it ended, like ``exec_log``."""
        return self.path / layout.RUN_LOG

    @property
    def transcript(self) -> Path:
        return self.path / "transcript"

    @property
    def home(self) -> Path:
        """The agent's ``/home/agent``: outlives its container (a capability swap, a resume)."""
        return self.path / "home"

    def live_config(self, sidecar: str) -> Path:
        return self.path / "live-config" / sidecar

    @property
    def egress_log(self) -> Path:
        return self.path / "logs" / layout.EGRESS_LOG

    def status_file(self, sidecar: str) -> Path:
        return self.path / "status" / f"{sidecar}.json"

    @property
    def proposals(self) -> Path:
        return self.path / "proposals"

    @property
    def audit_log(self) -> Path:
        return self.path / "audit.jsonl"

    def exists(self) -> bool:
        return self.metadata_file.is_file()

    def create(self) -> None:
        """Make the directory tree; a slug that exists already is an error, never reused."""
        try:
            self.path.mkdir(parents=True, exist_ok=False)
        except FileExistsError:
            raise StateError(
                f"state directory {self.path} already exists",
                hint="Start again: a new slug is drawn every time.",
            ) from None
        # Its owner's alone: transcript/ and home/ are world-writable (the agent may be
        # another uid), and no container needs the parents (dockerd binds each dir itself).
        os.chmod(self.path, 0o700)
        for sub in self.SUBDIRS:
            (self.path / sub).mkdir()
        self.make_agent_dirs()
        os.chmod(self.path / "ca-private", 0o700)

    def make_agent_dirs(self) -> None:
        """The directories the agent writes (again, for a state dir older than one of them).

        The agent may run as another uid than ours: the directories are world-writable, and
        the host only ever copies or deletes what is in them, never runs it.
        """
        for path in (self.transcript, self.home):
            path.mkdir(exist_ok=True)
            os.chmod(path, 0o777)  # noqa: S103

    def make_home_dirs(self, points: Sequence[PurePosixPath]) -> None:
        """Directories under ``home/`` (mount points inside the agent's home), link-safe.

        On a resume the agent has written ``home/`` already: each step is made and opened
        by descriptor with ``O_NOFOLLOW``, so a link it left there is refused, not followed.
        """
        for point in points:
            fd = os.open(self.home, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                for name in point.parts:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, 0o755, dir_fd=fd)
                    try:
                        child = os.open(name, _DIR_NOFOLLOW, dir_fd=fd)
                    except OSError as exc:
                        raise StateError(
                            f"{self.home / point} cannot be made: {exc.strerror} "
                            "(a link is never followed)",
                            hint=f"The agent left something else at that path; remove "
                            f"{self.home / point} and try again.",
                        ) from None
                    os.close(fd)
                    fd = child
            finally:
                os.close(fd)

    def write_files(self, base: Path, files: Mapping[str, bytes]) -> None:
        for name, data in files.items():
            atomic_write(base / name, data)

    @contextlib.contextmanager
    def _metadata_locked(self) -> Iterator[None]:
        with locked(self.path / METADATA_LOCK):
            yield

    def write_metadata(self, metadata: Metadata) -> None:
        """Save ``metadata``; the audit checkpoint on disk is kept if it is further along
        (``metadata`` was read before an append, which must not be undone)."""
        with self._metadata_locked():
            self._write_metadata(metadata)

    def _write_metadata(self, metadata: Metadata) -> None:
        with contextlib.suppress(InstanceNotFound, StateError):
            mark = self.read_metadata().audit
            if mark is not None and (metadata.audit is None or metadata.audit.seq < mark.seq):
                metadata = metadata.model_copy(update={"audit": mark})
        atomic_write(self.metadata_file, metadata.model_dump_json(indent=2) + "\n")

    def mark_audit(self, seq: int, head: str) -> None:
        """Checkpoint the audit log's head (entry ``seq`` hashes to ``head``) in
        metadata.json; a state dir without metadata (no instance) has nowhere to keep it."""
        with self._metadata_locked():
            if not self.metadata_file.exists():
                return
            metadata = self.read_metadata()
            mark = AuditMark(seq=seq, head=head)
            if metadata.audit is None or metadata.audit.seq < seq:
                self._write_metadata(metadata.model_copy(update={"audit": mark}))

    def write_plan(self, plan: BottlePlan) -> None:
        from bottle.plan import plan_json  # the plan imports the sidecars, which import us

        atomic_write(self.plan_file, plan_json(plan))

    def read_plan(self) -> BottlePlan:
        """The plan the instance was started from; PlanError when it is missing or damaged."""
        from bottle.plan import load_plan

        return load_plan(self.plan_file)

    def read_metadata(self) -> Metadata:
        try:
            raw = self.metadata_file.read_text()
        except FileNotFoundError:
            raise InstanceNotFound(
                f"no instance {self.slug!r}",
                hint="List instances with 'bottle ls'.",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise StateError(
                f"{self.metadata_file} cannot be read: {exc}",
                hint="Check the state directory's owner and permissions ('bottle ls').",
            ) from exc
        try:
            return Metadata.model_validate_json(raw)
        except ValidationError as exc:
            raise StateError(
                f"{self.metadata_file} is not valid metadata: {exc.errors()[0]['msg']}",
                hint="Remove the state directory with 'bottle cleanup' if it is stale.",
            ) from None

    def transition(self, status: InstanceStatus, **changes: Any) -> Metadata:
        """Move to ``status`` (checked against the allowed transitions) and save."""
        with self._metadata_locked():
            return self._transition(status, **changes)

    def _transition(self, status: InstanceStatus, **changes: Any) -> Metadata:
        metadata = self.read_metadata()
        allowed = _TRANSITIONS[metadata.status]
        if metadata.status in _RECOVERY and not owner_alive(metadata):
            allowed |= _RECOVERY[metadata.status]
        if status not in allowed and status != metadata.status:
            hint = "See 'bottle ls' for its status."
            if metadata.status == InstanceStatus.STARTING and metadata.pid is not None:
                hint = (
                    f"Process {metadata.pid} is still starting it: wait for the start to "
                    "finish, or end that process and try again."
                )
            raise StateError(
                f"instance {self.slug} is {metadata.status.value}; it cannot become {status.value}",
                hint=hint,
            )
        updated = metadata.model_copy(update={"status": status, "updated_at": now(), **changes})
        self._write_metadata(updated)
        return updated


def owner_alive(metadata: Metadata) -> bool:
    """Whether the bottle process that owns this session (or its start) still runs."""
    if metadata.pid is None:
        # Every start records its pid; a start without one (an older bottle's) has no owner.
        return metadata.status != InstanceStatus.STARTING
    try:
        os.kill(metadata.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def state_dirs(root: Path) -> Iterator[StateDir]:
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        if path.is_dir() and not path.name.startswith("."):
            yield StateDir(path)
