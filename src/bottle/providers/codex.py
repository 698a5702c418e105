"""``provider: codex``: the Codex CLI, its home (its session files) in the transcript.

``CODEX_HOME`` is ``transcript/codex``: Codex keeps its rollouts (``sessions/…/*.jsonl``)
there, so the conversation outlives the container. Before the first start bottle seeds it
(``seed_files``) with a ``config.toml`` that makes a new instance go straight to work: no
approvals or sandbox of Codex's own (the bottle is the sandbox), /workspace trusted, the
sidecars' MCP servers, no update check, analytics or feedback upload, the Responses API
over HTTPS (no WebSocket attempt first); the agent file's body
as ``AGENTS.md`` (Codex's global instructions, added to its own); and an ``auth.json`` of
placeholders when a route injects the real credential: an API key's, or a ChatGPT login's
(``scheme: chatgpt``, :mod:`bottle.chatgpt_login`), which also points the provider at
ChatGPT's Codex backend.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from bottle import chatgpt_login, layout
from bottle.policy import PLACEHOLDER, Routes
from bottle.providers.base import TRANSCRIPT, Output

if TYPE_CHECKING:
    from bottle.plan import BottlePlan

CODEX_HOME = TRANSCRIPT / "codex"
#: Where Codex finds a user's skills (``$HOME/.agents/skills/<name>/SKILL.md``).
SKILLS = PurePosixPath("/home/agent/.agents/skills")
#: The API Codex uses with an API key; the route that injects ``OPENAI_API_KEY`` names it.
API_HOST = "api.openai.com"

# What egress puts in place of a credential the agent must not hold (bottle.sidecars.egress).
#: The OpenAI provider over HTTPS only. Built-in providers cannot be changed in config.toml
#: and the built-in one opens the Responses API as a WebSocket first: where that upgrade
#: fails it retries with backoff for about 7 s per session before it falls back to POST.
#: Named "OpenAI", Codex treats it as the OpenAI provider in every other respect.
PROVIDER_ID = "openai-https"
#: Where Codex sends the Responses API with a ChatGPT login (its built-in default then).
CHATGPT_BASE_URL = f"https://{chatgpt_login.CHATGPT_HOST}/backend-api/codex"
#: With a ChatGPT login Codex also lists plugins and apps (connectors) on chatgpt.com at every
#: start: requests the bottle does not route, so refusals in every decision log.
_CHATGPT_FEATURES = {"plugins": False, "apps": False}

_SETTINGS = {
    # The bottle is the sandbox: Codex's own (landlock/seccomp) cannot run unprivileged here.
    "approval_policy": "never",
    "sandbox_mode": "danger-full-access",
    "check_for_update_on_startup": False,
    # The keyring is not reachable in a container; the placeholder auth.json must be read.
    "cli_auth_credentials_store": "file",
    "model_provider": PROVIDER_ID,
}
_TABLES: dict[str, dict[str, Any]] = {
    "analytics": {"enabled": False},
    "feedback": {"enabled": False},
    "otel": {"exporter": "none"},
    "notice": {"hide_full_access_warning": True},
    # With an API key Codex still asks chatgpt.com for its model list: a refusal on every
    # start; the built-in list serves.
    "features": {"api_key_model_discovery": False},
    "projects." + json.dumps(str(layout.WORKSPACE)): {"trust_level": "trusted"},
    f"model_providers.{PROVIDER_ID}": {
        "name": "OpenAI",
        "base_url": f"https://{API_HOST}/v1",
        "wire_api": "responses",
        # auth.json (the placeholder), as for the built-in provider.
        "requires_openai_auth": True,
        "supports_websockets": False,
    },
}


@dataclass(frozen=True)
class Codex:
    kind: Literal["codex"] = "codex"

    def env(self, plan: BottlePlan) -> dict[str, str]:
        return {"CODEX_HOME": str(CODEX_HOME)}

    def skills_target(self, plan: BottlePlan) -> PurePosixPath:
        return SKILLS

    def seed_files(self, plan: BottlePlan) -> dict[str, bytes]:
        home = CODEX_HOME.relative_to(TRANSCRIPT)
        chatgpt = _logs_in_to_chatgpt(plan)
        files = {
            f"{home}/config.toml": config_toml(_mcp_servers(plan), chatgpt=chatgpt).encode(),
            f"{home}/AGENTS.md": (plan.system_prompt + "\n").encode(),
        }
        auth: dict[str, Any] | None = None
        if chatgpt:
            auth = chatgpt_login.placeholder_auth()
        elif API_HOST in _credentialed_hosts(plan):
            auth = {"auth_mode": "apikey", "OPENAI_API_KEY": PLACEHOLDER}
        if auth is not None:
            files[f"{home}/auth.json"] = json.dumps(auth, indent=2).encode() + b"\n"
        return files

    def interactive_command(self, args: Sequence[str], *, resume: bool = False) -> list[str]:
        # A headless run's session counts as the last one too: resume it interactively.
        head = ["codex", "resume", "--last", "--include-non-interactive"] if resume else ["codex"]
        return [*head, "--dangerously-bypass-approvals-and-sandbox", *args]

    def user_command(self, argv: Sequence[str]) -> list[str]:
        # Codex reads its wiring from CODEX_HOME: `codex …` as given has all of it.
        return list(argv)

    def headless_command(
        self, prompt: str, *, output: Output = "text", resume: bool = False
    ) -> list[str]:
        head = ["codex", "exec", *(["resume", "--last"] if resume else [])]
        json_flag = [] if output == "text" else ["--json"]
        # "--" ends the options: a prompt starting with "-" is the prompt, not a flag.
        flags = ["--dangerously-bypass-approvals-and-sandbox", "--skip-git-repo-check"]
        return [*head, *flags, *json_flag, "--", prompt]


def config_toml(mcp_servers: Mapping[str, Mapping[str, Any]], *, chatgpt: bool = False) -> str:
    """Codex's ``config.toml``: bottle's settings and one table per MCP server; ``chatgpt``:
    for a ChatGPT login (the Codex backend on chatgpt.com, its plugin and app lists off)."""
    lines = ["# Written by bottle before the first start; Codex may add to it.", ""]
    lines += [f"{key} = {_value(value)}" for key, value in _SETTINGS.items()]
    tables = dict(_TABLES)
    if chatgpt:
        provider = f"model_providers.{PROVIDER_ID}"
        tables[provider] = {**tables[provider], "base_url": CHATGPT_BASE_URL}
        tables["features"] = {**tables["features"], **_CHATGPT_FEATURES}
    for name, server in mcp_servers.items():
        tables[f"mcp_servers.{_key(name)}"] = _mcp_server(server)
    for header, body in tables.items():
        lines += ["", f"[{header}]", *(f"{_key(k)} = {_value(v)}" for k, v in body.items())]
    return "\n".join(lines) + "\n"


def _mcp_server(server: Mapping[str, Any]) -> dict[str, Any]:
    """A sidecar's MCP entry (Claude Code's mcp.json form) as Codex's table."""
    if "url" in server:  # Codex speaks streamable HTTP to a url of its own accord
        return {"url": server["url"]}
    return {k: server[k] for k in ("command", "args", "env") if k in server}


