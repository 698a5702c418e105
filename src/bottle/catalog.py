"""What is defined, and where: the rows of ``bottle agents`` and ``bottle bottles``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from bottle.manifest import load_manifest
from bottle.settings import Settings
from bottle.sidecars import registry


class AgentRow(BaseModel):
    name: str
    bottle: str
    origin: str  # home | repo | builtin
    path: str | None
    description: str
    skills: list[str]
    trust: str | None = None  # repository agents: trusted | untrusted | changed


class BottleRow(BaseModel):
    """One bottle; each sidecar adds its own columns (``routes``, ``remotes``, …) as extras."""

    model_config = ConfigDict(extra="allow")

    name: str
    extends: list[str]
    provider: str
    path: str | None
    description: str

    def column(self, key: str) -> int | bool:
        """A sidecar's column (0 when no registered sidecar reports it)."""
        value: int | bool = (self.model_extra or {}).get(key, 0)
        return value


def list_agents(settings: Settings, cwd: Path) -> list[AgentRow]:
    manifest = load_manifest(home=settings.home, cwd=cwd)
    return [
        AgentRow(
            name=a.name,
            bottle=a.spec.bottle,
            origin=a.origin,
            path=str(a.path) if a.path else None,
            description=a.spec.description,
            skills=list(a.spec.skills),
            trust=a.trust,
        )
        for a in sorted(manifest.agents.values(), key=lambda a: a.name)
    ]


def list_bottles(settings: Settings, cwd: Path) -> list[BottleRow]:
    manifest = load_manifest(home=settings.home, cwd=cwd)
    rows = []
    for name in sorted(manifest.bottles):
        source = manifest.bottles[name]
        spec = manifest.resolve_bottle(name)
        columns: dict[str, int | bool] = {}
        for sidecar in registry():
            columns |= sidecar.summary(spec.section(sidecar.section))
        rows.append(
            BottleRow(
                name=name,
                extends=list(source.spec.extends),
                provider=spec.agent.provider if spec.agent else "shell",
                path=str(source.path) if source.path else None,
                description=spec.description,
                **columns,
            )
        )
    return rows
