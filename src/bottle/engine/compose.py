"""One compose project: compose itself to bring it up; the docker CLI for the rest.

``up`` runs ``docker compose up``. What a command needs at once (``exec``, ``kill``,
``ps``, ``logs``, ``down``, the listing of every instance) runs plain docker CLI children:
``docker exec`` of the container answers in a tenth of the time ``docker compose exec``
takes to load the project, and ``bottle ls`` asks docker once for the containers of every
instance. None imports python-on-whales (about 0.3 s): only the rare reads do.

Compose reads secret values from its process environment (the file names them only), so
``up`` hands them to that one child process: ``os.environ`` is never changed, so
concurrent calls (the full-screen view's worker threads) cannot see or clobber each
other's values.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bottle.engine.errors import (
    COMPOSE_HINT,
    DOCKER_HINT,
    docker_cli,
    docker_errors,
    failure,
)
from bottle.errors import DockerUnavailable, DownIncomplete, EngineError, StartTimeout

if TYPE_CHECKING:
    from python_on_whales import DockerClient


@dataclass(frozen=True)
class ExecResult:
    exit_code: int
    stdout: str = ""
    stderr: str = ""


@dataclass(frozen=True)
class ServiceState:
    service: str
    container_id: str
    state: str  # running, exited, …
    health: str | None
    exit_code: int | None


@dataclass(frozen=True)
class Container:
    """One container as ``docker ps`` lists it, with the compose and bottle labels."""

    id: str
    project: str
    slug: str
    home: str  # the bottle.home label: which BOTTLE_HOME started it
    state: ServiceState


#: ``docker ps`` columns: id, state, status text, then the labels that place a container.
_PS_FORMAT = (
    '{{.ID}}\t{{.State}}\t{{.Status}}\t{{.Label "com.docker.compose.project"}}'
    '\t{{.Label "com.docker.compose.service"}}\t{{.Label "bottle.slug"}}'
    '\t{{.Label "bottle.home"}}\t{{.Names}}'
)
_HEALTH = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_EXITED = re.compile(r"^Exited \((-?\d+)\)")
#: The states ``docker stop`` acts on: a container in any other has no process to end.
_STOPPABLE = frozenset({"running", "restarting", "paused"})


def _docker_run(argv: Sequence[str], what: str, *, stdin: bytes | None = None) -> str:
    """stdout of one docker CLI child; its failure as a bottle error."""
    cmd = ["docker", *argv]
    try:
        done = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise DockerUnavailable("the docker command is not installed", hint=DOCKER_HINT) from exc
    if done.returncode != 0:
        stderr = done.stderr.decode(errors="replace")
        raise failure(cmd, stderr, done.returncode, what)
    return done.stdout.decode(errors="replace")


def _container_log(container: str, tail: int | None) -> list[str]:
    """``docker logs --timestamps`` of one container, its stdout and stderr lines together;
    none when it went away since it was listed."""
    argv = ["docker", "logs", "--timestamps", *(["--tail", str(tail)] if tail is not None else [])]
    try:
        done = subprocess.run([*argv, container], capture_output=True, check=False)
    except FileNotFoundError as exc:
        raise DockerUnavailable("the docker command is not installed", hint=DOCKER_HINT) from exc
    if done.returncode != 0:
        return []
    # Split at newlines alone: docker stamps each, and a bare ``\r`` must stay in its line.
    return [
        line
        for stream in (done.stdout, done.stderr)
        for line in stream.decode(errors="replace").removesuffix("\n").split("\n")
        if line
    ]


def _joined_logs(found: Sequence[ServiceState], tail: int | None) -> str:
    """The logs of ``found`` read all at once, each line led by its service, in time order."""
    if not found:
        return ""
    with ThreadPoolExecutor(max_workers=len(found)) as pool:
        texts = list(pool.map(lambda state: _container_log(state.container_id, tail), found))
    width = max(len(state.service) for state in found) + len("-1")
    rows = [
        (line, f"{state.service + '-1':<{width}}  | {line}")
        for state, lines in zip(found, texts, strict=True)
        for line in lines
    ]
    # The timestamp leads every line, fixed-width: sorting the text sorts the times.
    rows.sort(key=lambda row: row[0])
    return "\n".join(text for _, text in rows)


def _remove_networks(networks: Mapping[str, str], label: str, what: str) -> dict[str, str]:
    """Remove ``networks`` (id -> name); those of ``label`` left after (id -> name)."""
    if not networks:
        return {}
    with contextlib.suppress(EngineError):  # what stays is listed below
        _docker_run(["network", "rm", *networks], what)
        return {}  # docker removed every one it was given
    return _networks(label, what)


def _networks(label: str, what: str) -> dict[str, str]:
    """The networks that carry ``label``: id -> name."""
    argv = ["network", "ls", "--no-trunc", "--filter", f"label={label}"]
    text = _docker_run([*argv, "--format", "{{.ID}}\t{{.Name}}"], what)
    pairs = (line.split("\t", 1) for line in text.splitlines() if "\t" in line)
    return {nid: name for nid, name in pairs}


def containers(*labels: str) -> list[Container]:
    """Every container (running or not) that carries all ``labels`` (``key`` or ``key=value``)."""
    argv = ["ps", "--all", "--no-trunc", "--format", _PS_FORMAT]
    for label in labels:
        argv += ["--filter", f"label={label}"]
    found = []
    for line in _docker_run(argv, "listing containers").splitlines():
        fields = line.split("\t")
        if len(fields) != 8:
            continue
        cid, state, status, project, service, slug, home, name = fields
        health = _HEALTH.search(status)
        exited = _EXITED.match(status)
        found.append(
            Container(
                id=cid,
                project=project,
                slug=slug,
                home=home,
                state=ServiceState(
                    service=service or name,
                    container_id=cid,
                    state=state,
                    health=health.group(1).removeprefix("health: ") if health else None,
                    exit_code=int(exited.group(1)) if exited else None,
                ),
            )
        )
    return found


def check_docker() -> None:
    """Raise DockerUnavailable naming the fix when docker, its daemon or compose v2 is missing.

    Both probes run at once: every start waits for them.
    """
    docker = docker_cli()
    compose, info = (
        subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for argv in (
            [docker, "compose", "version", "--short"],
            [docker, "info", "--format", "{{.ServerVersion}}"],
        )
    )
    version, _ = compose.communicate()
    server, _ = info.communicate()
    if compose.returncode != 0 or not version.strip().startswith(("2", "v2")):
        raise DockerUnavailable("docker compose v2 is not installed", hint=COMPOSE_HINT)
    if info.returncode != 0 or not server.strip():
        raise DockerUnavailable("the Docker daemon is not running", hint=DOCKER_HINT)


class ComposeProject:
    """The compose project of one instance."""

    def __init__(self, *, compose_file: Path, project: str, project_dir: Path) -> None:
        self.project = project
        self.compose_file = compose_file
        self.project_dir = project_dir
        self._client: DockerClient | None = None

    @property
    def _docker(self) -> DockerClient:
        if self._client is None:
            from python_on_whales import DockerClient

            self._client = DockerClient(
                compose_files=[self.compose_file],
                compose_project_name=self.project,
                compose_project_directory=self.project_dir,
            )
        return self._client

    def _cmd(self) -> list[str]:
        return [
            "docker",
            "compose",
            "--file",
            str(self.compose_file),
            "--project-name",
            self.project,
            "--project-directory",
            str(self.project_dir),
        ]

    def container(self, service: str) -> str:
        """The name compose gives ``service``'s one container (bottle sets no other)."""
        return f"{self.project}-{service}-1"

    def _up(self, flags: Sequence[str], env: Mapping[str, str], what: str, timeout: float) -> None:
        """``compose up --detach`` with ``env`` in its own environment alone, bounded by
        ``timeout`` s. A docker CLI child, as python-on-whales would run it: importing that
        first cost every start a third of a second."""
        argv = [docker_cli(), *self._cmd()[1:], "up", "--detach", *flags]
        try:
            done = subprocess.run(
                argv, env={**os.environ, **env}, capture_output=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise StartTimeout(
                f"{what}: compose did not finish within {timeout:g} s",
                argv=argv,
                stderr=(exc.stderr or b"").decode(errors="replace"),
                hint=self._unhealthy_hint(),
            ) from exc
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")
            cause = subprocess.CalledProcessError(done.returncode, argv, done.stdout, done.stderr)
            raise self._start_error(failure(argv, stderr, done.returncode, what)) from cause

    def up(
        self, *, env: Mapping[str, str], wait_timeout: float, services: Sequence[str] = ()
    ) -> None:
        """Create and start ``services`` (default all) and what they depend on; bounded by
        ``wait_timeout``.

        No ``--wait``: no service has a healthcheck, so compose would only poll until each
        container runs, a third of a second after they all did. The caller waits for what
        counts, the sidecars' status files, and then checks that every container runs
        (``bottle.readiness``).
        """
        self._up(services, env, f"starting {self.project}", wait_timeout)

    def _start_error(self, error: Exception) -> Exception:
        """``error`` as ``StartTimeout`` on a timeout, with why a service failed."""
        if not isinstance(error, EngineError):
            return error  # the daemon or compose is gone: its own message and hint
        kind = StartTimeout if "timeout" in error.stderr.lower() else EngineError
        return kind(
            error.message, argv=error.argv, stderr=error.stderr, hint=self._unhealthy_hint()
        )

    def _unhealthy_hint(self) -> str:
        lines = []
        for state in self.ps():
            if state.state in {"exited", "dead", "restarting"} or state.health == "unhealthy":
                tail = self.logs(services=[state.service], tail=8).strip()
                lines.append(
                    f"{state.service} is {state.state}"
                    + (f" ({state.health})" if state.health else "")
                    + (f"; last lines:\n{tail}" if tail else "")
                )
        return "\n".join(lines) or "Look at 'bottle logs' for the failing service."

    def up_service(self, service: str, *, env: Mapping[str, str], wait_timeout: int) -> None:
        """Recreate one service alone (new image or config); its dependencies are left as is."""
        flags = ["--wait", "--wait-timeout", str(wait_timeout), "--force-recreate", "--no-deps"]
        # compose's own bound, plus a margin for it to say so before ours cuts it short.
        what = f"recreating {service} of {self.project}"
        self._up([*flags, service], env, what, wait_timeout + 30)

    def down(
        self,
        *,
        timeout: int = 5,
        keep_logs: Callable[[str], None] | None = None,
        while_stopping: Callable[[], None] | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> None:
        """Remove every container and network of the project; a no-op when none exist.

        What ``compose down --remove-orphans --volumes`` does, in docker CLI calls found by
        the project's label: compose would load the project and import its client first
        (over a second of a ``bottle stop``). Every container gets its stop signal at once
        and ``timeout`` seconds to end. ``keep_logs`` gets their logs (as ``logs`` shows
        them) once all have stopped and before any is removed: complete, the sidecars' last
        words on the way out included; it is called when no container exists too.
        ``while_stopping`` runs in this thread while docker stops them (half a second of
        waiting), once, before ``keep_logs``. ``meanwhile`` runs once every container is
        gone, while docker removes the networks. A network still in use (something else
        joined it) is raised as ``DownIncomplete``, once the rest is gone.

        The networks go as soon as the containers have stopped, while their logs are read
        and they are removed: a stopped container holds no endpoint, and the engine takes
        0.1-0.2 s per network, one at a time, the longest step after the stop itself. A
        network that would not go then is tried again once the containers are gone.
        """
        what = f"taking down {self.project}"
        label = f"com.docker.compose.project={self.project}"
        with ThreadPoolExecutor(max_workers=2) as pool:
            # Listed while the containers stop: the networks are there from ``up`` on.
            listing = pool.submit(_networks, label, what)
            found = [c.state for c in containers(label) if c.project == self.project]
            running = [s.container_id for s in found if s.state in _STOPPABLE]
            stopping = (
                pool.submit(_docker_run, ["stop", "--time", str(timeout), *running], what)
                if running
                else None
            )
            if while_stopping is not None:
                while_stopping()
            if stopping is not None:
                stopping.result()
            removal = pool.submit(_remove_networks, listing.result(), label, what)
            if keep_logs is not None:
                keep_logs(_joined_logs(found, None))
            if found:
                _docker_run(["rm", "--force", "--volumes", *(s.container_id for s in found)], what)
            if meanwhile is not None:
                meanwhile()
            left = removal.result()
        if left:  # one of ours may have held it still (a container that had not stopped)
            left = _remove_networks(left, label, what)
        if left:
            names = sorted(left.values())
            raise DownIncomplete(
                f"could not remove network {', '.join(names)}: still in use",
                hint=f"See what holds it ('docker network inspect {names[0]}'), remove "
                "that, then run 'bottle cleanup'.",
            )

    def logs(self, *, services: Sequence[str] = (), tail: int | None = None) -> str:
        """The containers' logs as ``docker compose logs --timestamps`` shows them
        (``agent-1  | <time> <line>``), every line in time order.

        One ``docker logs`` per container, all at once: ``compose logs`` would load the
        project first, which took most of a ``bottle stop``. The lines are the containers'
        own bytes (the agent's, among others): shown inert by whoever prints them.
        """
        found = [
            c.state
            for c in containers(f"com.docker.compose.project={self.project}")
            if c.project == self.project and (not services or c.state.service in services)
        ]
        return _joined_logs(found, tail)

    def follow_logs(
        self, services: Sequence[str] = (), *, on_line: Callable[[str], None] | None = None
    ) -> int:
        """Hand each log line to ``on_line`` until Ctrl-C or the project ends.

        The lines are the containers' own bytes (the agent's, among others): the caller shows
        them inert. The child dies with us.
        """
        argv = [*self._cmd(), "logs", "--follow", "--timestamps", *services]
        child = subprocess.Popen(
            argv, stdout=subprocess.PIPE, text=True, errors="replace", bufsize=1
        )
        assert child.stdout is not None
        say = on_line or (lambda text: None)
        try:
            for text in child.stdout:
                say(text.rstrip("\n"))
            return child.wait()
        finally:
            if child.poll() is None:
                child.terminate()
                child.wait(timeout=5)

    def kill(self, service: str, signal: str) -> None:
        # One ``docker kill``: a reload's SIGHUP must not wait for compose to load the project.
        _docker_run(
            ["kill", "--signal", signal, self.container(service)],
            f"sending {signal} to {service}",
        )

    def ps(self) -> list[ServiceState]:
        found = containers(f"com.docker.compose.project={self.project}")
        return [c.state for c in found if c.project == self.project]

    def service_env(self, service: str) -> dict[str, str]:
        """The environment ``service``'s container runs with, as compose resolved it."""
        with docker_errors(f"reading the environment of {service}"):
            containers = self._docker.compose.ps(services=[service])
        if not containers:
            raise EngineError(f"{service} of {self.project} has no container", argv=[])
        pairs = (item.partition("=") for item in containers[0].config.env or [])
        return {name: value for name, _, value in pairs}

    def address(self, service: str, network: str) -> str:
        """The IP address of ``service``'s container on the project's ``network``."""
        full = f"{self.project}_{network}"
        with docker_errors(f"reading the address of {service}"):
            containers = self._docker.compose.ps(services=[service])
        endpoints = containers[0].network_settings.networks or {} if containers else {}
        endpoint = endpoints.get(full)
        if endpoint is None or not endpoint.ip_address:
            raise EngineError(f"{service} of {self.project} has no address on {full}", argv=[])
        return str(endpoint.ip_address)

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
        """Run ``argv`` in ``service``.

        ``tty``: hand over this terminal (interactive). ``capture``: return stdout and stderr.
        Otherwise the output streams to ours. The exit code is always returned, never raised.
        """
        # ``docker exec`` of the container compose made, as ``compose exec`` would run it
        # (stdin attached, a TTY when asked), without loading the project first.
        cmd = ["docker", "exec", "--interactive"]
        if tty:
            cmd.append("--tty")
        if user:
            cmd += ["--user", user]
        for name, value in (env or {}).items():
            cmd += ["--env", f"{name}={value}"]
        cmd += [self.container(service), *argv]
        # python-on-whales' execute() can hand over a TTY or capture, but not stream
        # without a TTY, and it raises on a non-zero exit; one subprocess does all three.
        try:
            if capture:
                done = subprocess.run(cmd, input=stdin, capture_output=True, check=False)
                return ExecResult(
                    done.returncode,
                    done.stdout.decode(errors="replace"),
                    done.stderr.decode(errors="replace"),
                )
            stdin_arg = None if tty or stdin is None else subprocess.PIPE
            child = subprocess.Popen(cmd, stdin=stdin_arg)
            if stdin_arg is not None and child.stdin is not None:
                child.stdin.write(stdin or b"")
                child.stdin.close()
            return ExecResult(child.wait())
        except FileNotFoundError as exc:
            raise DockerUnavailable(
                "the docker command is not installed", hint=DOCKER_HINT
            ) from exc


def labelled(label: str, *, value_of: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Containers and networks that carry ``label`` (``key`` or ``key=value``).

    Maps id -> the value of ``value_of`` (default: of the label's own key).
    """
    from python_on_whales import DockerClient

    key = value_of or label.split("=", 1)[0]
    client = DockerClient()
    with docker_errors("listing labelled containers and networks"):
        containers = {
            c.id: (c.config.labels or {}).get(key, "")
            for c in client.container.list(all=True, filters=[("label", label)])
        }
        networks = {
            n.id: (n.labels or {}).get(key, "")
            for n in client.network.list(filters=[("label", label)])
        }
    return containers, networks


def remove(containers: Iterable[str], networks: Iterable[str]) -> None:
    from python_on_whales import DockerClient

    client = DockerClient()
    with docker_errors("removing containers"):
        if ids := list(containers):
            client.container.remove(ids, force=True, volumes=True)
    with docker_errors("removing networks"):
        for network in networks:
            client.network.remove(network)
