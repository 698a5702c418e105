"""One compose project, driven through python-on-whales' compose client.

One ``DockerClient(compose_files=…, compose_project_name=…, compose_project_directory=…)``
per instance. Compose reads secret values from its process environment (the file names
them only), so ``up`` hands them to that one child process: ``os.environ`` is never
changed, so concurrent calls (the full-screen view's worker threads) cannot see or clobber
each other's values.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from python_on_whales import DockerClient
from python_on_whales.exceptions import DockerException
from python_on_whales.utils import run as run_docker

from bottle.engine.errors import COMPOSE_HINT, DOCKER_HINT, docker_cli, docker_errors, translate
from bottle.errors import DockerUnavailable, EngineError, StartTimeout


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


def check_docker() -> None:
    """Raise DockerUnavailable naming the fix when docker, its daemon or compose v2 is missing."""
    docker_cli()
    probe = subprocess.run(
        ["docker", "compose", "version", "--short"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0 or not probe.stdout.strip().startswith(("2", "v2")):
        raise DockerUnavailable("docker compose v2 is not installed", hint=COMPOSE_HINT)
    info = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if info.returncode != 0 or not info.stdout.strip():
        raise DockerUnavailable("the Docker daemon is not running", hint=DOCKER_HINT)


class ComposeProject:
    """The compose project of one instance."""

    def __init__(self, *, compose_file: Path, project: str, project_dir: Path) -> None:
        self.project = project
        self.compose_file = compose_file
        self._docker = DockerClient(
            compose_files=[compose_file],
            compose_project_name=project,
            compose_project_directory=project_dir,
        )

    def _cmd(self) -> list[str]:
        return [str(part) for part in self._docker.client_config.docker_compose_cmd]

    def _up(self, flags: Sequence[str], env: Mapping[str, str]) -> None:
        """``compose up`` with ``env`` in its own environment alone (python-on-whales'
        ``compose.up`` takes no environment: it would have to be ``os.environ``)."""
        argv = [*self._cmd(), "up", "--detach", "--wait", *flags]
        run_docker(argv, capture_stdout=True, capture_stderr=True, env=dict(env))

    def up(
        self, *, env: Mapping[str, str], wait_timeout: int, services: Sequence[str] = ()
    ) -> None:
        """Create and start ``services`` (default all) and what they depend on, waiting until
        they run; bounded by ``wait_timeout``."""
        try:
            self._up(["--wait-timeout", str(wait_timeout), *services], env)
        except DockerException as exc:
            raise self._start_error(exc, f"starting {self.project}") from exc

    def _start_error(self, exc: DockerException, what: str) -> Exception:
        """``translate``'s error, as ``StartTimeout`` on a timeout, with why a service failed."""
        error = translate(exc, what)
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
        flags = ["--wait-timeout", str(wait_timeout), "--force-recreate", "--no-deps", service]
        try:
            self._up(flags, env)
        except DockerException as exc:
            raise self._start_error(exc, f"recreating {service} of {self.project}") from exc

    def down(self, *, timeout: int = 5) -> None:
        """Remove every container and network of the project; a no-op when none exist."""
        with docker_errors(f"taking down {self.project}"):
            self._docker.compose.down(
                remove_orphans=True, volumes=True, timeout=timeout, quiet=True
            )

    def logs(self, *, services: Sequence[str] = (), tail: int | None = None) -> str:
        with docker_errors(f"reading logs of {self.project}"):
            result = self._docker.compose.logs(
                services=list(services),
                timestamps=True,
                tail=str(tail) if tail is not None else None,
            )
        return result if isinstance(result, str) else ""

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
        with docker_errors(f"sending {signal} to {service}"):
            self._docker.compose.kill(services=[service], signal=signal)

    def ps(self) -> list[ServiceState]:
        with docker_errors(f"listing containers of {self.project}"):
            containers = self._docker.compose.ps(all=True)
        states = []
        for container in containers:
            state = container.state
            health = state.health.status if state.health is not None else None
            service = (container.config.labels or {}).get(
                "com.docker.compose.service", container.name
            )
            states.append(
                ServiceState(
                    service=service,
                    container_id=container.id,
                    state=str(state.status),
                    health=str(health) if health is not None else None,
                    exit_code=state.exit_code,
                )
            )
        return states

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
        cmd = [*self._cmd(), "exec"]
        if not tty:
            cmd.append("-T")
        if user:
            cmd += ["--user", user]
        for name, value in (env or {}).items():
            cmd += ["--env", f"{name}={value}"]
        cmd += [service, *argv]
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


def compose_ls() -> dict[str, tuple[int, int]]:
    """Running projects as ``name -> (running, exited)`` containers."""
    client = DockerClient()
    with docker_errors("listing compose projects"):
        projects = client.compose.ls(all=True)
    return {p.name: (p.running or 0, p.exited or 0) for p in projects if p.name}


def labelled(label: str, *, value_of: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """Containers and networks that carry ``label`` (``key`` or ``key=value``).

    Maps id -> the value of ``value_of`` (default: of the label's own key).
    """
    key = value_of or label.split("=", 1)[0]
    client = DockerClient()
    with docker_errors("listing labelled containers and networks"):
        containers = {
            c.id: (c.config.labels or {}).get(key, "")
            for c in client.container.list(all=True, filters={"label": label})
        }
        networks = {
            n.id: (n.labels or {}).get(key, "")
            for n in client.network.list(filters={"label": label})
        }
    return containers, networks


def remove(containers: Iterable[str], networks: Iterable[str]) -> None:
    client = DockerClient()
    with docker_errors("removing containers"):
        if ids := list(containers):
            client.container.remove(ids, force=True, volumes=True)
    with docker_errors("removing networks"):
        for network in networks:
            client.network.remove(network)
