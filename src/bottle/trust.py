"""Repository agents the user has read and allowed to run, by content (like ``direnv allow``).

An agent file in ``./.bottle/agents/`` comes with the repository, and the agent of a
previous session could have written it. It runs only once the user ran ``bottle trust
PATH``, which records ``sha256(content)`` for that absolute path in
``$BOTTLE_HOME/trust.json``; a changed file needs trusting again.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from bottle import safefs
from bottle.errors import ManifestError, StateError

TRUST_FILE = "trust.json"
_LOCK_FILE = ".trust.lock"
#: Agent files are small Markdown; a bound keeps a hostile one from filling memory.
MAX_AGENT_BYTES = 1024 * 1024

TrustState = Literal["trusted", "untrusted", "changed"]


class TrustEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str
    trusted_at: datetime


class TrustFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = 1
    files: dict[str, TrustEntry] = {}


def key(path: Path) -> str:
    """The absolute, normalised path (no link resolved: the content hash is what counts)."""
    return os.path.normpath(os.path.abspath(path))


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_agent_file(path: Path) -> bytes:
    """The bytes of a repository agent file: a regular file, not a link, FIFO or device."""
    return safefs.read_regular(Path(path), max_bytes=MAX_AGENT_BYTES)


def load(home: Path) -> TrustFile:
    path = home / TRUST_FILE
    try:
        raw = safefs.read_regular(path, max_bytes=16 * 1024 * 1024)
    except FileNotFoundError:
        return TrustFile()
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return TrustFile.model_validate_json(raw)
    except ValidationError:
        raise StateError(
            f"{path} is damaged",
            hint="Move it aside and trust your repository agents again with 'bottle trust'.",
        ) from None


def state_of(home: Path, path: Path, data: bytes) -> TrustState:
    """Whether ``data`` (the content just read from ``path``) is what the user trusted."""
    entry = load(home).files.get(key(path))
    if entry is None:
        return "untrusted"
    return "trusted" if entry.sha256 == digest(data) else "changed"


def trust(home: Path, path: Path) -> TrustEntry:
    """Record the current content of ``path`` as trusted; ``ManifestError`` if unreadable."""
    try:
        data = read_agent_file(path)
    except OSError as exc:
        raise ManifestError(
            f"cannot trust it: {exc.strerror or exc}",
            path=path,
            hint="Give the path of a regular agent file, e.g. .bottle/agents/NAME.md.",
        ) from None
    entry = TrustEntry(sha256=digest(data), trusted_at=datetime.now(UTC))
    _change(home, lambda files: files.__setitem__(key(path), entry))
    return entry


def untrust(home: Path, path: Path) -> bool:
    """Forget ``path``; whether it was trusted."""
    found: list[bool] = []
    _change(home, lambda files: found.append(files.pop(key(path), None) is not None))
    return found[0]


def trusted(home: Path) -> dict[str, TrustEntry]:
    return dict(sorted(load(home).files.items()))


def _change(home: Path, edit: Callable[[dict[str, TrustEntry]], object]) -> None:
    """Read, edit and write ``trust.json`` under one lock, so two edits never lose one."""
    # bottle.state imports the manifest models, whose loader imports this module.
    from bottle.files import atomic_write, locked

    home.mkdir(parents=True, exist_ok=True)
    with locked(home / _LOCK_FILE):
        current = load(home)
        files = dict(current.files)
        edit(files)
        text = TrustFile(files=dict(sorted(files.items()))).model_dump_json(indent=2)
        atomic_write(home / TRUST_FILE, text + "\n", mode=0o600)


def refusal(path: Path, state: TrustState) -> ManifestError:
    """The error for starting a repository agent that is not trusted as it is now."""
    why = (
        "changed since you trusted it"
        if state == "changed"
        else "is a repository agent you have not trusted"
    )
    return ManifestError(
        f"{why}; it may have been written by an agent or come with the repository",
        path=path,
        hint=f"Read it, then run 'bottle trust {path}' to allow this exact content.",
    )
