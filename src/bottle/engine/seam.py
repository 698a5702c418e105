"""The engine seam: what the rest of bottle needs from a container engine, as Protocols.

``DockerEngine`` is the real one (python-on-whales and the docker CLI). ``Bottle(...,
engine=...)`` and ``Instance(..., engine=...)`` take another, so that start's rollback and
other paths that need an engine can be driven in unit tests by a fake (tests/fakes.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from bottle.engine.compose import ExecResult, ServiceState
    from bottle.images import ImageSpec
    from bottle.settings import Settings

Progress = Callable[[str], None]


class Project(Protocol):
    """One instance's compose project (``bottle.engine.compose.ComposeProject``)."""

    def up(
        self, *, env: Mapping[str, str], wait_timeout: float, services: Sequence[str] = ()
    ) -> None: ...

    def up_service(self, service: str, *, env: Mapping[str, str], wait_timeout: int) -> None: ...

    def down(
        self,
        *,
        timeout: int = 5,
        keep_logs: Callable[[str], None] | None = None,
        while_stopping: Callable[[], None] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> None: ...

    def logs(self, *, services: Sequence[str] = (), tail: int | None = None) -> str: ...

    def follow_logs(
        self, services: Sequence[str] = (), *, on_line: Callable[[str], None] | None = None
    ) -> int: ...

    def kill(self, service: str, signal: str) -> None: ...

    def ps(self) -> list[ServiceState]: ...

    def service_env(self, service: str) -> dict[str, str]: ...

    def address(self, service: str, network: str) -> str: ...

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
    ) -> ExecResult: ...


@dataclass(frozen=True)
class Preflight:
    """What a start asks the engine before anything is written: ``Engine.preflight``."""

    missing: frozenset[str]  # the refs asked about that are not in the local store
    subnets: list[str]  # the subnet of every network, as ``subnets_in_use`` lists them


class Engine(Protocol):
    """Checking the engine, making images, and opening compose projects."""

    def check(self) -> None:
        """``DockerUnavailable`` (naming the fix) when the engine cannot be used."""

    def preflight(self, refs: Sequence[str]) -> Preflight:
        """``check()``, then which of ``refs`` are missing and the subnets in use; the
        check's error first (it names the fix)."""

    def ensure_image(
        self,
        spec: ImageSpec,
        *,
        settings: Settings,
        progress: Progress,
        network: str | None = None,
        proxy_args: Mapping[str, str] | None = None,
    ) -> str:
        """The local ref of ``spec``'s image, built first when missing (RUN steps on
        ``network``, with ``proxy_args`` as the predefined proxy build args)."""

    def image_exists(self, ref: str) -> bool:
        """Whether image ``ref`` is in the local store (never pulls)."""

    def subnets_in_use(self) -> list[str]:
        """The subnet (CIDR) of every network the engine has."""

    def project(self, *, compose_file: Path, project: str, project_dir: Path) -> Project:
        """The compose project ``project`` (nothing is called until a method is)."""


class DockerEngine:
    """The real engine: the local Docker daemon and compose v2."""

    def check(self) -> None:
        from bottle.engine.compose import check_docker

        check_docker()

    def preflight(self, refs: Sequence[str]) -> Preflight:
        """The check, each image's lookup and the network listing side by side: each is a
        docker CLI child of 25-110 ms, one after another a third of a second of every start.
        The check's error is raised first, once all are done (a dead daemon fails them all,
        and only the check's message names the fix)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=len(refs) + 1) as pool:
            subnets = pool.submit(self.subnets_in_use)
            present = [pool.submit(self.image_exists, ref) for ref in refs]
            self.check()
            return Preflight(
                missing=frozenset(r for r, f in zip(refs, present, strict=True) if not f.result()),
                subnets=subnets.result(),
            )

    def ensure_image(
        self,
        spec: ImageSpec,
        *,
        settings: Settings,
        progress: Progress,
        network: str | None = None,
        proxy_args: Mapping[str, str] | None = None,
    ) -> str:
        from bottle.engine.images import ensure_image

        return ensure_image(
            spec, settings=settings, progress=progress, network=network, proxy_args=proxy_args
        )

    def image_exists(self, ref: str) -> bool:
        from bottle.engine.images import image_exists

        return image_exists(ref)

    def subnets_in_use(self) -> list[str]:
        from bottle.engine.networks import subnets_in_use

        return subnets_in_use()

    def project(self, *, compose_file: Path, project: str, project_dir: Path) -> Project:
        from bottle.engine.compose import ComposeProject

        return ComposeProject(compose_file=compose_file, project=project, project_dir=project_dir)
