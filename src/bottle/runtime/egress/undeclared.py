"""Compression no header declares, in a response: decoded on the side, held back until scanned.

A body with no Content-Encoding is passed on as it came (a ``.tar.gz`` download must keep its
bytes and its hash), but it may still be compressed: gzip, zlib and zstd by their magic bytes,
raw deflate and brotli (no magic) by decoding at all. Each candidate is decoded on the side and
its output scrubbed by a detector (a :class:`~.scrub.StreamScrubber` whose output is only
counted). A raw piece goes on only once a later piece has made the decoder produce output (a
zstd block is decoded whole, so the piece that ends it may also begin the next one) and the
detector has passed all that it decoded: what the agent gets never holds a compressed secret.
When a detector finds one, the rest of the body is withheld and the flow's log says so; a
candidate that does not decode is dropped, and what it held goes on.
Pure bytes in, bytes out; no mitmproxy import.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Protocol

from bottle.runtime.egress import decoding

#: Tried on a body whose first bytes show no magic: these two have none.
NO_MAGIC = ("deflate", "br")


class Detector(Protocol):
    """What a candidate's decoded output goes through: a scrubber whose output is counted."""

    found: set[str]
    problem: str

    def __call__(self, data: bytes) -> Iterator[bytes]: ...


#: Raw pieces are judged at most this long, however mitmproxy happened to read them, so what
#: came before a secret goes on the same way whether the body arrived in one read or many.
PIECE = 64 << 10

#: The most raw bytes held for one body: past it a sniffed layer cuts the body, a guessed
#: one (no magic) is dropped as not that encoding.
MAX_HELD = 4 << 20


class _Candidate:
    def __init__(
        self, encoding: str, detector: Callable[[], Detector], limit: int, sniffed: bool
    ) -> None:
        self.encoding = encoding
        self.sniffed = sniffed
        self.decoder = decoding.Decoder([encoding], limit)
        # Made when the decoder first gives output: a detector has candidates of its own,
        # so made up front they were a tree of MAX_LAYERS levels for every body, nearly
        # all of them guesses (deflate, br) that decode nothing.
        self.make = detector
        self.detector: Detector | None = None
        self.decoded = 0  # bytes the decoder produced
        self.passed = 0  # bytes of them the detector let through
        self.outputs: deque[tuple[int, int]] = deque()  # (piece that made output, decoded)
        self.settled = -1  # the last raw piece whose decoded output is all scanned

    def feed(self, index: int, data: bytes) -> None:
        before = self.decoded
        for piece in self.decoder.feed(data) if data else self.decoder.flush():
            self.decoded += len(piece)
            self._detect(piece)
        if not data:
            self._detect(b"")
            self.settled = index
            return
        if self.decoded > before:
            self.outputs.append((index, self.decoded))
        # A piece is settled once a later one made output that the detector passed whole:
        # it may have begun a block (zstd) whose output only that later piece brought.
        while self.outputs and self.outputs[0][1] <= self.passed:
            self.settled = self.outputs.popleft()[0] - 1

    def close(self) -> None:
        """The detector's end: what it held back is scanned too."""
        self._detect(b"")

    @property
    def found(self) -> set[str]:
        return self.detector.found if self.detector is not None else set()

    @property
    def problem(self) -> str:
        """Why the detector stopped scanning ("" if it did not): what it did not scan must
        not go on as if it were clean."""
        return self.detector.problem if self.detector is not None else ""

    def _detect(self, piece: bytes) -> None:
        if self.detector is None:
            if not piece:
                return  # nothing was decoded: nothing to scan, nothing held back
            self.detector = self.make()
        for out in self.detector(piece):
            self.passed += len(out)


class Undeclared:
    """Raw pieces in, the ones that may go on out (see the module docstring).

    ``found`` names the secrets a candidate decoded to; ``problem`` says why the body was cut.
    """

    def __init__(
        self, detector: Callable[[], Detector], limit: int = decoding.MAX_DECODED_BYTES
    ) -> None:
        self.make = detector
        self.limit = limit
        self.candidates: list[_Candidate] | None = None  # chosen on the first bytes
        self.held: deque[tuple[int, bytes]] = deque()
        self.held_bytes = 0
        self.head = b""
        self.index = 0
        self.found: set[str] = set()
        self.problem = ""

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The raw pieces that may go on after ``data`` (b"" is the end of the body)."""
        if self.candidates is None:
            self.head += data
            if data and len(self.head) < 4:
                return  # too few bytes yet to tell
            sniffed = decoding.sniff(self.head[:4])
            names = [sniffed] if sniffed else list(NO_MAGIC)
            self.candidates = [
                _Candidate(name, self.make, self.limit, bool(sniffed)) for name in names
            ]
            pieces, self.head = [self.head] if self.head else [], b""
            if not data:
                pieces.append(b"")
        else:
            pieces = [data]
        for piece in pieces:
            for start in range(0, len(piece), PIECE):
                yield from self._one(piece[start : start + PIECE])
            if not piece:
                yield from self._one(piece)

    def _one(self, data: bytes) -> Iterator[bytes]:
        if self.problem:
            return
        if not self.candidates:
            if data:
                yield data
            return
        index = self.index
        self.index += 1
        if data:
            self.held.append((index, data))
            self.held_bytes += len(data)
        for candidate in self.candidates:
            try:
                candidate.feed(index, data)
            except decoding.TooLarge as exc:
                self._cut(f"it holds {candidate.encoding} data that {exc}")
                return
            except decoding.DecodeError:
                # Not that encoding after all, or cut short: what did decode is scanned whole
                # (a truncated body still hands its first part to whoever decodes it).
                with contextlib.suppress(decoding.DecodeError):
                    candidate.close()
                candidate.settled = index
                candidate.encoding = candidate.encoding if candidate.found else ""
            if candidate.found:
                self.found |= candidate.found
                self._cut(f"a secret was found in its {candidate.encoding} data")
                return
            if candidate.encoding and candidate.problem:
                # A layer inside it could not be scanned to its end (it held too much back,
                # or was too large): the rest of it may hold a secret.
                self._cut(
                    f"its {candidate.encoding} data could not be scanned: {candidate.problem}"
                )
                return
            if candidate.encoding and self.held_bytes > MAX_HELD:
                if candidate.sniffed:
                    self._cut(f"its {candidate.encoding} data holds more back than egress holds")
                    return
                candidate.encoding = ""  # a guess that decodes this long is given up
                candidate.settled = index
        self.candidates = [c for c in self.candidates if c.encoding]
        settled = min((c.settled for c in self.candidates), default=index)
        while self.held and self.held[0][0] <= settled:
            piece = self.held.popleft()[1]
            self.held_bytes -= len(piece)
            yield piece

    def _cut(self, problem: str) -> None:
        self.problem = problem
        self.held.clear()
        self.held_bytes = 0
        self.candidates = []
