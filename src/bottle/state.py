"""The state directory of one instance: paths, metadata, atomic writes.

``$BOTTLE_HOME/state/<slug>/`` tells anyone what ran::

    metadata.json        agent, bottle, cwd, times, compose_project, images, status
    plan.json            the BottlePlan it was started from (references, never secret values)
    docker-compose.yml   the exact spec that was brought up (no secret values)
    compose.log          ``docker compose logs --no-color --timestamps``, written at stop
    transcript/          the agent's conversation
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
import tempfile
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bottle import layout
from bottle.errors import InstanceNotFound, StateError
from bottle.manifest.models import ProviderKind

if TYPE_CHECKING:
    from bottle.plan import BottlePlan


class InstanceStatus(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"  # the agent exited cleanly; everything was taken down
    PRESERVED = "preserved"  # interrupted (crash, Ctrl-C, kill): containers may remain
    FAILED = "failed"  # start failed; what was started was taken down
    STOPPED = "stopped"  # stopped by the operator


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
    InstanceStatus.PRESERVED: frozenset({InstanceStatus.STOPPING, InstanceStatus.RUNNING}),
    InstanceStatus.FAILED: frozenset({InstanceStatus.STOPPING}),
    InstanceStatus.FINISHED: frozenset({InstanceStatus.STOPPING}),
    InstanceStatus.STOPPED: frozenset({InstanceStatus.STOPPING}),
}

#: Statuses in which no container of the instance should exist.
DOWN = frozenset({InstanceStatus.FINISHED, InstanceStatus.FAILED, InstanceStatus.STOPPED})


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
    sidecars: dict[str, dict[str, Any]] = {}
    status: InstanceStatus
    started_at: datetime
    updated_at: datetime
    pid: int | None = None  # the bottle process that owns an interactive session
    exit_code: int | None = None
    error: str | None = None
    version: str = "0"


def now() -> datetime:
    return datetime.now(UTC)


@contextlib.contextmanager
def locked(path: Path, *, flags: int = os.O_RDWR, wait_s: float | None = None) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing); yields its descriptor.

    ``wait_s=None`` waits as long as it takes; otherwise ``TimeoutError`` after ``wait_s``.
    The lock goes with the descriptor, so a process that dies never leaves it held.
    """
    import fcntl
    import time

    fd = os.open(path, flags | os.O_CREAT, 0o644)
    try:
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if deadline is None else fcntl.LOCK_NB))
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"{path} is locked") from None
                time.sleep(0.05)
        yield fd
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes | str, *, mode: int = 0o644) -> None:
    """Write via a temp file in the same directory and rename: readers see old or new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(raw)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


class StateDir:
    """One instance's directory under ``$BOTTLE_HOME/state/``."""

    SUBDIRS = (
        "transcript",
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
    def transcript(self) -> Path:
        return self.path / "transcript"

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
        for sub in self.SUBDIRS:
            (self.path / sub).mkdir()
        # The agent may run as another uid than ours: let it write its transcript.
        os.chmod(self.transcript, 0o777)  # noqa: S103
        os.chmod(self.path / "ca-private", 0o700)

    def write_files(self, base: Path, files: Mapping[str, bytes]) -> None:
        for name, data in files.items():
            atomic_write(base / name, data)

    def write_metadata(self, metadata: Metadata) -> None:
        atomic_write(self.metadata_file, metadata.model_dump_json(indent=2) + "\n")

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
        try:
            return Metadata.model_validate_json(raw)
        except ValidationError as exc:
            raise StateError(
                f"{self.metadata_file} is not valid metadata: {exc.errors()[0]['msg']}",
                hint="Remove the state directory with 'bottle cleanup' if it is stale.",
            ) from None

    def transition(self, status: InstanceStatus, **changes: Any) -> Metadata:
        """Move to ``status`` (checked against the allowed transitions) and save."""
        metadata = self.read_metadata()
        if status not in _TRANSITIONS[metadata.status] and status != metadata.status:
            raise StateError(
                f"instance {self.slug} is {metadata.status.value}; it cannot become {status.value}",
                hint="See 'bottle ls' for its status.",
            )
        updated = metadata.model_copy(update={"status": status, "updated_at": now(), **changes})
        self.write_metadata(updated)
        return updated


def state_dirs(root: Path) -> Iterator[StateDir]:
    if not root.is_dir():
        return
    for path in sorted(root.iterdir()):
        if path.is_dir() and not path.name.startswith("."):
            yield StateDir(path)
