"""Typed models of bottle and agent files (the YAML front matter of a ``.md`` file)."""

from __future__ import annotations

import re
import string
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from bottle.policy import EnvName

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")


def check_name(value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid name: use 1-40 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


Name = Annotated[str, AfterValidator(check_name)]
ProviderKind = Literal["shell", "claude", "codex", "command"]


class Strict(BaseModel):
    """Every model of a bottle or agent file: unknown keys are errors, values frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


#: The one placeholder of a ``provider: command`` template.
PROMPT_FIELD = "prompt"


def _template(words: tuple[str, ...], *, prompt: bool) -> tuple[str, ...]:
    """An argv template: each word is one argument (no shell), ``{prompt}`` the task
    (``{{``/``}}`` for a literal brace); headless ones must use it, the others may not."""
    if not words or not words[0].strip():
        raise ValueError("give the program and its arguments as a list, e.g. [aider, --yes]")
    used = False
    for word in words:
        if "\0" in word:
            raise ValueError(f"{word!r}: a NUL character cannot be in an argument")
        try:
            fields = [(f, spec, conv) for _, f, spec, conv in string.Formatter().parse(word)]
        except ValueError as exc:
            raise ValueError(f"{word!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
        fields = [item for item in fields if item[0] is not None]
        odd = [f for f, spec, conv in fields if f != PROMPT_FIELD or spec or conv]
        if odd:
            raise ValueError(
                f"{word!r}: only {{{PROMPT_FIELD}}} may be filled in, not {{{odd[0]}}} "
                "(write a literal brace as {{ or }})"
            )
        used = used or bool(fields)
    if prompt and not used:
        raise ValueError(f"a headless command must pass the task: put {{{PROMPT_FIELD}}} in it")
    if not prompt and used:
        raise ValueError(f"an interactive command gets no task: remove {{{PROMPT_FIELD}}}")
    return words


def _interactive(words: tuple[str, ...]) -> tuple[str, ...]:
    return _template(words, prompt=False)


def _headless(words: tuple[str, ...]) -> tuple[str, ...]:
    return _template(words, prompt=True)


class AgentCommand(Strict):
    """How bottle runs a ``provider: command`` agent: argv templates, never a shell line."""

    interactive: Annotated[tuple[str, ...], AfterValidator(_interactive)] = Field(
        description="the attended program, e.g. [aider]; the agent's args are appended"
    )
    headless: Annotated[tuple[str, ...], AfterValidator(_headless)] = Field(
        description="the program working on a task alone: {prompt} is the task"
    )
    resume: Annotated[tuple[str, ...], AfterValidator(_interactive)] | None = Field(
        None, description="the attended program continuing its last conversation"
    )
    headless_resume: Annotated[tuple[str, ...], AfterValidator(_headless)] | None = Field(
        None, description="the headless program continuing its last conversation"
    )


class AgentProvider(Strict):
    """Which agent program runs in the bottle, and how its image is made."""

    provider: ProviderKind = "shell"
    command: AgentCommand | None = Field(
        None,
        description="provider 'command' only: how to run the agent program (argv templates)",
    )
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

    @model_validator(mode="after")
    def _command_fits_provider(self) -> AgentProvider:
        if self.provider == "command":
            if self.command is None:
                raise ValueError(
                    "provider 'command' needs a command: {interactive: [...], headless: "
                    "[..., '{prompt}']}"
                )
            if self.dockerfile is None:
                raise ValueError(
                    "provider 'command' needs a dockerfile that installs the program "
                    "(FROM ${BOTTLE_AGENT_IMAGE}, the shell agent's image)"
                )
        elif self.command is not None:
            raise ValueError(
                f"command is for provider 'command' only (this bottle's is {self.provider!r})"
            )
        return self


def _check_env_value(value: str) -> str:
    if value.startswith("${") and not re.fullmatch(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}", value):
        raise ValueError(f"{value!r}: write a host variable copy as ${{NAME}}")
    if value.startswith("?") and not value[1:].strip():
        raise ValueError("a '?' value must carry the question to ask, e.g. '?Your name'")
    return value


EnvValue = Annotated[str, AfterValidator(_check_env_value)]


class Limits(Strict):
    """Resource ceilings of the containers (compose ``pids_limit`` / ``mem_limit``)."""

    agent_pids: int = Field(512, ge=16, le=1_000_000, description="processes in the agent")
    agent_memory: str = Field(
        "2g", pattern=r"^[1-9][0-9]*[kmg]$", description="agent memory, e.g. 2g"
    )
    sidecar_pids: int = Field(128, ge=16, le=1_000_000, description="processes per sidecar")
    sidecar_memory: str = Field(
        "512m", pattern=r"^[1-9][0-9]*[kmg]$", description="memory per sidecar, e.g. 512m"
    )


class BottleSpec(Strict):
    """A bottle: the policy an agent runs under. Only the user's home may define one.

    These are the fields every bottle has; each sidecar adds its own section (``egress:``,
    ``git:``, ``supervise:``) to the model :func:`bottle_file_model` composes from the
    registry (``bottle.manifest.bottlefile``). Read a section with :meth:`section`.
    """

    description: str = ""
    extends: tuple[Name, ...] = ()
    agent: AgentProvider | None = None
    env: dict[EnvName, EnvValue] = Field(default_factory=dict)
    limits: Limits | None = None

    @field_validator("extends", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value

    def section(self, key: str) -> Any:
        """The (validated) section a sidecar owns; its default when the file has none."""
        return getattr(self, key)


class AgentOverride(Strict):
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


class AgentSpec(Strict):
    """An agent: a system prompt plus which bottle it runs in."""

    bottle: Name = "default"
    skills: tuple[Name, ...] = ()
    provider: AgentOverride | None = None
    description: str = ""

    @field_validator("provider", mode="before")
    @classmethod
    def _bare_kind(cls, value: object) -> object:
        return {"provider": value} if isinstance(value, str) else value
