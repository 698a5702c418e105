"""BottlePlan: a frozen, fully-resolved description of one instance.

``resolve_plan`` is a pure function of (manifest, options, environment, settings): it reads
no Docker state and writes nothing. Everything later steps need is decided here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, TypeAdapter

from bottle.errors import ManifestError, PlanError, Refused
from bottle.images import ImageSpec
from bottle.manifest import AgentSource, Manifest
from bottle.manifest.models import AgentCommand, Limits, ProviderKind
from bottle.settings import Settings
from bottle.sidecars import PlanContext, enabled_sidecars, registry

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
class Images:
    """The images an instance runs, and the specs to build them from (parents first).

    A plan read back from ``plan.json`` has the refs but no specs (they hold build contexts).
    """

    agent: str
    sidecar: str
    specs: tuple[ImageSpec, ...] = ()

    @classmethod
    def of(cls, specs: Sequence[ImageSpec]) -> Images:
        return cls(agent=specs[-1].ref, sidecar=specs[0].ref, specs=tuple(specs))


#: Sidecars' "uid:gid" when bottle itself runs as root (no user of the host is meant).
SIDECAR_FALLBACK_USER = "65532:65532"


def sidecar_user() -> str:
    uid, gid = os.getuid(), os.getgid()
    return SIDECAR_FALLBACK_USER if uid == 0 else f"{uid}:{gid}"


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
    #: The sub-plan of every enabled sidecar, by sidecar name (see ``bottle.sidecars``).
    sidecars: Mapping[str, BaseModel]
    images: Images
    version: str
    missing_env: tuple[str, ...] = field(default=())
    limits: Limits = field(default_factory=Limits)
    #: "uid:gid" every sidecar runs as: whoever runs bottle (owns the state dir), never root.
    sidecar_user: str = field(default_factory=sidecar_user)
    root_allowed: bool = False  # the bottle says ``agent: {user: root}``
    #: ``provider: command``: how its program is run (the bottle's ``agent.command``).
    agent_command: AgentCommand | None = None
    #: The subnet of each network, by network name (bottle.subnets); leased at start.
    subnets: Mapping[str, str] = field(default_factory=dict)

    @property
    def agent_is_root(self) -> bool:
        return self.user.split(":")[0] == "0"

    def require_user(self) -> None:
        """Raise PlanError when the agent would run as root and the bottle did not opt in."""
        if self.agent_is_root and not self.root_allowed:
            raise PlanError(
                f"the workspace {self.cwd} is owned by root, and the agent runs as the "
                "workspace's owner: bottle does not run an agent as root unless asked to",
                hint=f"chown the workspace to a user (e.g. chown -R 1000:1000 {self.cwd}), "
                f"or set 'agent: {{user: root}}' in the bottle {self.bottle!r} (the agent "
                "then runs as root, still without any capability).",
            )

    def require_workspace(self) -> None:
        """PlanError when the workspace holds bottle's home, or lies in one of the dirs of
        it bottle reads: the agent writes its workspace, and there it could rewrite its own
        routes, its ``plan.json`` (what a resume mounts and runs) and the bottles."""
        home = self.state_dir.parent.parent.resolve()
        cwd = self.cwd.resolve()
        read = [home / name for name in ("state", "bottles", "agents", "skills")]
        inside = next((d for d in read if cwd.is_relative_to(d)), None)
        if home.is_relative_to(cwd) or inside is not None:
            where = f"holds BOTTLE_HOME ({home})" if inside is None else f"is inside {inside}"
            raise PlanError(
                f"the workspace {cwd} {where}, which the agent must never write",
                hint="Start the agent from a project directory of its own, or set BOTTLE_HOME "
                "to a directory outside the workspace.",
            )

    @property
    def compose_project(self) -> str:
        return f"bottle-{self.slug}"

    @property
    def secret_refs(self) -> tuple[str, ...]:
        """Host variables whose values must never be written anywhere."""
        refs = [ref for s in enabled_sidecars(self) for ref in s.secret_refs(self.sidecars[s.name])]
        return tuple(dict.fromkeys(refs))

    @property
    def host_vars(self) -> tuple[str, ...]:
        """Host variables compose reads at ``up``: ``${VAR}`` env values and secrets."""
        names = [e.value for e in self.env if e.kind == "host"]
        return tuple(dict.fromkeys([*names, *self.secret_refs]))

    def answers(self, ask: Callable[[str, str], str] | None) -> dict[str, str]:
        """The ``?question`` values, asked now; PlanError when there is no one to ask."""
        asked = [e for e in self.env if e.kind == "ask"]
        if asked and ask is None:
            raise PlanError(
                f"bottle {self.bottle!r} asks for {', '.join(e.name for e in asked)} at start",
                hint="Start it from a terminal so bottle can ask, or set the value in the "
                "bottle's env.",
            )
        return {e.process_var: ask(e.name, e.value) for e in asked} if ask else {}

    def require_env(self, environ: Mapping[str, str] | None = None) -> None:
        """Raise PlanError when a variable the instance needs is not set on the host.

        With ``environ``, checked against it now (a resumed plan's ``missing_env`` is the
        start's); else what was missing when the plan was resolved.
        """
        missing = self.missing_env
        if environ is not None:
            missing = tuple(n for n in self.host_vars if n not in environ)
        if missing:
            names = ", ".join(missing)
            raise PlanError(
                f"bottle {self.bottle!r} needs host variable(s) that are not set: {names}",
                hint=f"export {missing[0]}=... before starting, or remove the "
                "token_ref / ${VAR} that names it from the bottle.",
            )
        from bottle import chatgpt_login

        chatgpt_login.compose_values(self)  # a ChatGPT login that is none or expired: refused


@dataclass(frozen=True)
class PlanOptions:
    agent: str = "shell"
    bottle: str | None = None  # None: the agent's own bottle
    cwd: Path = field(default_factory=Path.cwd)
    suffix: str | None = None  # the 5 random base36 characters; None draws them
    extra_args: tuple[str, ...] = ()


def plan_json(plan: BottlePlan) -> str:
    """``plan.json``: the plan as JSON (names and references only: it holds no secret value).

    Image specs are left out (they hold whole build contexts); each sub-plan is written by
    its own model so :func:`load_plan` can read it back through the registry.
    """
    bare = replace(plan, sidecars={}, images=replace(plan.images, specs=()))
    data: dict[str, Any] = _PLAN_ADAPTER.dump_python(bare, mode="json")
    data["sidecars"] = {name: sub.model_dump(mode="json") for name, sub in plan.sidecars.items()}
    return json.dumps(data, indent=2) + "\n"


def load_plan(path: Path) -> BottlePlan:
    """The plan :func:`plan_json` wrote to ``path``; PlanError when it cannot be read."""
    try:
        data = json.loads(path.read_bytes())
        subs = data.pop("sidecars")
        known = {s.name: s for s in registry()}
        if unknown := sorted(set(subs) - set(known)):
            raise ValueError(f"names sidecar(s) this version does not know: {', '.join(unknown)}")
        sidecars = {name: known[name].plan_model.model_validate(sub) for name, sub in subs.items()}
        plan = _PLAN_ADAPTER.validate_python({**data, "sidecars": {}})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        raise PlanError(
            f"cannot read the plan {path}: {reason}",
            hint="The state directory is damaged or older than this version of bottle; "
            "see 'bottle ls'.",
        ) from None
    return replace(plan, sidecars=sidecars)


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
    command = provider_cfg.command if provider_cfg else None
    if provider == "command" and command is None:
        raise ManifestError(
            f"the agent asks for provider 'command', but bottle {bottle_name!r} says no "
            "command to run",
            path=agent.path,
            field="provider.provider",
            hint=f"Give bottle {bottle_name!r} 'agent: {{provider: command, command: "
            '{interactive: [...], headless: [..., "{prompt}"]}, dockerfile: ...}\', '
            "or use another provider.",
        )
    if provider != "command":
        command = None  # an agent file chose another provider than the bottle's own

    bottle_path = manifest.bottles[bottle_name].path
    env = tuple(_env_entry(name, value) for name, value in sorted(spec.env.items()))
    ctx = PlanContext(bottle=bottle_name, path=bottle_path)
    sidecars: dict[str, BaseModel] = {}
    needed = [e.value for e in env if e.kind == "host"]
    for sidecar in registry():
        sub = sidecar.plan(spec.section(sidecar.section), ctx)
        if sub is not None:
            sidecars[sidecar.name] = sub
            needed += sidecar.secret_refs(sub)
    missing = tuple(dict.fromkeys(n for n in needed if n not in environ))
    dockerfile = _dockerfile(provider_cfg.dockerfile if provider_cfg else None, bottle_path)

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
        root_allowed=bool(provider_cfg and provider_cfg.user == "root"),
        agent_command=command,
        env=env,
        sidecars=sidecars,
        images=Images.of(_images(settings, provider, dockerfile, bottle_path)),
        version=version,
        missing_env=missing,
        limits=spec.limits or Limits(),
    )


_PLAN_ADAPTER: TypeAdapter[BottlePlan] = TypeAdapter(BottlePlan)


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
) -> list[ImageSpec]:
    from bottle.images import plan_images  # reads package files: kept out of import time

    try:
        return plan_images(settings, provider, dockerfile)
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
    """The agent runs as the workspace's owner, so what it writes is the user's."""
    try:
        stat = cwd.stat()
    except OSError as exc:
        raise PlanError(
            f"working directory {cwd} is not usable: {exc.strerror}",
            hint="Run bottle from a directory that exists.",
        ) from None
    return f"{stat.st_uid}:{stat.st_gid}"
