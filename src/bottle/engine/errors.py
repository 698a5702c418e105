"""The one boundary where docker's failures (python-on-whales' exceptions, or a docker CLI
child's exit code and stderr) become bottle's.

python-on-whales is imported only when one of its exceptions must be caught: it takes
about a second to import, and the commands that run docker directly never pay for it.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterable, Iterator, Sequence

from bottle.errors import DockerUnavailable, EngineError

_NO_DAEMON = ("Cannot connect to the Docker daemon", "Is the docker daemon running")
_NO_COMPOSE = (
    "'compose' is not a docker command",
    "unknown command: docker compose",
    "unknown shorthand flag: 'f' in -f",
    "unknown flag: --file",
)

DOCKER_HINT = (
    "Install Docker (Debian: apt-get install docker.io) and start it (systemctl start docker, "
    "or run dockerd as root); check with 'docker info'."
)
COMPOSE_HINT = (
    "Install compose v2 as a Docker CLI plugin at ~/.docker/cli-plugins/docker-compose "
    "(scripts/install-docker.sh in the bottle repository does it); check with "
    "'docker compose version'."
)


def docker_cli() -> str:
    """The path of the docker command; ``DockerUnavailable`` when it is not installed."""
    path = shutil.which("docker")
    if path is None:
        raise DockerUnavailable("the docker command is not installed", hint=DOCKER_HINT)
    return path


def raise_if_no_daemon(output: Iterable[str]) -> None:
    """``DockerUnavailable`` when docker's output says the daemon cannot be reached."""
    text = "\n".join(output)
    if any(marker in text for marker in _NO_DAEMON):
        raise DockerUnavailable("the Docker daemon is not running", hint=DOCKER_HINT)


def failure(argv: Sequence[str], stderr: str, code: int, what: str) -> Exception:
    """The bottle error for a docker child of ``what`` that exited ``code`` saying ``stderr``."""
    stderr = stderr.strip()
    try:
        raise_if_no_daemon([stderr])
    except DockerUnavailable as down:
        return down
    if any(marker in stderr for marker in _NO_COMPOSE):
        return DockerUnavailable("docker compose v2 is not installed", hint=COMPOSE_HINT)
    last = stderr.splitlines()[-1] if stderr else f"exit code {code}"
    return EngineError(f"{what} failed: {last}", argv=list(argv), stderr=stderr)


def translate(exc: BaseException, what: str) -> Exception:
    """The bottle error for a python-on-whales failure of ``what``."""
    from python_on_whales.client_config import ClientNotFoundError, ParsingError
    from python_on_whales.exceptions import DockerException

    if isinstance(exc, ClientNotFoundError):
        return DockerUnavailable("the docker command is not installed", hint=DOCKER_HINT)
    if isinstance(exc, ParsingError):
        return EngineError(f"{what}: could not parse docker's answer: {exc}")
    if isinstance(exc, DockerException):
        return failure(exc.docker_command, exc.stderr or "", exc.return_code, what)
    raise TypeError(f"not a python-on-whales error: {exc!r}")


@contextlib.contextmanager
def docker_errors(what: str) -> Iterator[None]:
    """Run a python-on-whales call; its failures leave as bottle errors."""
    from python_on_whales.client_config import ClientNotFoundError, ParsingError
    from python_on_whales.exceptions import DockerException

    try:
        yield
    except (ClientNotFoundError, ParsingError, DockerException) as exc:
        raise translate(exc, what) from exc
