"""What is defined, and where: the rows of ``bottle agents`` and ``bottle bottles``."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict

from bottle.errors import ManifestError
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
    error: str | None = None  # the file does not load: why (the other fields are empty)


class BottleRow(BaseModel):
    """One bottle; each sidecar adds its own columns (``routes``, ``remotes``, …) as extras."""

    model_config = ConfigDict(extra="allow")

    name: str
    extends: list[str]
    provider: str
    path: str | None
    description: str
    error: str | None = None  # the file (or a parent it extends) does not load: why

    def column(self, key: str) -> int | bool:
        """A sidecar's column (0 when no registered sidecar reports it)."""
        value: int | bool = (self.model_extra or {}).get(key, 0)
        return value


def list_agents(settings: Settings, cwd: Path) -> list[AgentRow]:
    manifest = load_manifest(home=settings.home, cwd=cwd, strict=False)
    rows = [
        AgentRow(
            name=a.name,
            bottle=a.spec.bottle,
            origin=a.origin,
            path=str(a.path) if a.path else None,
            description=a.spec.description,
            skills=list(a.spec.skills),
            trust=a.trust,
        )
        for a in manifest.agents.values()
    ]
    rows += [
        AgentRow(
            name=name,
            bottle="",
            origin="home" if error.path and error.path.is_relative_to(settings.home) else "repo",
            path=str(error.path) if error.path else None,
            description="",
            skills=[],
            error=error.message,
        )
        for name, error in manifest.broken_agents.items()
    ]
    return sorted(rows, key=lambda r: r.name)


def list_bottles(settings: Settings, cwd: Path) -> list[BottleRow]:
    manifest = load_manifest(home=settings.home, cwd=cwd, strict=False)
    rows = []
    for name in sorted({*manifest.bottles, *manifest.broken_bottles}):
        source = manifest.bottles.get(name)
        try:
            spec = manifest.resolve_bottle(name)
        except ManifestError as exc:
            path = source.path if source else exc.path
            extends = list(source.spec.extends) if source else []
            rows.append(
                BottleRow(
                    name=name,
                    extends=extends,
                    provider="",
                    path=str(path) if path else None,
                    description="",
                    error=exc.message,
                )
            )
            continue
        assert source is not None
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
