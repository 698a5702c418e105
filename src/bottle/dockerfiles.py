"""Reading Dockerfiles the agent or the user wrote: instructions, and the agent-image ARG.

Two kinds of Dockerfile build on an agent image: a bottle's own ``agent.dockerfile`` (the
user's) and a ``capability-block`` proposal (the agent's). Both name their base with the
one build argument :data:`AGENT_IMAGE_ARG`. Pure text handling: this module runs inside the
supervise sidecar too.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

#: The build argument that carries the image an agent Dockerfile builds on.
AGENT_IMAGE_ARG = "BOTTLE_AGENT_IMAGE"

DIRECTIVE_RE = re.compile(r"^#\s*([a-zA-Z]+)\s*=\s*(.*)$")
_CONTINUATION_RE = re.compile(r"\\[ \t]*$")
_ARG_DECL_RE = re.compile(rf"ARG\s+{AGENT_IMAGE_ARG}(=\S*)?", re.IGNORECASE)


def logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Dockerfile instructions with continuations joined, as (first line number, text)."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker skips blank and comment lines, inside a continuation too
        if not pending:
            start = number
        if _CONTINUATION_RE.search(raw):
            pending.append(_CONTINUATION_RE.sub("", raw))
            continue
        pending.append(raw)
        yield start, " ".join(part.strip() for part in pending)
        pending = []
    if pending:
        yield start, " ".join(part.strip() for part in pending)


def declares_agent_image_arg(text: str) -> bool:
    """Whether ``ARG BOTTLE_AGENT_IMAGE`` comes before the first FROM (so FROM can use it)."""
    for _number, line in logical_lines(text):
        if _ARG_DECL_RE.fullmatch(line.strip()):
            return True
        if line.split(None, 1)[0].upper() == "FROM":
            return False
    return False


def buildable_dockerfile(text: str) -> str:
    """``text`` with ``ARG BOTTLE_AGENT_IMAGE`` declared before its first FROM.

    People write ``FROM ${BOTTLE_AGENT_IMAGE}`` alone; a FROM can only use an ARG declared
    before it, so the declaration is added when the text lacks it: at the top, after any
    parser directives (which only count on the first lines).
    """
    if declares_agent_image_arg(text):
        return text
    lines = text.splitlines(keepends=True)
    head = 0
    while head < len(lines) and DIRECTIVE_RE.match(lines[head].strip()):
        head += 1
    return "".join([*lines[:head], f"ARG {AGENT_IMAGE_ARG}\n", *lines[head:]])