def _mcp_servers(plan: BottlePlan) -> dict[str, Mapping[str, Any]]:
    """What the sidecars register for the agent (the entries of compose's mcp.json)."""
    from bottle.sidecars import enabled_sidecars

    sidecars = enabled_sidecars(plan)
    direct = [s.name for s in sidecars if s.direct]
    servers: dict[str, Mapping[str, Any]] = {}
    for sidecar in sidecars:
        servers.update(sidecar.agent(plan.sidecars[sidecar.name], direct=direct).mcp_servers)
    return servers


def _routes(plan: BottlePlan) -> Routes | None:
    routes = getattr(plan.sidecars.get("egress"), "routes", None)
    return routes if isinstance(routes, Routes) else None


def _credentialed_hosts(plan: BottlePlan) -> set[str]:
    routes = _routes(plan)
    return {str(r.host) for r in routes.routes if r.auth is not None} if routes else set()


def _logs_in_to_chatgpt(plan: BottlePlan) -> bool:
    """The route for Codex's backend injects a ChatGPT login."""
    routes = _routes(plan)
    return routes is not None and any(
        r.auth is not None
        and r.auth.scheme == "chatgpt"
        and str(r.host) == chatgpt_login.CHATGPT_HOST
        for r in routes.routes
    )


def _key(name: str) -> str:
    """A bare TOML key when it is one, else a quoted one."""
    bare = name and all(c.isascii() and (c.isalnum() or c in "-_") for c in name)
    return name if bare else _string(name)


def _string(text: str) -> str:
    # JSON's escapes are TOML basic-string escapes; DEL and non-characters are escaped too,
    # and JSON never writes a surrogate pair when it may keep the character.
    out = json.dumps(text, ensure_ascii=False)
    return out.replace("\x7f", "\\u007f")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, Sequence):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


PROVIDER = Codex()
