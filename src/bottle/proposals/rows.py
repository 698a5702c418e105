"""A pending proposal as ``bottle queue`` shows it, read without the models.

Pure (the standard library alone): the queue answers in a blink, and the models (pydantic,
the Dockerfile parser) would be most of its time. This is a *view*, not a check: it reads
the shape it shows (and refuses anything else, as a problem), while ``bottle approve``
reads the same file through :class:`~bottle.proposals.queue.ProposalQueue`, with every
check, before anything is applied. :func:`summary` says what the models' ``summary()``
says (a unit test holds them together).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bottle import safefs

#: The most a proposal file may weigh (16 x the 64 KiB payload bound): its fields are
#: bounded well below (JSON escapes may multiply a payload by six), so anything bigger
#: was not written by ``ProposalQueue.create``.
MAX_FILE_BYTES = 16 * 64 * 1024
_TOOLS = ("egress-block", "pipelock-block", "capability-block", "git-push-allow")


@dataclass(frozen=True)
class Row:
    """One pending proposal: what the table shows, and the file's content for ``--json``."""

    id: int
    tool: str
    what: str
    justification: str
    data: dict[str, Any]


def load_file(path: Path) -> Any:
    """The JSON of a proposal file; ``OSError`` or ``ValueError`` when it cannot be read."""
    raw = safefs.read_regular(path, max_bytes=MAX_FILE_BYTES)
    try:
        return json.loads(raw.decode("utf-8"))
    except RecursionError:
        # "[[[[…" past the parser's stack: a bad file like any other, never a crash that
        # hides the rest of the queue.
        raise ValueError("nested deeper than any proposal is") from None


def read_row(path: Path, expected_id: int) -> Row | None:
    """The pending proposal in ``path``; ``None`` if it is decided; ``ValueError`` if bad."""
    data = load_file(path)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    if data.get("id") != expected_id:
        raise ValueError(f"the file says id {data.get('id')!r}")
    status = data.get("status")
    if status in ("approved", "rejected"):
        return None
    if status != "pending" or data.get("decision") is not None:
        raise ValueError("status is not pending, approved or rejected")
    tool, payload, justification = data.get("tool"), data.get("payload"), data.get("justification")
    if tool not in _TOOLS:
        raise ValueError(f"unknown tool {tool!r}")
    if not isinstance(payload, dict) or payload.get("tool", tool) != tool:
        raise ValueError(f"the payload is not a {tool} request")
    if not isinstance(justification, str) or not justification:
        raise ValueError("the justification is not text")
    return Row(expected_id, tool, summary(tool, payload), justification, data)


def summary(tool: str, payload: dict[str, Any]) -> str:
    """A one-line summary of a request; ``ValueError`` when its fields have the wrong shape."""
    if tool == "capability-block":
        dockerfile = _text(payload, "dockerfile")
        return f"a Dockerfile of {len(dockerfile.splitlines())} line(s) on the agent image"
    if tool == "git-push-allow":
        remote, ref, commit = (_text(payload, k) for k in ("remote", "ref", "commit"))
        return f"push {commit[:12]} to {remote} {ref} despite the secret scan"
    host = _text(payload, "host")
    if tool == "pipelock-block":
        if urlsplit(_text(payload, "url")).hostname != host.lower():
            raise ValueError("the host is not the url's host")
        return f"{host} (any method; any path)"
    paths, methods = _texts(payload, "paths"), _texts(payload, "methods")
    shown_paths = ", ".join(paths) if paths else "any path"
    shown_methods = ", ".join(methods) if methods else "any method"
    scheme, port = payload.get("scheme", "https"), payload.get("port")
    if scheme not in {"https", "http"} or not (port is None or type(port) is int):
        raise ValueError("payload.scheme or payload.port has the wrong shape")
    return f"{host} ({shown_methods}; {shown_paths}){wire_note(scheme, port)}"


def wire_note(scheme: str, port: int | None) -> str:
    """What an egress-block asks for on the wire, when it is not https to 443: shown to the
    operator next to the host, so plain HTTP or another port is never approved unseen."""
    default = 80 if scheme == "http" else 443
    if scheme == "http":
        return f" [plain HTTP, unencrypted, port {port or default}]"
    if port is not None and port != default:
        return f" [https, port {port}]"
    return ""


def _text(payload: dict[str, Any], key: str) -> str:
    value = payload.get(key)
    if not isinstance(value, str) or not value:
        raise ValueError(f"payload.{key} is not text")
    return value


def _texts(payload: dict[str, Any], key: str) -> list[str]:
    value = payload.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"payload.{key} is not a list of text")
    return value
