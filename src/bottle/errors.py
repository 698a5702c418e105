"""Every error bottle raises on purpose, in two honest kinds.

::

    BottleError                 base: .message, .hint (the one-paragraph fix), .exit_code
    ├── Refused                 exit 2: the input is wrong and the user can fix it
    │   ├── ManifestError       a bottle/agent file (or a Dockerfile it names): .path, .field
    │   ├── PlanError           files parse, but cannot be resolved into a plan
    │   ├── SettingsError       a BOTTLE_* environment variable is unusable
    │   ├── SlugError           a slug argument that no instance could have (``../x``)
    │   └── ApplyError          a live change (routes edit, proposal) was refused as given
    └── Failed                  exit 1: something broke; the cause stays in ``__cause__``
        ├── DockerUnavailable   no docker CLI, no daemon, or no compose v2
        ├── EngineError         a docker / compose call failed: .argv, .stderr
        │   ├── ImageBuildError an image build failed: .step
        │   ├── StartTimeout    a service did not become healthy in time
        │   └── DownIncomplete  down said success but left a network behind
        ├── ApplyFailed         a live change was valid but could not be applied
        ├── InstanceNotFound    no state directory for that slug
        └── StateError          a state directory is unreadable, locked, or in the wrong status

Nothing else leaves the library: ``OSError``, ``TimeoutError``, ``KeyError`` and the
routes parser's ``RoutesFileError`` are translated where they arise, with the original as
``__cause__``. A CLI prints ``error: <message>`` and ``hint: <hint>`` and exits with
``exit_code``; with ``--debug`` it also prints the cause chain.
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


class Refused(BottleError):
    """The user's input (files, arguments, an edit) is wrong; nothing was changed."""

    exit_code = 2


class Failed(BottleError):
    """Something broke while doing what the input asked (Docker, a timeout, the state)."""

    exit_code = 1


class ManifestError(Refused):
    """A bottle or agent file (or the built-in defaults it extends) is invalid.

    ``problems`` are all of a file's ``(field, message)`` errors at once (``field`` is the
    first's); the message lists them, bounded by ``MAX_PROBLEMS``.
    """

    MAX_PROBLEMS = 20

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        field: str | None = None,
        hint: str | None = None,
        problems: Sequence[tuple[str | None, str]] = (),
    ) -> None:
        parts = [str(path)] if path is not None else []
        if len(problems) > 1:
            shown = [f"  {f or '(file)'}: {m}" for f, m in problems[: self.MAX_PROBLEMS]]
            if len(problems) > self.MAX_PROBLEMS:
                shown.append(f"  … and {len(problems) - self.MAX_PROBLEMS} more")
            message = f"{len(problems)} problems:\n" + "\n".join(shown)
        elif field:
            parts.append(field)
        super().__init__(": ".join([*parts, message]), hint=hint)
        self.path = Path(path) if path is not None else None
        self.field = field
        self.problems = list(problems) or [(field, message)]


class PlanError(Refused):
    """The manifest is valid but the instance cannot be planned (unset variable, bad option)."""


class SettingsError(Refused):
    """A ``BOTTLE_*`` environment variable names something unusable."""


class SlugError(Refused):
    """A slug (or prefix) given to look an instance up that is not of a slug's form."""


class DockerUnavailable(Failed):
    """Docker, its daemon, or compose v2 is missing."""


class EngineError(Failed):
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


class DownIncomplete(EngineError):
    """``compose down`` answered success but left a network behind (still in use)."""


class ApplyError(Refused):
    """A live-config change or a proposal was refused; the old config stays in force."""


class ApplyFailed(Failed):
    """A valid change could not be applied (Docker, a timeout); the old config stays in force."""


class InstanceNotFound(Failed):
    """No instance has that slug."""


class StateError(Failed):
    """A state directory is unreadable, or an instance is in the wrong status for the call."""
