"""Agent providers: which program runs in the agent container, one module each.

``provider(kind)`` is the only door; a new provider is a module exporting ``PROVIDER``
(see ``base.Provider``) and one line in ``_MODULES``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from bottle.providers.base import Provider

if TYPE_CHECKING:
    from bottle.manifest.models import ProviderKind

__all__ = ["Provider", "provider"]

_MODULES: dict[str, str] = {
    "shell": "bottle.providers.shell",
    "claude": "bottle.providers.claude",
    "codex": "bottle.providers.codex",
    "command": "bottle.providers.command",
}


def provider(kind: ProviderKind) -> Provider:
    found: Provider = importlib.import_module(_MODULES[kind]).PROVIDER
    return found
