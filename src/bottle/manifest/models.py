"""Typed models of bottle and agent files (the YAML front matter of a ``.md`` file)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from bottle.policy import EnvName, Route

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def check_name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-40 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


Name = Annotated[str, AfterValidator(check_name)]
ProviderKind = Literal["shell", "claude", "codex"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AgentProvider(_Strict):
    """Which agent program runs in the bottle, and how its image is made."""

    provider: ProviderKind = "shell"
    dockerfile: str | None = Field(
        None, description="path (relative to the bottle file) of a Dockerfile for the agent image"
    )
    args: tuple[str, ...] = Field((), description="extra arguments for the agent command")
    overridable: tuple[Literal["provider", "args"], ...] = Field(
        ("args",), description="which of these settings an agent file may override"
    )
    user: Literal["workspace", "root"] = Field(
        "workspace",
        description="who the agent runs as: the workspace owner (never root), or 'root' to "
        "allow a root-owned workspace (still without any capability)",
    )


class Egress(_Strict):
    routes: tuple[Route, ...] = ()
    dlp_secrets: tuple[EnvName, ...] = Field(
        (), description="more host variables whose values must never leave, beside token_refs"
    )


class GitRemote(_Strict):
    """A remote the agent may fetch from and push to, through git-gate."""

    name: Name
    url: str = Field(description="ssh (git@host:path, ssh://…) or https URL of the real remote")
    key_ref: EnvName | None = Field(
        None, description="host variable holding the private SSH key (ssh remotes)"
    )
    token_ref: EnvName | None = Field(
        None, description="host variable holding an HTTPS token (https remotes)"
    )
    host_key: str | None = Field(
        None, description="pinned known_hosts line for the remote's SSH host"
    )
    push: bool = True

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if re.match(r"^(https://|ssh://|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:|file://)", value):
            return value
        raise ValueError(
            f"{value!r} is not a git remote URL: use https://host/path, ssh://user@host/path "
            "or user@host:path"
        )


class Git(_Strict):
    remotes: tuple[GitRemote, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Git:
        names = [r.name for r in self.remotes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"remote names must be unique; repeated: {', '.join(dupes)}")
        return self


def _check_env_value(value: str) -> str:
    if value.startswith("${") and not re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", value):
        raise ValueError(f"{value!r}: write a host variable copy as ${{NAME}}")
    if value.startswith("?") and not value[1:].strip():
        raise ValueError("a '?' value must carry the question to ask, e.g. '?Your name'")
    return value


EnvValue = Annotated[str, AfterValidator(_check_env_value)]


class Supervise(_Strict):
    """The supervise sidecar: ``true``/``false``, or a mapping of its settings."""

    enabled: bool = True
    wait: int = Field(
        30,
        ge=1,
        le=3600,
        description="seconds a filing tool waits for the operator before answering 'pending'",
    )


class Limits(_Strict):
    """Resource ceilings of the containers (compose ``pids_limit`` / ``mem_limit``)."""

    agent_pids: int = Field(512, ge=16, le=1_000_000, description="processes in the agent")
    agent_memory: str = Field(
        "2g", pattern=r"^[1-9][0-9]*[kmg]$", description="agent memory, e.g. 2g"
    )
    sidecar_pids: int = Field(128, ge=16, le=1_000_000, description="processes per sidecar")
    sidecar_memory: str = Field(
        "512m", pattern=r"^[1-9][0-9]*[kmg]$", description="memory per sidecar, e.g. 512m"
    )


class BottleSpec(_Strict):
    """A bottle: the policy an agent runs under. Only the user's home may define one."""

    description: str = ""
    extends: tuple[Name, ...] = ()
    agent: AgentProvider | None = None
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    egress: Egress | None = None
    git: Git | None = None
    limits: Limits | None = None
    #: What the file does not set stays out of ``model_fields_set``, so ``extends`` can merge
    #: the settings one by one.
    supervise: Supervise = Field(default_factory=Supervise)

    @field_validator("supervise", mode="before")
    @classmethod
    def _on_off(cls, value: object) -> object:
        if isinstance(value, bool):
            return {"enabled": value}
        if value is None:
            return {}
        if not isinstance(value, dict | Supervise):
            raise ValueError("give true, false or settings such as {wait: 30}")
        return value

    @field_validator("extends", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value


class AgentOverride(_Strict):
    """What an agent file may say about its provider, if its bottle allows it."""

    provider: ProviderKind | None = None
    args: tuple[str, ...] | None = None


#: Keys of Claude Code's own subagent files: accepted and ignored, so one file can serve both.
CLAUDE_SUBAGENT_KEYS = frozenset(
    {
        "name",
        "description",
        "model",
        "color",
        "tools",
        "disallowedTools",
        "permissionMode",
        "mcpServers",
        "hooks",
        "memory",
    }
)


class AgentSpec(_Strict):
    """An agent: a system prompt plus which bottle it runs in."""

    bottle: Name = "default"
    skills: tuple[Name, ...] = ()
    provider: AgentOverride | None = None
    description: str = ""

    @field_validator("provider", mode="before")
    @classmethod
    def _bare_kind(cls, value: object) -> object:
        return {"provider": value} if isinstance(value, str) else value
