"""Built-in defaults, so ``bottle render`` and ``bottle start`` work with no files at all."""

from __future__ import annotations

from bottle.manifest.models import AgentProvider, AgentSpec, BottleSpec

DEFAULT_BOTTLE = BottleSpec(
    description="Built-in: a shell agent, no way out but what you allow, supervise on.",
    agent=AgentProvider(provider="shell"),
    supervise=True,
)

BUILTIN_BOTTLES: dict[str, BottleSpec] = {"default": DEFAULT_BOTTLE}

BUILTIN_AGENTS: dict[str, tuple[AgentSpec, str]] = {
    "shell": (
        AgentSpec(bottle="default", description="Built-in: an interactive shell in the bottle."),
        "",
    ),
}
