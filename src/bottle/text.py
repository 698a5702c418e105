"""Text the agent or an upstream controls, made safe to show on a terminal.

An escape sequence in a proposal can repaint the operator's screen (show one Dockerfile,
build another), an unterminated OSC can swallow what follows, a bidi override can reverse
what a line seems to say. :func:`inert` turns every such character into a visible escape
(``\\x1b``, ``\\u202e``) so it is shown, never interpreted. Printable text, including
backslashes, is left as it is: a Dockerfile's line continuations still read as written.
"""

from __future__ import annotations

import unicodedata

#: Unicode categories that are never shown as themselves: controls, format characters
#: (bidi overrides, zero-width joiners), line/paragraph separators, lone surrogates.
_HIDDEN = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _visible(char: str) -> str:
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def inert(text: str, *, multiline: bool = False) -> str:
    """``text`` with every control and invisible format character written out.

    ``multiline`` keeps newlines (and tabs) as they are, for a Dockerfile or a log body;
    otherwise a newline is shown as ``\\n`` too, so one field stays on one line.
    """
    keep = {"\n", "\t"} if multiline else {"\t"}
    if text.isprintable() and not (set(text) & {"\u2028", "\u2029"}):
        return text
    return "".join(
        char if char in keep or unicodedata.category(char) not in _HIDDEN else _visible(char)
        for char in text
    )


def numbered(text: str) -> str:
    """``text`` made inert, one numbered line per line, as the operator confirms it."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    width = len(str(len(lines)))
    return "\n".join(f"{n:>{width}} | {inert(line)}" for n, line in enumerate(lines, 1))
