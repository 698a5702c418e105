"""Route regexes (path and header rules), run by RE2: linear time, bounded memory.

Python's ``re`` backtracks, so a rule like ``^/(a+)+$`` against a long path would hold
egress for minutes. RE2 has no backtracking (and so no backreferences or look-around); the
pattern's size and the text it is run on are capped as well. Pure; runs in the sidecars.
"""

from __future__ import annotations

import functools
from typing import Any

import re2

#: The longest rule accepted (characters) and the longest text a rule is run on (bytes of
#: the path or header value; longer text never matches, so a route with a regex refuses it).
MAX_PATTERN = 1024
MAX_TEXT = 8192
#: RE2's memory budget per compiled rule.
MAX_MEM = 1 << 20


def check(pattern: str, what: str = "regex") -> str:
    """``pattern`` if RE2 compiles it within the bounds; ``ValueError`` saying why not."""
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"the {what} is {len(pattern)} characters, more than {MAX_PATTERN}")
    try:
        _compiled(pattern)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise ValueError(
            f"bad {what} {pattern!r}: {reason} (RE2 syntax: no backreferences or look-around)"
        ) from None
    return pattern


def search(pattern: str, text: str) -> bool:
    return len(text.encode()) <= MAX_TEXT and _compiled(pattern).search(text) is not None


def fullmatch(pattern: str, text: str) -> bool:
    return len(text.encode()) <= MAX_TEXT and _compiled(pattern).fullmatch(text) is not None


@functools.lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    options = re2.Options()
    options.max_mem = MAX_MEM
    options.log_errors = False  # the error is raised to the caller, not printed by absl
    return re2.compile(pattern, options)
