"""A fake engine behind ``bottle.engine.seam``: records what bottle asks of it, and fails
on the call a test names. For paths whose logic is bottle's own (start's rollback); what
Docker itself does is tested against a real engine in tests/integration."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from bottle.engine.compose import ExecResult, ServiceState
from bottle.engine.seam import Preflight

if TYPE_CHECKING:
    from bottle.engine.seam import Progress
    from bottle.images import ImageSpec
    from bottle.settings import Settings


@dataclass
class FakeEngine:
    """``fail[call] = exc`` raises ``exc`` at the next such call (check, ensure_image, up,
    logs, down, ``up_service agent`` …); ``fail[call] = [exc, exc]`` at the next two."""

    fail: dict[str, BaseException | list[BaseException]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    env_at_up: dict[str, str] = field(default_factory=dict)
    log_text: str = "agent-1  | hello from the fake"  # as compose gives it: no final newline
    states: list[ServiceState] = field(default_factory=list)  # what ``ps`` reports
    missing_images: set[str] = field(default_factory=set)  # refs ``image_exists`` denies
    exec_codes: list[int] = field(default_factory=list)  # what the next ``exec`` calls return
    execs: list[list[str]] = field(default_factory=list)  # the argv of every ``exec``
    on_exec: Callable[[list[str]], None] | None = None  # runs "in the container" at each exec
    ups: list[list[str]] = field(default_factory=list)  # the services of each ``up``
    serving: bool = True  # whether a sidecar writes its status file once it is up

    def _call(self, name: str) -> None:
        self.calls.append(name)
        planned = self.fail.get(name)
        if isinstance(planned, list):
            if planned:
                raise planned.pop(0)
        elif planned is not None:
            del self.fail[name]
            raise planned

    def check(self) -> None:
        self._call("check")

    def preflight(self, refs: Sequence[str]) -> Preflight:
        # One after another, so that ``calls`` has one order: the check's first.
        self.check()
        missing = frozenset(ref for ref in refs if not self.image_exists(ref))
        return Preflight(missing=missing, subnets=self.subnets_in_use())

    def ensure_image(
        self,
        spec: ImageSpec,
        *,
        settings: Settings,
        progress: Progress,
        network: str | None = None,
        proxy_args: Mapping[str, str] | None = None,
    ) -> str:
        self._call("ensure_image")
        return spec.ref

    def image_exists(self, ref: str) -> bool:
        self._call("image_exists")
        return ref not in self.missing_images

    def subnets_in_use(self) -> list[str]:
        return []  # no networks: any subnet of the pool is free (not in ``calls``)

    def project(self, *, compose_file: Path, project: str, project_dir: Path) -> FakeProject:
        return FakeProject(self, compose_file)


@dataclass
class FakeProject:
    engine: FakeEngine
    compose_file: Path

    def up(
        self, *, env: Mapping[str, str], wait_timeout: int, services: Sequence[str] = ()
    ) -> None:
        assert self.compose_file.is_file(), "up before the compose file was written"
        self.engine.env_at_up = dict(env)
        self.engine._call("up")
        self.engine.ups.append(list(services))
        # What compose does: each service's container runs (a running one is left as it is,
        # a stopped one starts again, a missing one is made).
        found = {s.service: s for s in self.engine.states}
        for name in services:
            was = found.get(name)
            if was is None or was.state != "running":
                cid = was.container_id if was is not None else f"id-{name}-up"
                found[name] = ServiceState(name, cid, "running", None, None)
        self.engine.states = list(found.values())
        # What each sidecar does once it serves: its status file.
        status = self.compose_file.parent / "status"
        for service in services:
            if service != "agent" and status.is_dir() and self.engine.serving:
                (status / f"{service}.json").write_text('{"ready": true}')
        # What egress does once it runs: the bottle CA (a capability build trusts it).
        ca = self.compose_file.parent / "ca" / "ca.pem"
        if ca.parent.is_dir():
            ca.write_text("-----BEGIN CERTIFICATE-----\n")

    def up_service(self, service: str, *, env: Mapping[str, str], wait_timeout: int) -> None:
        self.engine._call(f"up_service {service}")

    def down(
        self,
        *,
        timeout: int = 5,
        keep_logs: Callable[[str], None] | None = None,
        while_stopping: Callable[[], None] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        self.engine._call("down")
        if while_stopping is not None:
            while_stopping()
        if keep_logs is not None:
            keep_logs(self.engine.log_text)  # read by ``down`` itself, as the real one does
        self.engine.states = []  # what docker does: no container is left
        if meanwhile is not None:
            meanwhile()

    def logs(self, *, services: Sequence[str] = (), tail: int | None = None) -> str:
        self.engine._call("logs")
        return self.engine.log_text

    def follow_logs(
        self, services: Sequence[str] = (), *, on_line: Callable[[str], None] | None = None
    ) -> int:
        self.engine._call("follow_logs")
        return 0

    def kill(self, service: str, signal: str) -> None:
        self.engine._call(f"kill {service} {signal}")

    def ps(self) -> list[ServiceState]:
        self.engine._call("ps")
        return list(self.engine.states)

    def service_env(self, service: str) -> dict[str, str]:
        self.engine._call(f"service_env {service}")
        return {}

    def address(self, service: str, network: str) -> str:
        self.engine._call(f"address {service} {network}")
        return "192.0.2.10"

    def exec(
        self,
        service: str,
        argv: Sequence[str],
        *,
        tty: bool = False,
        capture: bool = False,
        user: str | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> ExecResult:
        self.engine._call(f"exec {service}")
        self.engine.execs.append(list(argv))
        if self.engine.on_exec is not None:
            self.engine.on_exec(list(argv))
        return ExecResult(self.engine.exec_codes.pop(0) if self.engine.exec_codes else 0)
