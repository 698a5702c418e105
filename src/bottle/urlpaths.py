"""Request paths as routes match them: normalised, and refused when servers may disagree.

A prefix rule is only as good as the agreement between egress and the upstream server on
what a path means. So before matching, a path is normalised the ways every server agrees on
(percent-encoded unreserved characters decoded, ``//`` collapsed, ``;`` parameters dropped
from each segment), and a path that servers read differently is refused outright: dot
segments (``/a/../b``, ``..;``, ``%2e%2e``), encoded slashes and backslashes, backslashes,
double encoding (``%252e``) and encoded NUL. Pure; runs in egress.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

_PERCENT_RE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DOUBLE_ENCODED_RE = re.compile(r"%25[0-9A-Fa-f]{2}")
_ENCODED_SEPARATOR_RE = re.compile(r"%(2f|5c|00)", re.IGNORECASE)


def bare(path: str) -> str:
    """The path without its query string."""
    return path.split("?", 1)[0]


def ambiguity(path: str) -> str | None:
    """Why servers may read ``path`` (query included or not) differently; None: they agree."""
    raw = bare(path)
    decoded = unquote(raw).replace("\\", "/")
    for segment in decoded.split("/"):
        if segment.split(";", 1)[0] in {".", ".."}:
            return (
                "the path has dot segments (/./ or /../, maybe %-encoded or with ;params "
                "like ..;); send the normalized path"
            )
    if _DOUBLE_ENCODED_RE.search(raw):
        return "the path is percent-encoded twice (like %252e); send it encoded once"
    if "\\" in raw:
        return "the path has a backslash, which some servers read as '/'; use '/'"
    found = _ENCODED_SEPARATOR_RE.search(raw)
    if found:
        return (
            f"the path has an encoded {found.group(0)!r} (slash, backslash or NUL), which "
            "servers decode differently; send the path without it"
        )
    return None


def normalise(path: str) -> str:
    """The path (no query) as matching sees it; call only on paths :func:`ambiguity` passed."""
    raw = _PERCENT_RE.sub(_decode_unreserved, bare(path))
    segments = [segment.split(";", 1)[0] for segment in raw.split("/")]
    out = "/".join(segments)
    while "//" in out:
        out = out.replace("//", "/")
    return out if out.startswith("/") else "/" + out


def prefix_matches(rule: str, path: str) -> bool:
    """``/repos`` matches ``/repos`` and ``/repos/x``, never ``/repository``."""
    if rule.endswith("/"):
        return path.startswith(rule)
    return path == rule or path.startswith(rule + "/")


def _decode_unreserved(found: re.Match[str]) -> str:
    char = chr(int(found.group(1), 16))
    return char if char in _UNRESERVED else found.group(0).upper()
