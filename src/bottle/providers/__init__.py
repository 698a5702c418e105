"""Agent providers: which program runs in the agent container, one module each.

``provider(kind)`` is the only door; a new provider is a module exporting ``PROVIDER``
(see ``base.Provider``) and one line in ``_MODULES``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from bottle.providers.base import Provider

if TYPE_CHECKING:
    from bottle.manifest.models import ProviderKind
    from bottle.plan import BottlePlan

__all__ = ["Provider", "provider", "seed_transcript"]

_MODULES: dict[str, str] = {
    "shell": "bottle.providers.shell",
    "claude": "bottle.providers.claude",
    "codex": "bottle.providers.codex",
}


def provider(kind: ProviderKind) -> Provider:
    found: Provider = importlib.import_module(_MODULES[kind]).PROVIDER
    return found


def seed_transcript(plan: BottlePlan, directory: Path) -> list[str]:
    """Write the provider's ``seed_files`` missing from ``directory`` (the transcript dir);
    returns the paths written.

    What is there is kept (a resumed conversation's config is the program's own), and
    nothing is followed: a link or another kind of file where a seed goes is left alone.
    When bottle runs as root, what it makes is handed to the agent's uid, who must write
    it (Claude rewrites its config on every start).
    """
    owner = _ids(plan.user) if os.getuid() == 0 else None
    written: list[str] = []
    for rel, data in sorted(provider(plan.provider).seed_files(plan).items()):
        parts = Path(rel).parts
        is_dir = rel.endswith("/")
        if not _dirs(directory, parts if is_dir else parts[:-1], owner):
            continue
        if is_dir:
            written.append(rel)
            continue
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            fd = os.open(directory.joinpath(*parts), flags, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        if owner is not None:
            os.chown(directory.joinpath(*parts), *owner)
        written.append(rel)
    return written


def _dirs(directory: Path, parts: tuple[str, ...], owner: tuple[int, int] | None) -> bool:
    """Make ``directory/parts...``, one level at a time; False where one is no directory."""
    here = directory
    for part in parts:
        here = here / part
        if here.is_symlink() or (here.exists() and not here.is_dir()):
            return False
        if not here.exists():
            here.mkdir(mode=0o755)
            if owner is not None:
                os.chown(here, *owner)
    return True


def _ids(user: str) -> tuple[int, int]:
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)
