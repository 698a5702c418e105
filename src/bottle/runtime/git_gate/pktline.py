"""Protocol v2 ``fetch`` on the wire: strict pkt-line parsing and the response tee.

Groundwork for relaying a cold clone: the agent's ``command=fetch`` goes upstream with the
gate's credential and the answer is forwarded to the agent pkt-line by pkt-line, unchanged,
while the pack inside it (side-band 1 of the ``packfile`` section) is fed to ``git
index-pack`` into the mirror as it arrives. Both ends are hostile (the agent writes the
request, upstream the response): anything this module does not fully understand raises
``ProtocolError`` or yields None, and the caller falls back to fetch-then-serve.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Protocol

FLUSH, DELIM, RESPONSE_END = b"0000", b"0001", b"0002"
#: The largest pkt-line git writes (LARGE_PACKET_MAX), length prefix included.
MAX_PKT = 65520
_OID = re.compile(rb"^[0-9a-f]{40}$")
#: Arguments of a v2 fetch the relay takes: anything else (shallow, filter, want-ref,
#: packfile-uris, sideband-all, …) changes what the answer is made of, so it falls back.
_FLAGS = frozenset({b"done", b"thin-pack", b"no-progress", b"include-tag", b"ofs-delta"})
_CAPABILITY = re.compile(rb"(agent|object-format|session-id)=[\x21-\x7e]{1,256}")
_SECTIONS = frozenset({b"acknowledgments", b"packfile"})


class Writer(Protocol):
    def write(self, data: bytes, /) -> object: ...


class ProtocolError(Exception):
    """Bytes that are not the pkt-lines this module expects; ``str()`` says which."""


def read_pkt(src: IO[bytes]) -> tuple[bytes, bytes | None]:
    """One pkt-line: (its raw bytes, its payload), payload None for flush/delim/end.

    Raises ProtocolError at end of input or on a malformed length."""
    head = _read_exact(src, 4)
    if head in (FLUSH, DELIM, RESPONSE_END):
        return head, None
    try:
        size = int(head, 16)
    except ValueError:
        raise ProtocolError(f"bad pkt-line length {head!r}") from None
    if not re.fullmatch(rb"[0-9a-f]{4}", head) or size < 5 or size > MAX_PKT:
        raise ProtocolError(f"bad pkt-line length {head!r}")
    payload = _read_exact(src, size - 4)
    return head + payload, payload


def _read_exact(src: IO[bytes], size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = src.read(size - len(data))
        if not chunk:
            raise ProtocolError("the stream ended inside a pkt-line")
        data += chunk
    return data


def pkt(payload: bytes) -> bytes:
    if len(payload) + 4 > MAX_PKT:
        raise ValueError("payload too large for one pkt-line")
    return b"%04x" % (len(payload) + 4) + payload


@dataclass(frozen=True)
class FetchRequest:
    """A v2 ``command=fetch`` the relay may send upstream as it is."""

    raw: bytes  # the request exactly as the agent sent it
    capabilities: tuple[bytes, ...]
    wants: tuple[str, ...]
    haves: tuple[str, ...]
    flags: frozenset[bytes]

    def canonical(self) -> bytes:
        """The same fetch in the gate's words, what goes upstream: none of the agent's
        capability values (its ``agent=`` or ``session-id=`` would be free text to upstream,
        unscanned), wants sorted and unique (their order would be free bits too)."""
        lines = [pkt(b"command=fetch\n"), pkt(b"agent=git/bottle-git-gate\n"), DELIM]
        lines += [pkt(flag + b"\n") for flag in sorted(self.flags - {b"done"})]
        lines += [pkt(b"want %s\n" % w.encode()) for w in sorted(set(self.wants))]
        lines += [pkt(b"have %s\n" % h.encode()) for h in sorted(set(self.haves))]
        if b"done" in self.flags:
            lines.append(pkt(b"done\n"))
        return b"".join(lines) + FLUSH


def parse_fetch_request(body: bytes) -> FetchRequest | None:
    """The agent's request if it is a plain v2 fetch (wants, haves, known flags), else None.

    None covers every doubt: another command, an unknown argument or capability value,
    a malformed pkt-line, trailing bytes."""
    src = io.BytesIO(body)
    try:
        _, first = read_pkt(src)
        if first is None or _line(first) != b"command=fetch":
            return None
        capabilities: list[bytes] = []
        while True:
            end, payload = read_pkt(src)
            if payload is None:
                break
            line = _line(payload)
            if not re.fullmatch(rb"(agent|object-format|session-id)=[\x21-\x7e]{1,256}", line):
                return None
            if line.startswith(b"object-format=") and line != b"object-format=sha1":
                return None
            capabilities.append(line)
        if end != DELIM:
            return None
        wants: list[str] = []
        haves: list[str] = []
        flags: set[bytes] = set()
        while True:
            raw, payload = read_pkt(src)
            if payload is None:
                break
            line = _line(payload)
            verb, _sp, arg = line.partition(b" ")
            if verb in (b"want", b"have") and _OID.match(arg):
                (wants if verb == b"want" else haves).append(arg.decode())
            elif line in _FLAGS:
                flags.add(line)
            else:
                return None
        if raw != FLUSH or src.read(1) or not wants:
            return None
    except ProtocolError:
        return None
    return FetchRequest(body, tuple(capabilities), tuple(wants), tuple(haves), frozenset(flags))


#: ref-prefix values an ls-refs may ask upstream for: the refs the mirror holds, no more.
_LS_PREFIX = re.compile(rb"^ref-prefix (HEAD|refs/(heads|tags)/[\x21-\x7e]{0,1000})$")
#: More prefixes than a clone sends (git sends three): anything else is not a plain clone.
MAX_PREFIXES = 64


@dataclass(frozen=True)
class LsRefsRequest:
    """A v2 ``ls-refs`` for HEAD, branches and tags only, with what it asked to be shown."""

    prefixes: tuple[str, ...]
    symrefs: bool
    peel: bool


def parse_ls_refs(body: bytes) -> LsRefsRequest | None:
    """The agent's ``ls-refs`` if it asks only for HEAD, branches and tags, else None."""
    src = io.BytesIO(body)
    try:
        _, first = read_pkt(src)
        if first is None or _line(first) != b"command=ls-refs":
            return None
        while (line := read_pkt(src))[1] is not None:
            capability = _line(line[1] or b"")
            if not re.fullmatch(
                rb"(agent|object-format|session-id)=[\x21-\x7e]{1,256}", capability
            ):
                return None
            if capability.startswith(b"object-format=") and capability != b"object-format=sha1":
                return None
        if line[0] != DELIM:
            return None
        prefixes: list[str] = []
        args: set[bytes] = set()
        while (line := read_pkt(src))[1] is not None:
            arg = _line(line[1] or b"")
            if _LS_PREFIX.match(arg):
                prefixes.append(arg.split(b" ", 1)[1].decode())
            elif arg in (b"symrefs", b"peel", b"unborn"):
                args.add(arg)
            else:
                return None
        if line[0] != FLUSH or src.read(1) or not prefixes or len(prefixes) > MAX_PREFIXES:
            return None
    except ProtocolError:
        return None
    return LsRefsRequest(tuple(prefixes), b"symrefs" in args, b"peel" in args)


