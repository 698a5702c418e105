"""Reading bottle and agent files: front matter, trust boundary, ``extends``.

Where definitions come from, in order of trust:

* ``$BOTTLE_HOME/bottles/<name>.md``  bottles (only here: a bottle is policy)
* ``$BOTTLE_HOME/agents/<name>.md``   agents
* ``./.bottle/agents/<name>.md``      agents of the repository you run in; they may not
  widen anything, so they can name a bottle but never carry routes, env, remotes or a
  Dockerfile. A name that exists in the home or built in is never replaced by the
  repository's file (ignored, with a warning), and a repository agent starts only once
  the user trusted its exact content (``bottle trust PATH``, see ``bottle.trust``).
* built-in ``default`` bottle and ``shell`` agent, used when no file has that name.
"""

from __future__ import annotations

import io
import operator
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from bottle import boundedyaml
from bottle.boundedyaml import MAX_DEPTH
from bottle.errors import ManifestError
from bottle.manifest.bottlefile import bottle_file_model
from bottle.manifest.builtin import BUILTIN_AGENTS, builtin_bottles
from bottle.manifest.models import (
    CLAUDE_SUBAGENT_KEYS,
    AgentSpec,
    BottleSpec,
    check_name,
)
from bottle.sidecars import registry
from bottle.trust import MAX_AGENT_BYTES, TrustState, read_agent_file, refusal, state_of

#: Bounds on a bottle or agent file: a real one is a few KiB, a few levels deep, with few
#: aliases (``MAX_DEPTH``, ``MAX_ALIASED_NODES``). Past them the file is refused before it is
#: read whole or built.
MAX_FILE_BYTES = MAX_AGENT_BYTES

Origin = Literal["home", "repo", "builtin"]
#: Keys only a bottle may set, beside every sidecar's section.
_BOTTLE_ONLY = ("env", "agent", "extends", "dockerfile")


def _repo_forbidden() -> tuple[str, ...]:
    return (*(s.section for s in registry()), *_BOTTLE_ONLY)


@dataclass(frozen=True)
class BottleSource:
    name: str
    spec: BottleSpec
    path: Path | None
    body: str = ""

    @property
    def origin(self) -> Origin:
        return "builtin" if self.path is None else "home"


@dataclass(frozen=True)
class AgentSource:
    name: str
    spec: AgentSpec
    path: Path | None
    origin: Origin
    body: str = ""
    trust: TrustState | None = None  # repository agents only: see bottle.trust


@dataclass(frozen=True)
class Manifest:
    """Every bottle and agent visible from one working directory."""

    bottles: dict[str, BottleSource]
    agents: dict[str, AgentSource]
    warnings: tuple[str, ...] = ()
    skills_dirs: tuple[Path, ...] = field(default=())
    #: Files that did not load, by name: using one raises its error, nothing else does.
    broken_bottles: dict[str, ManifestError] = field(default_factory=dict)
    broken_agents: dict[str, ManifestError] = field(default_factory=dict)
    home: Path = Path("~/.bottle")  # named in hints: where the user's own files go

    def agent(self, name: str) -> AgentSource:
        """The agent to start; a repository agent only if the user trusted its content."""
        if name in self.broken_agents:
            raise self.broken_agents[name]
        try:
            source = self.agents[name]
            if source.origin == "repo" and source.trust != "trusted" and source.path:
                raise refusal(source.path, source.trust or "untrusted")
            return source
        except KeyError:
            known = ", ".join(sorted(self.agents)) or "none"
            raise ManifestError(
                f"unknown agent {name!r}",
                hint=f"Known agents: {known}. Define it in {self.home / 'agents' / name}.md "
                f"or ./.bottle/agents/{name}.md.",
            ) from None

    def resolve_bottle(self, name: str) -> BottleSpec:
        """The bottle with every ``extends`` parent merged in (child wins)."""
        return _resolve(self, name, ())

    def check(self) -> None:
        """Raise the first broken file's error (a strict load)."""
        for error in (*self.broken_bottles.values(), *self.broken_agents.values()):
            raise error


