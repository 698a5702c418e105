"""Responses scrubbed of secrets: what egress holds never reaches the agent from upstream.

An upstream that echoes a request hands back the credential egress injected into it; one that
was handed a ``dlp_secrets`` value may show it. Every form :mod:`.dlp` looks for (plain, URL-,
base64-, hex-, base32-, JSON-encoded...) is replaced by :data:`MARKER` in header names and
values and in the body (:func:`scrub`); a secret only a decoded view shows (partly %- or
``\\u``-escaped, broken across lines) takes its whole *run* with it, the stretch of bytes any
encoding is made of (:func:`scrub_runs`). The body is streamed: each piece is scrubbed together
with what was held back of the one before (an end that could begin a form; a trailing run),
so a secret split across pieces is still whole. A compressed body is decoded (bounded steps,
:mod:`.decoding`) and sent on as identity; one whose compression no header declares goes on as
it came, checked on the side (:mod:`.undeclared`). Pure bytes in, bytes out; no mitmproxy.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import ahocorasick_rs

from bottle.runtime.egress import decoding, dlp
from bottle.runtime.egress.dlp import KnownSecret
from bottle.runtime.egress.undeclared import NO_MAGIC, Undeclared

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
    secrets: tuple[KnownSecret, ...] = field(default=(), repr=False)
    #: ``bytes.translate`` table: a byte any form of a secret may hold -> b"a", others b" ".
    runs: bytes = field(default=bytes(256), repr=False)
    #: Bytes that make a run worth decoding (escapes and line breaks): see :func:`scrub_runs`.
    triggers: bytes = field(default=b"", repr=False)
    #: The longest a decoded view's source may be: how much of a long run waits.
    overlap: int = 0
    #: The bytes a run is made of (those ``runs`` maps to b"a").
    alphabet: bytes = field(default=b"", repr=False)

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
    own = {b for secret in secrets for _f, needle in secret.forms for b in needle.encode("utf-8")}
    alphabet = set(_ALPHABET) | own
    table = bytes(ord("a") if b in alphabet else ord(" ") for b in range(256))
    triggers = b"%\\\r\n" + (b"+" if ord(" ") in own else b"")
    return Needles(
        items,
        max(len(n) for _, n in items),
        prefixes,
        automaton,
        secrets,
        table,
        triggers,
        # The longest source of a decoded view: every character escaped (as the longest
        # needle, JSON's 6 for 1), with line breaks.
        2 * max(len(n) for _, n in items) + 64,
        bytes(sorted(alphabet)),
    )


#: Bytes of the encodings :mod:`.dlp` decodes (base64/url, hex, base32, %- and \\u-escapes,
#: line breaks); a secret's own characters are added. A run of them may hide a secret.
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789" + b"%+/=-_\\\r\n"
#: A run longer than this is scanned and sent on but for its last ``overlap`` bytes.
MAX_RUN = 64 << 10
#: Found by :func:`scrub_runs`: runs of at least this many bytes (no form is shorter).
_RUN = re.compile(rb"a{8,}")


def _mask(data: bytes, found: Needles) -> bytes:
    """``data`` as b"a" (may be part of a form) and b" " (may not), the same length. A blank
    line ends a run: MIME never breaks a line twice, and an event stream's events end so."""
    return data.replace(b"\r\n\r\n", b"\r\n \n").replace(b"\n\n", b"\n ").translate(found.runs)


def trailing_run(data: bytes, found: Needles) -> int:
    """How many bytes at the end of ``data`` could begin or continue a run (they wait): at
    most ``MAX_RUN + 1``, and never past a blank line (see :func:`_mask`)."""
    window = data[-(MAX_RUN + 1) :]
    tail = window[len(window.rstrip(found.alphabet)) :]
    for mark in (b"\n\n", b"\n\r\n"):
        at = tail.rfind(mark)
        if at >= 0:
            tail = tail[at + len(mark) :]
    return len(tail)


def scrub_runs(data: bytes, found: Needles, marker: bytes = MARKER) -> tuple[bytes, set[str]]:
    """``data`` with every run (bytes any encoding may hold) that hides a secret in a decoded
    view (partly %- or \\u-escaped, broken across lines: what :func:`scrub` cannot see) replaced
    whole by ``marker``, and the names of those secrets."""
    if found.automaton is None or not any(t in data for t in found.triggers):
        return data, set()
    # Nearly always nothing: one look at the whole's views (they hold every run's) says so.
    plus = b"+" in found.triggers
    if not any(found.automaton.find_matches_as_indexes(v) for v in _views(data, plus)):
        return data, set()
    trigger = set(found.triggers)
    runs = [
        (m.start(), m.end())
        for m in _RUN.finditer(_mask(data, found))
        if not trigger.isdisjoint(data[m.start() : m.end()])
    ]
    names: set[str] = set()
    out: list[bytes] = []
    pos = 0
    for start, end in runs:
        here = dlp.secrets_in(data[start:end], found.secrets)
        if here:
            names |= here
            out += (data[pos:start], marker)
            pos = end
    out.append(data[pos:])
    return b"".join(out), names


_JSON_U = re.compile(rb"\\u([0-9a-fA-F]{4})")
_PERCENT = re.compile(rb"%([0-9A-Fa-f]{2})")


def _unquote(data: bytes) -> bytes:
    """%-escapes undone (``unquote_to_bytes`` splits at every ``%``: slow on binary bytes)."""
    return _PERCENT.sub(lambda m: bytes((int(m.group(1), 16),)), data) if b"%" in data else data


