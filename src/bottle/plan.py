"""BottlePlan: a frozen, fully-resolved description of one instance.

``resolve_plan`` is a pure function of (manifest, options, environment, settings): it reads
no Docker state and writes nothing. Everything later steps need is decided here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import ValidationError

from bottle.errors import ManifestError, PlanError, Refused
from bottle.manifest import AgentSource, GitRemote, Manifest
from bottle.manifest.models import ProviderKind
from bottle.policy import Routes
from bottle.settings import Settings

if TYPE_CHECKING:
    from bottle.images import ImageSpec

_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class EnvEntry:
    """One variable of the agent's environment, and where its value comes from."""

    name: str
    kind: Literal["literal", "host", "ask"]
    value: str  # literal: the value; host: the host variable's name; ask: the question

    @property
    def compose_ref(self) -> str:
        """What the compose file says: never a secret value."""
        if self.kind == "literal":
            return self.value.replace("$", "$$")
        return "${" + self.process_var + "}"

    @property
    def process_var(self) -> str:
        """The variable compose reads from its process environment."""
        return self.value if self.kind == "host" else f"BOTTLE_ASK_{self.name}"


@dataclass(frozen=True)
class EgressPlan:
    routes: Routes
    dlp_secrets: tuple[str, ...] = ()

    @property
    def secret_refs(self) -> tuple[str, ...]:
        """Every host variable whose value egress holds: credentials, then DLP-only ones."""
        return tuple(dict.fromkeys((*self.routes.token_refs, *self.dlp_secrets)))


@dataclass(frozen=True)
class GitGatePlan:
    remotes: tuple[GitRemote, ...]

    @property
    def secret_refs(self) -> tuple[str, ...]:
        refs = [r.key_ref or r.token_ref for r in self.remotes]
        return tuple(dict.fromkeys(ref for ref in refs if ref))


@dataclass(frozen=True)
class SupervisePlan:
    wait_seconds: int = 30


@dataclass(frozen=True)
class Images:
    """The images an instance runs, and the specs to build them from (parents first)."""

    specs: tuple[ImageSpec, ...]

    @property
    def agent(self) -> str:
        return self.specs[-1].ref

    @property
    def sidecar(self) -> str:
        return self.specs[0].ref


@dataclass(frozen=True)
class BottlePlan:
    """Everything about one instance, decided before anything runs."""

    slug: str
    agent: str
    agent_origin: str
    agent_path: Path | None
    bottle: str
    provider: ProviderKind
    agent_args: tuple[str, ...]
    agent_dockerfile: Path | None
    system_prompt: str
    skills: Mapping[str, Path]
    cwd: Path
    state_dir: Path
    user: str  # "uid:gid" the agent runs as: the owner of the workspace
    env: tuple[EnvEntry, ...]
    egress: EgressPlan
    git_gate: GitGatePlan | None
    supervise: SupervisePlan | None
    images: Images
    version: str
    missing_env: tuple[str, ...] = field(default=())

    @property
    def compose_project(self) -> str:
        return f"bottle-{self.slug}"

    @property
    def secret_refs(self) -> tuple[str, ...]:
        """Host variables whose values must never be written anywhere."""
        refs = list(self.egress.secret_refs)
        if self.git_gate:
            refs += self.git_gate.secret_refs
        return tuple(dict.fromkeys(refs))

    def require_env(self) -> None:
        """Raise PlanError when a variable the instance needs is not set on the host."""
        if self.missing_env:
            names = ", ".join(self.missing_env)
            raise PlanError(
                f"bottle {self.bottle!r} needs host variable(s) that are not set: {names}",
                hint=f"export {self.missing_env[0]}=... before starting, or remove the "
                "token_ref / ${VAR} that names it from the bottle.",
            )


@dataclass(frozen=True)
class PlanOptions:
    agent: str = "shell"
    bottle: str | None = None  # None: the agent's own bottle
    cwd: Path = field(default_factory=Path.cwd)
    suffix: str | None = None  # the 5 random base36 characters; None draws them
    extra_args: tuple[str, ...] = ()


def random_suffix() -> str:
    raw = int.from_bytes(os.urandom(8), "big")
    return "".join(_BASE36[(raw >> (6 * i)) % 36] for i in range(5))