def split_front_matter(text: str, path: Path) -> tuple[dict[str, Any], str]:
    """Front matter as a mapping, and the Markdown body after it."""
    if not text.startswith("---"):
        return {}, text
    lines = text.splitlines(keepends=True)
    stripped = map(str.rstrip, lines)
    if next(stripped) != "---":
        return {}, text
    try:
        # The closing line is looked for in C, up to where it is: a file of 1 MiB in
        # short lines (350,000 of them) took a Python loop 23 ms, this takes 11.
        index = operator.indexOf(stripped, "---") + 1
    except ValueError:
        raise ManifestError(
            "front matter starts with '---' but never ends",
            path=path,
            hint="Close the YAML front matter with a line holding only '---'.",
        ) from None
    head = "".join(lines[1:index])
    body = "".join(lines[index + 1 :])
    try:
        data = boundedyaml.load(head)
    except boundedyaml.MaxDepthExceededError:
        raise ManifestError(
            f"the front matter nests deeper than {MAX_DEPTH} levels",
            path=path,
            hint="Flatten it: no bottle or agent field nests that deep.",
        ) from None
    except boundedyaml.AliasBomb as exc:
        raise ManifestError(
            str(exc.problem), path=path, hint="Write the values out instead of using aliases."
        ) from None
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f" (line {mark.line + 2}, column {mark.column + 1})" if mark else ""
        raise ManifestError(
            f"bad YAML{where}: {exc.problem or exc.context}",
            path=path,
            hint="Fix the YAML syntax in the front matter between the two '---' lines.",
        ) from None
    except YAMLError as exc:
        raise ManifestError(f"bad YAML: {exc}", path=path, hint="Fix the front matter.") from None
    if data is None:
        return {}, body
    if not isinstance(data, dict):
        raise ManifestError(
            f"front matter must be a mapping of keys, not a {type(data).__name__}",
            path=path,
            hint="Write 'key: value' lines between the '---' lines.",
        )
    return data, body


def validate(model: type[BaseModel], data: dict[str, Any], path: Path | None) -> Any:
    """``model(**data)``, every error of the file in one ManifestError naming each field."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
    problems = [_problem(model, error) for error in errors]
    field, message, hint = problems[0]
    if len(problems) > 1:
        # One hint cannot fit every line: an unknown key's line carries its own.
        problems = [
            (f, f"{m}; {h[:1].lower()}{h[1:]}" if m == "unknown key" else m, h)
            for f, m, h in problems
        ]
        hint = "Fix each field as its line says; docs/manifest.md lists every field."
    raise ManifestError(
        message,
        path=path,
        field=field,
        hint=hint,
        problems=[(f, m) for f, m, _ in problems],
    )


def _problem(model: type[BaseModel], error: Any) -> tuple[str | None, str, str]:
    """One pydantic error as (field path, message, hint)."""
    loc = ".".join(str(part) for part in error["loc"] if part != "[key]")
    if error["type"] == "extra_forbidden":
        allowed = ", ".join(sorted(_fields_at(model, error["loc"][:-1])))
        return (
            loc,
            "unknown key",
            f"Remove it or fix its spelling; allowed keys here: {allowed}.",
        )
    message = str(error["msg"]).removeprefix("Value error, ")
    return loc or None, message, _hint_for(error["type"], loc)


def _fields_at(model: type[BaseModel], loc: Iterable[Any]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        info = current.model_fields.get(str(part))
        if info is None:
            return []
        current = _model_in(info.annotation)
    return list(current.model_fields) if current is not None else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _hint_for(kind: str, loc: str) -> str:
    if kind.endswith("_type") or kind.startswith("literal"):
        return f"Give {loc or 'the value'} a value of the type shown in docs/manifest.md."
    return f"Fix {loc or 'the file'} as the message says; docs/manifest.md lists every field."


def _name_from(path: Path) -> str:
    try:
        return check_name(path.stem)
    except ValueError as exc:
        raise ManifestError(
            str(exc), path=path, hint="Rename the file; its name (without .md) is the name."
        ) from None


def _read_repo(path: Path, home: Path) -> tuple[dict[str, Any], str, TrustState]:
    """A repository agent file: read once (no link, FIFO or device), parsed and trust-checked."""
    try:
        raw = read_agent_file(path)
        text = io.StringIO(raw.decode("utf-8"), newline=None).read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read: {exc}", path=path, hint="Check the file.") from None
    return (*split_front_matter(text, path), state_of(home, path, raw))


def _read(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = io.StringIO(_read_bounded(path).decode("utf-8"), newline=None).read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read: {exc}", path=path, hint="Check the file.") from None
    return split_front_matter(text, path)


def _read_bounded(path: Path) -> bytes:
    """A file of your home, links followed; a FIFO, device or huge file is refused, not read."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise OSError(f"{path} is not a regular file")
    # O_NONBLOCK: a FIFO swapped in after the stat must not hang the open.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        data = handle.read(MAX_FILE_BYTES + 1)
    if info.st_size > MAX_FILE_BYTES or len(data) > MAX_FILE_BYTES:
        raise OSError(
            f"larger than {MAX_FILE_BYTES >> 20} MiB; a bottle or agent file is far smaller"
        )
    return data