def _views(data: bytes, plus: bool) -> Iterator[bytes]:
    """The decoded views :func:`.dlp.secrets_in` looks at, as bytes and at C speed where it
    can: line breaks removed, %-escapes undone once and twice (``+`` also as a space when a
    secret has one: ``plus``), JSON ``\\u`` escapes undone. The plain view is :func:`scrub`'s."""
    if b"\n" in data or b"\r" in data:
        yield data.replace(b"\r", b"").replace(b"\n", b"")
    if b"%" in data or (plus and b"+" in data):
        for once in (
            (_unquote(data), _unquote(data.replace(b"+", b" "))) if plus else [_unquote(data)]
        ):
            yield once
            if b"%" in once:
                yield _unquote(once)
                if plus:
                    yield _unquote(once.replace(b"+", b" "))
    if b"\\u" in data or b"\\/" in data:
        yield _JSON_U.sub(
            lambda m: chr(int(m.group(1), 16)).encode("utf-8", "surrogatepass"), data
        ).replace(b"\\/", b"/")


def scrub_whole(
    data: bytes, found: Needles, limit: int = MAX_SMALL_DECODED, depth: int = 0
) -> tuple[bytes, set[str], str]:
    """A body held whole, scrubbed as :class:`StreamScrubber` would (for one write, without its
    per-piece machinery): (what to send, the secrets removed, why it was withheld or "").
    Compression no header declares is decoded (as far as it goes) and scrubbed on the side: a
    secret in it withholds the body."""
    out, names = scrub_all(data, found)
    if depth < decoding.MAX_LAYERS:
        sniffed = decoding.sniff(data[:4])
        for name in [sniffed] if sniffed else NO_MAGIC:
            try:
                plain = _decoded(data, name, limit)
            except decoding.TooLarge as exc:
                return _withheld(f"it holds {name} data that {exc}"), names, str(exc)
            if plain:
                _, hidden, problem = scrub_whole(plain, found, limit, depth + 1)
                if hidden or problem:
                    why = problem or f"a secret was found in its {name} data"
                    return _withheld(why), names | hidden, why
    return out, names, ""


def _decoded(data: bytes, name: str, limit: int) -> bytes:
    """``data`` decoded as ``name`` as far as it decodes (b"" if not at all)."""
    out: list[bytes] = []
    decoder = decoding.Decoder([name], limit)
    try:
        out.extend(decoder.feed(data))
        out.extend(decoder.flush())
    except decoding.TooLarge:
        raise
    except decoding.DecodeError:
        pass  # corrupt or cut short: what decoded before is kept
    return b"".join(out)


def _withheld(problem: str) -> bytes:
    return f"[bottle: this response was withheld: {problem}]\n".encode()


def scrub_all(data: bytes, found: Needles) -> tuple[bytes, set[str]]:
    """A whole body scrubbed: every form (:func:`scrub`), then every decoded view (runs)."""
    out, names = scrub(data, found)
    out, more = scrub_runs(out, found)
    return out, names | more


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

    Two stages, each holding back only what it must: :func:`scrub` replaces every form and
    keeps an end that could begin one; :func:`scrub_runs` replaces a run that hides a secret
    in a decoded view and keeps a trailing run (at most :data:`MAX_RUN`, then ``overlap``).
    Before them, compression no header declares is decoded on the side (:mod:`.undeclared`).
    ``found`` collects the names of the secrets replaced; ``problem`` says why the body was cut
    short ("" if it was not).
    """

    def __init__(self, secrets: Needles, encodings: Iterable[str] = (), *, depth: int = 0) -> None:
        self.secrets = secrets
        names = list(encodings)
        self.decoder = decoding.Decoder(names, MAX_RESPONSE_DECODED) if names else None
        self.undeclared: Undeclared | None = None
        if depth + len(names) < decoding.MAX_LAYERS:
            self.undeclared = Undeclared(
                lambda: StreamScrubber(secrets, depth=depth + len(names) + 1),
                MAX_RESPONSE_DECODED,
            )
        self.tail = b""
        self.run_tail = b""
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
                pieces: Iterable[bytes] = [data] if data else []
            else:
                pieces = self.decoder.feed(data) if data else self.decoder.flush()
            for piece in [*pieces, b""] if final else pieces:
                yield from self._raw(piece)
                if self.problem:
                    return
        except decoding.DecodeError as exc:
            yield from self._cut(str(exc))
            return
        if final:
            yield from self._flush()

    def _raw(self, piece: bytes) -> Iterator[bytes]:
        if self.undeclared is None:
            if piece:
                yield from self._pass(piece)
            return
        for released in self.undeclared.feed(piece):
            yield from self._pass(released)
        if self.undeclared.problem:
            self.found |= self.undeclared.found
            yield from self._cut(self.undeclared.problem)

    def _pass(self, piece: bytes) -> Iterator[bytes]:
        buf, names = scrub(self.tail + piece if self.tail else piece, self.secrets)
        self.found |= names
        cut = len(buf) - self.secrets.held(buf)
        self.tail = buf[cut:]
        if cut:
            out = self._runs(buf[:cut], final=False)
            if out:
                yield out

    def _runs(self, data: bytes, final: bool) -> bytes:
        buf = self.run_tail + data if self.run_tail else data
        buf, names = scrub_runs(buf, self.secrets)
        self.found |= names
        held = 0 if final else trailing_run(buf, self.secrets)
        if held > MAX_RUN:
            held = self.secrets.overlap  # a long run: all of it scanned, its end waits
        cut = len(buf) - held
        self.run_tail = buf[cut:]
        return buf[:cut]

    def _cut(self, problem: str) -> Iterator[bytes]:
        self.problem = problem
        yield from self._flush()
        yield f"\n[bottle: the rest of this response was withheld: {problem}]\n".encode()

    def _flush(self) -> Iterator[bytes]:
        buf, names = scrub(self.tail, self.secrets)
        self.found |= names
        self.tail = b""
        out = self._runs(buf, final=True)
        self.done = True
        if out:
            yield out
