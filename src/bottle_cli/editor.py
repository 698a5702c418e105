"""``$EDITOR`` round trips: a proposal's payload or the live routes, as YAML text.

click picks the editor (``$VISUAL``, then ``$EDITOR``, then a default) and runs it on a
temporary file. Multi-line strings (a Dockerfile) are written as YAML block scalars, so the
operator edits lines, not escapes.
"""

from __future__ import annotations

import io
from typing import Any

import click

from bottle.errors import ApplyError


def edit_text(text: str, *, extension: str) -> str | None:
    """``text`` after the operator saved it in their editor; ``None`` when they did not save.

    Quitting without saving (or an editor command that returns at once, like ``code``
    without ``--wait``) must never count as "approve as shown". A failing editor raises.
    """
    try:
        edited = click.edit(text, extension=extension, require_save=True)
    except click.ClickException as exc:
        raise ApplyError(
            f"the editor failed, so nothing changed ({exc.message})",
            hint="Make EDITOR (or VISUAL) a working editor command, e.g. EDITOR=nano.",
        ) from None
    return edited


def payload_yaml(header: str, payload: dict[str, Any]) -> str:
    """``payload`` as YAML under ``header`` (each line made a comment)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.scalarstring import LiteralScalarString

    def block(value: Any) -> Any:
        if isinstance(value, str) and "\n" in value:
            return LiteralScalarString(value)
        if isinstance(value, list):
            return [block(item) for item in value]
        return value

    yaml = YAML()
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump({key: block(value) for key, value in payload.items()}, out)
    comments = "".join(f"# {line}".rstrip() + "\n" for line in header.splitlines())
    return comments + out.getvalue()


def parse_payload(text: str) -> dict[str, Any] | None:
    """The mapping the operator saved; ``None`` for an empty file (which cancels)."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        data = YAML(typ="safe", pure=True).load(text)
    except YAMLError as exc:
        raise ApplyError(
            f"the edited proposal is not valid YAML: {_first_line(exc)}",
            hint="Nothing changed; run the command again and fix the YAML.",
        ) from None
    if data is None:
        return None
    if not isinstance(data, dict):
        raise ApplyError(
            "the edited proposal must be a mapping of fields (host:, paths:, …)",
            hint="Nothing changed; run the command again and keep the fields.",
        )
    return data


def _first_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