def _agent_data(data: dict[str, Any], path: Path, origin: Origin, home: Path) -> dict[str, Any]:
    if origin == "repo":
        for key in _repo_forbidden():
            if key in data:
                raise ManifestError(
                    "a repository's agent may not set this: only your own bottles may "
                    "widen egress, add credentials, env, remotes or images",
                    path=path,
                    field=key,
                    hint=f"Remove '{key}' here and put it in a bottle under "
                    f"{home / 'bottles'}/, then name that bottle with 'bottle:'.",
                )
    ignored = CLAUDE_SUBAGENT_KEYS - {"description"}
    return {k: v for k, v in data.items() if k not in ignored}


def _md_files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix == ".md" and p.is_file())


def load_manifest(*, home: Path, cwd: Path, strict: bool = True) -> Manifest:
    """Every bottle and agent visible from ``cwd``, validated.

    ``strict``: the first bad file raises its ManifestError. Otherwise a bad file is kept
    in ``broken_bottles``/``broken_agents`` with its error, and breaks only what uses it.
    """
    repo_dir = cwd / ".bottle"
    warnings: list[str] = []
    repo_bottles = repo_dir / "bottles"
    if repo_bottles.is_dir() and any(repo_bottles.iterdir()):
        error = ManifestError(
            "a repository may define agents, never bottles",
            path=repo_bottles,
            hint=f"Move these files to {home / 'bottles'}/ if you trust them, "
            "or delete the folder.",
        )
        if strict:
            raise error
        warnings.append(f"{error.message}: ignored")
    bottles: dict[str, BottleSource] = {
        name: BottleSource(name, spec, None) for name, spec in builtin_bottles().items()
    }
    broken_bottles: dict[str, ManifestError] = {}
    for path in _md_files(home / "bottles"):
        try:
            name = _name_from(path)
            data, body = _read(path)
            bottles[name] = BottleSource(
                name, validate(bottle_file_model(), data, path), path, body
            )
        except ManifestError as exc:
            if strict:
                raise
            # A broken file of a built-in's name must not fall back to the built-in.
            bottles.pop(path.stem, None)
            broken_bottles[path.stem] = exc

    agents: dict[str, AgentSource] = {
        name: AgentSource(name, spec, None, "builtin", body)
        for name, (spec, body) in BUILTIN_AGENTS.items()
    }
    broken_agents: dict[str, ManifestError] = {}
    for origin, directory in (("home", home / "agents"), ("repo", repo_dir / "agents")):
        for path in _md_files(directory):
            try:
                found = _agent(path, origin, home, agents, warnings)  # type: ignore[arg-type]
            except ManifestError as exc:
                if strict:
                    raise
                if origin == "home":
                    agents.pop(path.stem, None)
                if path.stem not in agents:
                    broken_agents[path.stem] = exc
                continue
            if found is not None:
                agents[found.name] = found

    for agent in list(agents.values()):
        if agent.spec.bottle not in bottles and agent.spec.bottle not in broken_bottles:
            error = ManifestError(
                f"names bottle {agent.spec.bottle!r}, which does not exist",
                path=agent.path,
                field="bottle",
                hint=f"Create {home / 'bottles' / agent.spec.bottle}.md or name one of: "
                f"{', '.join(sorted(bottles))}.",
            )
            if strict:
                raise error
            del agents[agent.name]
            broken_agents[agent.name] = error
    skills = (home / "skills", repo_dir / "skills")
    return Manifest(bottles, agents, tuple(warnings), skills, broken_bottles, broken_agents, home)