def resolve_plan(
    manifest: Manifest,
    options: PlanOptions,
    *,
    settings: Settings,
    environ: Mapping[str, str],
    version: str = "0",
) -> BottlePlan:
    """The plan of one instance; raises ManifestError or PlanError on bad input."""
    agent = manifest.agent(options.agent)
    bottle_name = options.bottle or agent.spec.bottle
    spec = manifest.resolve_bottle(bottle_name)
    provider_cfg = spec.agent
    provider: ProviderKind = provider_cfg.provider if provider_cfg else "shell"
    args: tuple[str, ...] = provider_cfg.args if provider_cfg else ()
    allowed = provider_cfg.overridable if provider_cfg else ("args",)
    override = agent.spec.provider
    if override is not None:
        for key in ("provider", "args"):
            value = getattr(override, key)
            if value is None:
                continue
            if key not in allowed:
                raise ManifestError(
                    f"bottle {bottle_name!r} does not let agents override '{key}'",
                    path=agent.path,
                    field=f"provider.{key}",
                    hint=f"Remove provider.{key} here, or add '{key}' to agent.overridable "
                    f"in the bottle {bottle_name!r}.",
                )
        provider = override.provider or provider
        args = override.args if override.args is not None else args

    bottle_path = manifest.bottles[bottle_name].path
    try:
        routes = Routes(routes=spec.egress.routes if spec.egress else ())
    except ValidationError as exc:
        raise ManifestError(
            exc.errors()[0]["msg"].removeprefix("Value error, "),
            path=bottle_path,
            field="egress.routes",
            hint="Give each host one credential.",
        ) from None
    egress = EgressPlan(routes, spec.egress.dlp_secrets if spec.egress else ())
    dockerfile = _dockerfile(provider_cfg.dockerfile if provider_cfg else None, bottle_path)

    env = tuple(_env_entry(name, value) for name, value in sorted(spec.env.items()))
    git_gate = GitGatePlan(spec.git.remotes) if spec.git and spec.git.remotes else None
    supervise = SupervisePlan(spec.supervise.wait) if spec.supervise.enabled else None

    needed = [e.value for e in env if e.kind == "host"]
    needed += list(egress.secret_refs)
    needed += list(git_gate.secret_refs) if git_gate else []
    missing = tuple(dict.fromkeys(n for n in needed if n not in environ))

    cwd = options.cwd.absolute()
    suffix = options.suffix or random_suffix()
    if not re.fullmatch(r"[0-9a-z]{5}", suffix):
        raise PlanError(f"slug suffix {suffix!r} must be 5 base36 characters")
    slug = f"{agent.name}-{suffix}"
    return BottlePlan(
        slug=slug,
        agent=agent.name,
        agent_origin=agent.origin,
        agent_path=agent.path,
        bottle=bottle_name,
        provider=provider,
        agent_args=(*args, *options.extra_args),
        agent_dockerfile=dockerfile,
        system_prompt=agent.body.strip(),
        skills=_skills(manifest, agent),
        cwd=cwd,
        state_dir=settings.state_root / slug,
        user=_owner(cwd),
        env=env,
        egress=egress,
        git_gate=git_gate,
        supervise=supervise,
        images=_images(settings, provider, dockerfile, bottle_path),
        version=version,
        missing_env=missing,
    )


def _env_entry(name: str, value: str) -> EnvEntry:
    if value.startswith("${") and value.endswith("}"):
        return EnvEntry(name, "host", value[2:-1])
    if value.startswith("?"):
        return EnvEntry(name, "ask", value[1:].strip())
    return EnvEntry(name, "literal", value)


def _dockerfile(value: str | None, bottle_path: Path | None) -> Path | None:
    if value is None:
        return None
    base = bottle_path.parent if bottle_path else Path.cwd()
    path = (base / value).expanduser().absolute()
    if not path.is_file():
        raise ManifestError(
            f"agent Dockerfile {value!r} does not exist (looked at {path})",
            path=bottle_path,
            field="agent.dockerfile",
            hint="Give a path relative to the bottle file, or remove agent.dockerfile.",
        )
    return path


def _images(
    settings: Settings, provider: ProviderKind, dockerfile: Path | None, bottle_path: Path | None
) -> Images:
    from bottle.images import plan_images  # reads package files: kept out of import time

    try:
        return Images(tuple(plan_images(settings, provider, dockerfile)))
    except Refused as exc:
        if dockerfile is None:
            raise
        # The Dockerfile is unreadable or builds on the wrong base: name the field that
        # chose it, like a missing one (one bad agent.dockerfile, one message, exit 2).
        raise ManifestError(
            exc.message, path=bottle_path, field="agent.dockerfile", hint=exc.hint
        ) from exc


def _skills(manifest: Manifest, agent: AgentSource) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for name in agent.spec.skills:
        # A repository agent may only use skills of the user's home, never its own.
        dirs = manifest.skills_dirs[:1] if agent.origin == "repo" else manifest.skills_dirs
        for directory in dirs:
            if (directory / name).is_dir():
                found[name] = directory / name
                break
        else:
            raise ManifestError(
                f"skill {name!r} not found",
                path=agent.path,
                field="skills",
                hint=f"Create {dirs[0] / name}/SKILL.md, or remove it from skills.",
            )
    return found


def _owner(cwd: Path) -> str:
    try:
        stat = cwd.stat()
    except OSError as exc:
        raise PlanError(
            f"working directory {cwd} is not usable: {exc.strerror}",
            hint="Run bottle from a directory that exists.",
        ) from None
    return f"{stat.st_uid}:{stat.st_gid}"
