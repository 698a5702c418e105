"""Every error bottle raises on purpose.

::

    BottleError                 base: .message, .hint (the one-paragraph fix)
    ├── ManifestError           a bottle/agent file is wrong: .path, .field
    ├── PlanError               files parse, but cannot be resolved into a plan
    ├── DockerUnavailable       no docker CLI, no daemon, or no compose v2
    ├── EngineError             a docker / compose call failed: .argv, .stderr
    │   ├── ImageBuildError     an image build failed: .step
    │   └── StartTimeout        a service did not become healthy in time
    ├── ApplyError              a live change (routes, proposal) was refused
    ├── InstanceNotFound        no state directory for that slug
    └── StateError              a state directory is unreadable or in the wrong status

A CLI prints ``error: <message>`` and ``hint: <hint>``; ``ManifestError`` and
``ApplyError`` mean bad input (exit 2), the rest exit 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class BottleError(Exception):
    """Base of every error bottle raises deliberately."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ManifestError(BottleError):
    """A bottle or agent file (or the built-in defaults it extends) is invalid."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = str(path) if path is not None else "<built-in>"
        if field:
            where += f": {field}"
        super().__init__(f"{where}: {message}", hint=hint)
        self.path = Path(path) if path is not None else None
        self.field = field


class PlanError(BottleError):
    """The manifest is valid but the instance cannot be planned (unset variable, bad option)."""

    exit_code = 2


class DockerUnavailable(BottleError):
    """Docker, its daemon, or compose v2 is missing."""


class EngineError(BottleError):
    """A docker or docker compose call failed; keeps argv and stderr for --debug."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        stderr: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.argv = list(argv)
        self.stderr = stderr


class ImageBuildError(EngineError):
    """An image build failed; ``step`` is the Dockerfile step that failed, if known."""

    def __init__(
        self,
        message: str,
        *,
        step: str | None = None,
        argv: Sequence[str] = (),
        stderr: str = "",
        hint: str | None = None,
    ) -> None:
        super().__init__(message, argv=argv, stderr=stderr, hint=hint)
        self.step = step


class StartTimeout(EngineError):
    """A service did not become ready within its bound."""


class ApplyError(BottleError):
    """A live-config change or a proposal was refused; the old config stays in force."""

    exit_code = 2


class InstanceNotFound(BottleError):
    """No instance has that slug."""


class StateError(BottleError):
    """A state directory is unreadable, or an instance is in the wrong status for the call."""
