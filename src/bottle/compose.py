"""``render(plan) -> dict``: the whole compose spec of one instance, and its stable YAML.

Pure: the agent service, each enabled sidecar's fragment, and the two networks. The agent
sits on ``internal`` alone (``internal: true``: no route out, no outside DNS), so a tool
that ignores the proxy fails closed.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, Literal

from ruamel.yaml import YAML
from ruamel.yaml.nodes import ScalarNode
from ruamel.yaml.resolver import VersionedResolver
from ruamel.yaml.tag import Tag

from bottle import hardening, layout, workspace
from bottle.chatgpt_login import CHATGPT_HOST
from bottle.plan import BottlePlan
from bottle.policy import Routes
from bottle.providers import provider as agent_provider
from bottle.sidecars import AgentAddon, enabled_sidecars
from bottle.sidecars._common import bind, escape, labels

#: The agent's home directory, a bind of ``state/<slug>/home/``.
AGENT_HOME = PurePosixPath("/home/agent")

#: The API each provider's program logs in to: a bottle must route it with a credential.
#: (Kept here, not in the providers: only the render notes need it.)
PROVIDER_API_HOSTS: Mapping[str, str] = {"claude": "api.anthropic.com", "codex": "api.openai.com"}


def render(plan: BottlePlan) -> dict[str, Any]:
    """The compose spec as plain data; same plan, same dict."""
    services: dict[str, Any] = {"agent": _agent_service(plan)}
    for sidecar in enabled_sidecars(plan):
        services[sidecar.name] = sidecar.compose_service(plan.sidecars[sidecar.name], plan)
    network_labels = labels(plan)
    networks: dict[str, dict[str, Any]] = {
        "internal": {
            "internal": True,
            "driver_opts": dict(hardening.INTERNAL_DRIVER_OPTS),
            "labels": network_labels,
        },
        "egress": {"labels": network_labels},
    }
    # Docker's default pools hold ~30 networks: each instance brings its own small subnets.
    for name, network in networks.items():
        if subnet := plan.subnets.get(name):
            network["ipam"] = {"config": [{"subnet": subnet}]}
    return {"name": plan.compose_project, "services": services, "networks": networks}


#: What a note means for its service: ``refused`` (start refuses, nothing comes up),
#: ``build`` (start builds its image first: minutes), ``ask`` (start asks on a terminal),
#: ``limited`` (it starts, but part of it cannot work).
NoteKind = Literal["refused", "build", "ask", "limited"]


@dataclass(frozen=True)
class Note:
    """Why one service of a rendered instance would not start (or not fully work) now."""

    service: str
    kind: NoteKind
    problem: str
    fix: str

    @property
    def starts(self) -> bool:
        return self.kind != "refused"


def notes(plan: BottlePlan, *, image_present: Callable[[str], bool] | None = None) -> list[Note]:
    """What would stop each service of ``plan`` from starting on this host as it is now.

    Pure but for ``image_present`` (the engine's look-up; None: images are not checked).
    A start checks the same things: a host variable the plan needs and this environment
    lacks, a sidecar this version cannot run, an agent that would run as root unasked.
    """
    found: list[Note] = []
    missing = set(plan.missing_env)
    sidecars = enabled_sidecars(plan)
    agent_vars = [e.value for e in plan.env if e.kind == "host" and e.value in missing]
    if agent_vars:
        found.append(_unset("agent", agent_vars, "its env names"))
    if plan.agent_is_root and not plan.root_allowed:
        found.append(
            Note(
                "agent",
                "refused",
                f"it would run as root (the workspace {plan.cwd} is root's)",
                f"chown the workspace to a user, or set 'agent: {{user: root}}' in the "
                f"bottle {plan.bottle!r}",
            )
        )
    for entry in plan.env:
        if entry.kind == "ask":
            found.append(
                Note(
                    "agent",
                    "ask",
                    f"{entry.name} is asked at start ({entry.value!r})",
                    "start it from a terminal",
                )
            )
    found += _provider_notes(plan, missing)
    for sidecar in sidecars:
        sub = plan.sidecars[sidecar.name]
        refusal = sidecar.unavailable()
        if refusal is not None:
            found.append(Note(sidecar.name, "refused", refusal.message, refusal.hint or ""))
        unset = [ref for ref in sidecar.secret_refs(sub) if ref in missing]
        if unset:
            found.append(_unset(sidecar.name, unset, "it holds"))
        found += [Note(sidecar.name, "limited", p, f) for p, f in sidecar.cautions(sub)]
    if image_present is not None:
        for spec in plan.images.specs:
            if image_present(spec.ref):
                continue
            users = [s.name for s in sidecars] if spec.ref == plan.images.sidecar else ["agent"]
            for service in users:
                found.append(
                    Note(
                        service,
                        "build",
                        f"its image {spec.ref} is not built yet",
                        "start builds it first, which can take minutes",
                    )
                )
    return found


def _credentials(plan: BottlePlan) -> dict[str, list[str]]:
    """Host -> the variables of its credentialed routes, from every sub-plan with routes."""
    found: dict[str, list[str]] = {}
    for sub in plan.sidecars.values():
        routes = getattr(sub, "routes", None)
        if isinstance(routes, Routes):
            for route in routes.routes:
                if route.auth is not None:
                    ref = route.auth.token_ref or route.auth.file_ref or ""
                    found.setdefault(str(route.host), []).append(ref)
    return found


def _unset(service: str, names: list[str], whose: str) -> Note:
    listed = ", ".join(names)
    return Note(
        service,
        "refused",
        f"host variable(s) {whose} not set: {listed}",
        f"export {names[0]}=... before starting (start refuses until then)",
    )


def _provider_notes(plan: BottlePlan, missing: set[str]) -> list[Note]:
    """The agent's program needs its API routed with a credential whose variable is set."""
    host = PROVIDER_API_HOSTS.get(plan.provider)
    if host is None:
        return []
    credentials = _credentials(plan)
    if plan.provider == "codex" and host not in credentials and CHATGPT_HOST in credentials:
        host = CHATGPT_HOST  # a ChatGPT login (scheme chatgpt) instead of an API key
    refs = list(dict.fromkeys(credentials.get(host, ())))
    if not refs:
        return [
            Note(
                "agent",
                "limited",
                f"no route gives {plan.provider} a credential for {host}: it cannot log in",
                f"route {host} with auth: {{..., token_ref: VAR}} (see the shipped "
                f"{plan.provider} bottle)",
            )
        ]
    unset = [ref for ref in refs if ref in missing]
    if unset:
        return [
            Note(
                "agent",
                "refused",
                f"{plan.provider}'s API key for {host} ({', '.join(unset)}) is not set",
                f"export {unset[0]}=... before starting",
            )
        ]
    return []


def agent_files(plan: BottlePlan) -> dict[str, bytes]:
    """Files for ``state/<slug>/agent/``, mounted read-only in the agent."""
    files = {"system-prompt.md": (plan.system_prompt + "\n").encode()}
    servers: dict[str, Any] = {}
    gitconfig = ""
    for addon in _addons(plan):
        servers.update(addon.mcp_servers)
        gitconfig += addon.gitconfig
    files["mcp.json"] = json.dumps({"mcpServers": servers}, indent=2).encode() + b"\n"
    files["gitconfig"] = gitconfig.encode()
    if plan.agent_command is not None:
        from bottle.providers.command import COMMAND_FILE, command_file

        files[COMMAND_FILE] = command_file(plan.agent_command)
    return files


def home_mount_points(plan: BottlePlan) -> list[PurePosixPath]:
    """Mount targets inside the agent's home, relative to it (its skills, for some providers).

    Made in ``state/<slug>/home/`` before the start: Docker would make them as root, and a
    root-owned directory there could not be removed by a non-root ``bottle cleanup``.
    """
    target = agent_provider(plan.provider).skills_target(plan)
    if not plan.skills or not target.is_relative_to(AGENT_HOME):
        return []
    base = target.relative_to(AGENT_HOME)
    return [base / name for name in sorted(plan.skills)]


def _addons(plan: BottlePlan) -> list[AgentAddon]:
    """What each enabled sidecar adds to the agent, in registry order."""
    sidecars = enabled_sidecars(plan)
    direct = [s.name for s in sidecars if s.direct]
    return [s.agent(plan.sidecars[s.name], direct=direct) for s in sidecars]


def _agent_service(plan: BottlePlan) -> dict[str, Any]:
    state = plan.state_dir
    provider = agent_provider(plan.provider)
    env: dict[str, str] = {
        "HOME": str(AGENT_HOME),
        "BOTTLE_SLUG": plan.slug,
        "BOTTLE_AGENT": plan.agent,
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "include.path",
        "GIT_CONFIG_VALUE_0": f"{layout.AGENT_CONFIG}/gitconfig",
    }
    for addon in _addons(plan):
        env.update(addon.env)
    env.update(provider.env(plan))
    env = {k: escape(v) for k, v in env.items()}
    for entry in plan.env:
        env[entry.name] = entry.compose_ref
    volumes = [
        bind(plan.cwd, layout.WORKSPACE),
        bind(state / "ca", layout.CA_PUBLIC, read_only=True),
        bind(state / "agent", layout.AGENT_CONFIG, read_only=True),
        bind(state / "transcript", layout.TRANSCRIPT),
        # Outlives the container: a capability swap or a resume keeps what the agent's
        # tools put in $HOME. The host never executes anything from it.
        bind(state / "home", AGENT_HOME),
    ]
    # Whatever git executes from (config, hooks, commondir, ...) would run on the host the
    # next time the user runs git: each git dir is ONE read-only mount point (bottle.workspace).
    placeholder = state / workspace.PLACEHOLDER_DIR
    for source, target in workspace.git_mounts(plan.cwd, placeholder):
        volumes.append(bind(source, target, read_only=True))
    for name, path in sorted(plan.skills.items()):
        volumes.append(bind(path, provider.skills_target(plan) / name, read_only=True))
    depends: dict[str, Any] = {
        s.name: {"condition": "service_started"} for s in enabled_sidecars(plan)
    }
    return {
        "image": plan.images.agent,
        "init": True,
        "command": ["sleep", "infinity"],
        "user": plan.user,
        "working_dir": str(layout.WORKSPACE),
        "environment": env,
        "volumes": volumes,
        "networks": ["internal"],
        "depends_on": depends,
        "labels": labels(plan, "agent"),
        "stop_grace_period": "3s",
        **hardening.agent_keys(plan),
    }


def _quote_ambiguous(representer: Any, value: str) -> Any:
    """Quote a string that a YAML 1.1 or 1.2 reader would take for another type.

    ``1:20`` is a number to a 1.1 reader (base 60), ``on`` a boolean, ``1e3`` a float: compose and
    other tools must see exactly the string we meant.
    """
    return representer.represent_scalar(_STR, value, style=_style(value))


@functools.lru_cache(maxsize=4096)
def _style(value: str) -> str | None:
    # Two resolvers a string took most of a dump's time, and a compose file repeats its
    # strings (keys, paths, labels) within itself and from one render to the next.
    for resolver in _RESOLVERS:
        if resolver.resolve(ScalarNode, value, (True, False)) != "tag:yaml.org,2002:str":
            return "'"
    if value == "" or value != value.strip():
        return "'"
    return None


_RESOLVERS = (VersionedResolver(version=(1, 1)), VersionedResolver(version=(1, 2)))
#: One tag for every string: a node made from the tag's name decodes it anew each time the
#: emitter asks (ruamel's ``Tag`` keeps what it decoded).
_STR = Tag(suffix="tag:yaml.org,2002:str")


def dump_yaml(spec: Mapping[str, Any]) -> str:
    """Stable YAML: same input, same bytes; strings YAML would misread are quoted. Written
    by ruamel's C emitter when it is installed (the same bytes as the pure one, 6x faster)."""
    yaml = YAML(typ="safe")
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    yaml.representer.add_representer(str, _quote_ambiguous)
    out = io.StringIO()
    yaml.dump(_plain(spec), out)
    return out.getvalue()


def _plain(value: Any) -> Any:
    """Copy into plain dicts/lists/str so the dumper never emits tags."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
