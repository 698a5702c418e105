"""Built-in defaults, so ``bottle render`` and ``bottle start`` work with no files at all."""

from __future__ import annotations

from bottle.manifest.bottlefile import bottle_file_model
from bottle.manifest.models import AgentSpec, BottleSpec


def builtin_bottles() -> dict[str, BottleSpec]:
    """Built lazily: the bottle file model needs the sidecar registry."""
    default = bottle_file_model().model_validate(
        {
            "description": "Built-in: a shell agent, no way out but what you allow, supervise on.",
            "agent": {"provider": "shell"},
            "supervise": True,
        }
    )
    return {"default": default}


BUILTIN_AGENTS: dict[str, tuple[AgentSpec, str]] = {
    "shell": (
        AgentSpec(bottle="default", description="Built-in: an interactive shell in the bottle."),
        "",
    ),
}
