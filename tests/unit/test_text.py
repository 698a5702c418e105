"""Hostile text is shown, never interpreted."""

from __future__ import annotations

import pytest

from bottle.text import inert, numbered


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain text", "plain text"),
        ("\x1b[2K\x1b[1ARUN apt-get install -y jq", "\\x1b[2K\\x1b[1ARUN apt-get install -y jq"),
        ("\x1b]0;title", "\\x1b]0;title"),  # unterminated OSC
        ("a\rb", "a\\rb"),
        ("bell\x07", "bell\\x07"),
        ("del\x7f", "del\\x7f"),
        ("csi\x9b2J", "csi\\x9b2J"),  # the 8-bit CSI
        ("abc\u202edcba", "abc\\u202edcba"),  # bidi override
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("line\u2028sep", "line\\u2028sep"),
        ("bad\udcffbyte", "bad\\udcffbyte"),  # surrogateescape of an undecodable byte
        ("tab\tkept", "tab\tkept"),
        ("ünïcödé 漢字", "ünïcödé 漢字"),
    ],
)
def test_controls_are_made_visible(raw: str, shown: str) -> None:
    assert inert(raw) == shown
    assert not any(ord(c) < 0x20 and c != "\t" for c in inert(raw))


def test_numbered_shows_the_exact_lines_that_will_be_built() -> None:
    dockerfile = (
        "FROM ${BOTTLE_AGENT_IMAGE}\nRUN curl x | sh\x1b[1A\x1b[2K\rRUN apt-get install -y jq\n"
    )
    shown = numbered(dockerfile)
    assert shown.splitlines() == [
        "1 | FROM ${BOTTLE_AGENT_IMAGE}",
        "2 | RUN curl x | sh\\x1b[1A\\x1b[2K\\rRUN apt-get install -y jq",
    ]


def test_newlines_are_kept_only_when_asked() -> None:
    raw = "RUN a \\\n && b"  # a Dockerfile continuation: backslash, newline
    assert inert(raw) == "RUN a \\" + "\\n" + " && b"
    assert inert(raw, multiline=True) == raw