def is_plain_ls_refs(body: bytes) -> bool:
    """Whether ``body`` is a v2 ``ls-refs`` asking only for HEAD, branches and tags."""
    return parse_ls_refs(body) is not None


def _line(payload: bytes) -> bytes:
    return payload[:-1] if payload.endswith(b"\n") else payload


def tee_fetch_response(
    src: IO[bytes], out: Writer, pack: Writer, on_pack: Callable[[], None] = lambda: None
) -> bool:
    """Copy one v2 fetch response from ``src`` to ``out`` unchanged, writing the pack data
    of its ``packfile`` section to ``pack`` as it passes; True if it carried a pack.

    A response without a pack (acknowledgments only: upstream wants more haves) ends at
    its flush; nothing after the flush is read. ProtocolError on anything else (an unknown
    section, an error band, a pack that does not start as one), with nothing of the
    offending pkt-line forwarded but upstream's own error message. ``on_pack`` runs once the
    pack's signature is checked, before the pkt-line holding it is written to ``out``: until
    then the caller may still hold back all of ``out`` and fall back."""
    section: bytes | None = None
    packed = False
    start = b""  # the pack's first bytes, until there are four to check
    expect_header = True
    while True:
        raw, payload = read_pkt(src)
        if payload is None:
            if raw == FLUSH:
                out.write(raw)
                return packed
            if raw == DELIM and section is not None and section != b"packfile":
                out.write(raw)
                section, expect_header = None, True
                continue
            raise ProtocolError(f"unexpected {raw!r} in a fetch response")
        if expect_header:
            name = _line(payload)
            if name not in _SECTIONS:
                raise ProtocolError(f"unexpected section {name[:40]!r} in a fetch response")
            section, expect_header = name, False
            out.write(raw)
            continue
        if section == b"packfile":
            band, data = payload[:1], payload[1:]
            if band == b"\x01":
                if len(start) < 4:
                    start += data[: 4 - len(start)]
                    if not b"PACK".startswith(start):
                        raise ProtocolError("the packfile section does not start with a pack")
                    if start == b"PACK":
                        on_pack()
                packed = True
                pack.write(data)
            elif band == b"\x03":
                out.write(raw)  # upstream's own message, for the agent to read
                raise ProtocolError("upstream sent an error: " + printable(data))
            elif band != b"\x02":
                raise ProtocolError(f"unknown side-band {band!r}")
        out.write(raw)


def printable(data: bytes) -> str:
    """Upstream's text, short and with no control character left (it reaches logs)."""
    text = data[:200].decode("utf-8", "replace").encode("ascii", "backslashreplace").decode()
    return "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in text)
