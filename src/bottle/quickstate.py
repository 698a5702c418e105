"""What the quick commands read of a state directory, with no model library loaded.

``bottle exec`` and ``bottle ls`` answer on every keystroke of a script: the slug rule, the
statuses and a first look at ``metadata.json`` live here, so they cost a file read, not
pydantic's import. ``bottle.state`` builds on these (its ``Metadata`` validates the file
whole); anything this look does not understand is left to it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from bottle import layout
from bottle.errors import SlugError


class InstanceStatus(StrEnum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FINISHED = "finished"  # the agent exited cleanly; everything was taken down
    PRESERVED = "preserved"  # interrupted (crash, Ctrl-C, kill): containers may remain
    FAILED = "failed"  # start failed; what was started was taken down
    STOPPED = "stopped"  # stopped by the operator


#: Statuses in which no container of the instance should exist.
DOWN = frozenset({InstanceStatus.FINISHED, InstanceStatus.FAILED, InstanceStatus.STOPPED})

#: A slug is ``<agent name>-<5 base36>``: agent names are 1-40 of ``[a-z0-9_-]``. Anything
#: else given as a slug never names an instance, and may name a path outside the state root.
_SLUG_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,45}")


def is_slug(value: str) -> bool:
    return _SLUG_RE.fullmatch(value) is not None


def check_slug(value: str) -> str:
    """``value`` if it can be a slug or a prefix of one; ``SlugError`` (exit 2) if not.

    Every place that takes a slug from outside (CLI arguments, ``Instance.open``, prefix
    lookups, compose project names) goes through here before it becomes a path.
    """
    if not is_slug(value):
        shown = value if len(value) <= 60 else value[:60] + "..."
        raise SlugError(
            f"{shown!r} is not an instance slug",
            hint="A slug is up to 46 lowercase letters, digits, '-' or '_' (like "
            "'shell-k3x9q'); list instances with 'bottle ls'.",
        )
    return value


@dataclass(frozen=True)
class Glance:
    """The fields of ``metadata.json`` that ``exec`` needs, as found there."""

    path: Path  # the state directory
    status: InstanceStatus
    compose_project: str


def glance(state_root: Path, slug: str) -> Glance | None:
    """The instance ``slug`` (or a unique prefix of one) names, if its metadata reads plainly.

    ``None`` whenever the full path must decide: not a slug, no such instance, several
    matches, a file that does not read or does not hold these fields as their types. The
    full path then says what is wrong, in its own words.
    """
    if not is_slug(slug):
        return None
    path = state_root / slug
    if not (path / layout.METADATA).is_file():
        try:
            matches = [
                p
                for p in state_root.iterdir()
                if p.name.startswith(slug) and (p / layout.METADATA).is_file()
            ]
        except OSError:
            return None
        if len(matches) != 1:
            return None
        path = matches[0]
    try:
        data = json.loads((path / layout.METADATA).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    status, project = data.get("status"), data.get("compose_project")
    if status not in _STATUSES or not isinstance(project, str) or not project:
        return None
    return Glance(path=path, status=InstanceStatus(status), compose_project=project)


_STATUSES = frozenset(s.value for s in InstanceStatus)