def _agent(
    path: Path,
    origin: Origin,
    home: Path,
    agents: dict[str, AgentSource],
    warnings: list[str],
) -> AgentSource | None:
    """One agent file; None when a repository file would shadow an agent (a warning)."""
    name = _name_from(path)
    if origin == "repo" and name in agents:
        # Never shadowed, built-in ones neither: `bottle start shell` must stay shell.
        shadowed = agents[name]
        wins = "your home wins" if shadowed.origin == "home" else "the built-in wins"
        warnings.append(
            f"agent {name!r} is defined in {path}, which is ignored: using "
            f"{shadowed.path or 'the built-in one'} ({wins}; a repository never "
            "replaces your or bottle's agents)"
        )
        return None
    trust_state: TrustState | None = None
    if origin == "repo":
        data, body, trust_state = _read_repo(path, home)
    else:
        data, body = _read(path)
    spec = validate(AgentSpec, _agent_data(data, path, origin, home), path)
    return AgentSource(name, spec, path, origin, body, trust_state)


def _resolve(manifest: Manifest, name: str, chain: tuple[str, ...]) -> BottleSpec:
    if name in chain:
        loop = " -> ".join((*chain, name))
        source = manifest.bottles[chain[-1]]
        raise ManifestError(
            f"extends forms a cycle: {loop}",
            path=source.path,
            field="extends",
            hint="Remove one of the extends links so the chain ends.",
        )
    if name in manifest.broken_bottles:
        raise manifest.broken_bottles[name]
    if name not in manifest.bottles:
        if not chain:
            raise ManifestError(
                f"unknown bottle {name!r}",
                hint=f"Known bottles: {', '.join(sorted(manifest.bottles))}. "
                f"Create {manifest.home / 'bottles' / name}.md to define it.",
            )
        child = manifest.bottles[chain[-1]]
        raise ManifestError(
            f"extends missing bottle {name!r} (chain: {' -> '.join((*chain, name))})",
            path=child.path,
            field="extends",
            hint=f"Create {manifest.home / 'bottles' / name}.md or fix the name.",
        )
    spec = manifest.bottles[name].spec
    merged: BottleSpec | None = None
    for parent in spec.extends:
        resolved = _resolve(manifest, parent, (*chain, name))
        merged = resolved if merged is None else merge(merged, resolved)
    return spec if merged is None else merge(merged, spec)


def merge(base: BottleSpec, child: BottleSpec) -> BottleSpec:
    """``child`` over ``base``: maps merge, child scalars win, each sidecar merges its section."""
    sections = {
        s.section: s.merge(base.section(s.section), child.section(s.section)) for s in registry()
    }
    return bottle_file_model()(
        description=child.description or base.description,
        extends=(),
        agent=child.agent or base.agent,
        env={**base.env, **child.env},
        limits=child.limits or base.limits,
        **sections,
    )
