"""Responses scrubbed of secrets: what egress holds never reaches the agent from upstream.

An upstream that echoes a request hands back the credential egress injected into it; one that
was handed a ``dlp_secrets`` value may show it. Every form :mod:`.dlp` looks for (plain, URL-,
base64-, hex-, base32-, JSON-encoded...) is replaced by :data:`MARKER` in header names and
values and in the body, which is streamed: each piece is scrubbed together with what was held
back of the one before (at most ``longest form - 1`` bytes: only an end that could begin a
form waits), so a secret split across pieces is still whole.
A compressed body is decoded (bounded steps, :mod:`.decoding`) and sent on as identity.
Pure bytes in, bytes out; no mitmproxy import.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import ahocorasick_rs

from bottle.runtime.egress import decoding
from bottle.runtime.egress.dlp import KnownSecret

#: What a secret is replaced with in a body or a header value.
MARKER = b"[bottle:scrubbed]"
#: A header whose *name* held a secret is renamed to this (a name needs token characters).
MARKER_HEADER = b"x-bottle-scrubbed"
#: A compressed response may decode to at most this much; the rest is cut, with a note.
MAX_RESPONSE_DECODED = 1 << 30
#: A small response (held whole) may decode to at most this much, or it is withheld.
MAX_SMALL_DECODED = 64 << 20


@dataclass(frozen=True)
class Needles:
    """Every form of every secret as bytes, found in one pass (Aho-Corasick, leftmost-longest:
    a whole encoding is replaced, not a piece of it). ``repr`` shows nothing of them."""

    items: tuple[tuple[str, bytes], ...] = field(repr=False)  # (secret name, needle)
    longest: int = 0
    prefixes: frozenset[bytes] = field(default=frozenset(), repr=False)  # proper, non-empty
    automaton: ahocorasick_rs.BytesAhoCorasick | None = field(default=None, repr=False)

    def __bool__(self) -> bool:
        return bool(self.items)

    def held(self, data: bytes) -> int:
        """How many bytes at the end of ``data`` could begin a needle: those wait for the next
        piece; the rest can go now (a stream of events is not held up by the overlap)."""
        for size in range(min(self.longest - 1, len(data)), 0, -1):
            if data[-size:] in self.prefixes:
                return size
        return 0


@functools.lru_cache(maxsize=8)
def needles(secrets: tuple[KnownSecret, ...]) -> Needles:
    """The needles of a route table's secrets (cached: the table changes only on reload)."""
    pairs = {
        needle.encode("utf-8"): secret.name for secret in secrets for _form, needle in secret.forms
    }
    items = tuple(sorted(((name, n) for n, name in pairs.items()), key=lambda p: -len(p[1])))
    if not items:
        return Needles(())
    prefixes = frozenset(n[:size] for _, n in items for size in range(1, len(n)))
    automaton = ahocorasick_rs.BytesAhoCorasick(
        [n for _, n in items], matchkind=ahocorasick_rs.MATCHKIND_LEFTMOST_LONGEST
    )
    return Needles(items, max(len(n) for _, n in items), prefixes, automaton)


def scrub(data: bytes, found: Needles, marker: bytes = MARKER) -> tuple[bytes, set[str]]:
    """``data`` with every needle replaced by ``marker``, and the names of the secrets that were."""
    if found.automaton is None:
        return data, set()
    matches = found.automaton.find_matches_as_indexes(data)
    if not matches:
        return data, set()
    names: set[str] = set()
    out: list[bytes] = []
    pos = 0
    for index, start, end in matches:
        out += (data[pos:start], marker)
        names.add(found.items[index][0])
        pos = end
    out.append(data[pos:])
    return b"".join(out), names


def scrub_fields(
    fields: Iterable[tuple[bytes, bytes]], found: Needles
) -> tuple[tuple[tuple[bytes, bytes], ...], set[str]]:
    """Header fields with secrets replaced in values and secret-bearing names renamed."""
    out: list[tuple[bytes, bytes]] = []
    names: set[str] = set()
    for name, value in fields:
        new_name, in_name = scrub(name, found)
        if in_name:
            new_name = MARKER_HEADER
        new_value, in_value = scrub(value, found)
        names |= in_name | in_value
        out.append((new_name, new_value))
    return tuple(out), names


class StreamScrubber:
    """A ``flow.response.stream`` callable: scrubbed (and decoded) pieces out for pieces in.

    ``found`` collects the names of the secrets replaced; ``problem`` says why the body was
    cut short ("" if it was not).
    """

    def __init__(self, secrets: Needles, encodings: Iterable[str] = ()) -> None:
        self.secrets = secrets
        names = list(encodings)
        self.decoder = decoding.Decoder(names, MAX_RESPONSE_DECODED) if names else None
        self.tail = b""
        self.found: set[str] = set()
        self.problem = ""
        self.done = False

    def __call__(self, data: bytes) -> Iterator[bytes]:
        if self.done:
            return iter(())
        return self._run(data)

    def _run(self, data: bytes) -> Iterator[bytes]:
        final = data == b""  # mitmproxy's end of body
        try:
            if self.decoder is None:
                yield from self._pass([data] if data else [])
            else:
                yield from self._pass(self.decoder.feed(data) if data else self.decoder.flush())
        except decoding.DecodeError as exc:
            self.problem = str(exc)
            yield from self._flush()
            note = f"\n[bottle: the rest of this response was withheld: {exc}]\n"
            yield note.encode("utf-8")
            return
        if final:
            yield from self._flush()

    def _pass(self, pieces: Iterable[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            buf, names = scrub(self.tail + piece if self.tail else piece, self.secrets)
            self.found |= names
            cut = len(buf) - self.secrets.held(buf)
            self.tail = buf[cut:]
            if cut:
                yield buf[:cut]

    def _flush(self) -> Iterator[bytes]:
        buf, names = scrub(self.tail, self.secrets)
        self.found |= names
        self.tail = b""
        self.done = True
        if buf:
            yield buf
