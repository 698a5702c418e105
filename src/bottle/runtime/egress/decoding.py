"""Content-Encoding undone in bounded steps, for DLP (requests) and scrubbing (responses).

A compressed body is hostile input: each layer is decoded incrementally, a bounded piece at a
time, and the total output of every layer is capped (:data:`MAX_DECODED_BYTES`), so a
decompression bomb ends in :class:`DecodeError`, never in exhausted memory. Pure functions
and small classes over bytes; no mitmproxy import.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Iterator
from typing import Protocol

import brotli  # type: ignore[import-untyped]

try:  # Python 3.14+
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # pragma: no cover - depends on the Python version
    from backports import zstd  # type: ignore[import-not-found,no-redef,unused-ignore]

#: The most bytes any one layer may decode to; past it the body is "too large to decode".
MAX_DECODED_BYTES = 64 << 20
#: The most Content-Encoding layers (declared plus sniffed) undone for one body.
MAX_LAYERS = 4
#: The most bytes one decompression call may produce: the unit of memory per layer.
STEP = 64 << 10

#: Encodings this module decodes. "identity" is no layer at all.
KNOWN = frozenset({"gzip", "x-gzip", "deflate", "br", "zstd"})


class DecodeError(Exception):
    """A layer could not be decoded (unknown, corrupt or truncated) or decoded too large."""


class TooLarge(DecodeError):
    """A layer decoded to more than its bound: a decompression bomb, or just too big to scan."""


class _Layer(Protocol):
    def feed(self, data: bytes) -> Iterator[bytes]: ...
    def flush(self) -> Iterator[bytes]: ...


def parse(header: str) -> list[str]:
    """The encodings of a Content-Encoding header in the order they were applied."""
    names = [part.strip().lower() for part in header.split(",")]
    return [name for name in names if name and name != "identity"]


def sniff(head: bytes) -> str:
    """The encoding whose magic bytes start ``head`` ("" for none): gzip, zlib, zstd."""
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if len(head) >= 2 and head[0] == 0x78 and ((head[0] << 8) | head[1]) % 31 == 0:
        return "deflate"
    return ""


class _Zlib:
    """gzip (multi-member), zlib-wrapped or raw deflate, each call bounded to STEP bytes."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.d: zlib._Decompress | None = None

    def _start(self, data: bytes) -> zlib._Decompress:
        if self.encoding == "deflate":
            # "deflate" is zlib-wrapped by the RFC, raw in some servers: the header tells.
            zlib_header = len(data) >= 2 and sniff(data[:2]) == "deflate"
            return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)
        return zlib.decompressobj(16 + zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self.d is None:
                self.d = self._start(data)
            try:
                out = self.d.decompress(data, STEP)
                while out:
                    yield out
                    out = self.d.decompress(self.d.unconsumed_tail, STEP)
            except zlib.error as exc:
                raise DecodeError(f"corrupt {self.encoding} data") from exc
            data = b""
            if self.d.eof:
                rest = self.d.unused_data
                self.d = None
                # Another gzip member follows (concatenated gzip is still one gzip body).
                if rest and self.encoding != "deflate":
                    data = rest

    def flush(self) -> Iterator[bytes]:
        if self.d is not None and not self.d.eof:
            raise DecodeError(f"truncated {self.encoding} data")
        return iter(())


class _Brotli:
    def __init__(self) -> None:
        self.d = brotli.Decompressor()

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            out = self.d.process(data, output_buffer_limit=STEP)
            while True:
                if out:
                    yield out
                if self.d.can_accept_more_data():
                    return
                out = self.d.process(b"", output_buffer_limit=STEP)
        except brotli.error as exc:
            raise DecodeError("corrupt br data") from exc

    def flush(self) -> Iterator[bytes]:
        try:
            while not self.d.is_finished():  # output that the step limit held back
                out = self.d.process(b"", output_buffer_limit=STEP)
                if not out:
                    break
                yield out
        except brotli.error as exc:
            raise DecodeError("corrupt br data") from exc
        if not self.d.is_finished():
            raise DecodeError("truncated br data")


class _Zstd:
    def __init__(self) -> None:
        self.d = zstd.ZstdDecompressor()
        self.started = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        try:
            while data or not self.d.needs_input:
                self.started = True
                out = self.d.decompress(data, STEP)
                data = b""
                if out:
                    yield out
                if self.d.eof:
                    data = self.d.unused_data  # the next frame
                    self.d = zstd.ZstdDecompressor()
                    if not data:
                        self.started = False
                        return
                elif self.d.needs_input:
                    return
        except zstd.ZstdError as exc:
            raise DecodeError("corrupt zstd data") from exc

    def flush(self) -> Iterator[bytes]:
        if self.started and not self.d.eof:
            raise DecodeError("truncated zstd data")
        return iter(())


def _layer(encoding: str) -> _Layer:
    if encoding in {"gzip", "x-gzip", "deflate"}:
        return _Zlib("deflate" if encoding == "deflate" else "gzip")
    if encoding == "br":
        return _Brotli()
    if encoding == "zstd":
        return _Zstd()
    raise DecodeError(f"unknown content-encoding {encoding!r}")


class Decoder:
    """Undo ``encodings`` (in the order they were applied) over a stream of chunks.

    ``feed`` and ``flush`` yield decoded pieces of at most :data:`STEP` bytes; every layer's
    output is capped at ``limit`` bytes.
    """

    def __init__(self, encodings: Iterable[str], limit: int = MAX_DECODED_BYTES) -> None:
        names = list(encodings)
        if len(names) > MAX_LAYERS:
            raise DecodeError(f"more than {MAX_LAYERS} content-encodings")
        self.names = names
        self.layers = [_layer(name) for name in reversed(names)]
        self.limit = limit
        self.sizes = [0] * len(self.layers)

    def _through(self, index: int, pieces: Iterable[bytes]) -> Iterator[bytes]:
        if index == len(self.layers):
            yield from pieces
            return
        layer = self.layers[index]
        for piece in pieces:
            yield from self._through(index + 1, self._counted(index, layer.feed(piece)))

    def _counted(self, index: int, pieces: Iterable[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            self.sizes[index] += len(piece)
            if self.sizes[index] > self.limit:
                raise TooLarge(
                    f"{self.names[-1 - index]} data decodes to more than {self.limit >> 20} MiB"
                )
            yield piece

    def feed(self, data: bytes) -> Iterator[bytes]:
        return self._through(0, [data])

    def flush(self) -> Iterator[bytes]:
        for index, layer in enumerate(self.layers):
            tail = self._counted(index, layer.flush())
            yield from self._through(index + 1, tail)


def chunks(data: bytes, size: int = 1 << 20) -> Iterator[bytes]:
    """``data`` in slices of ``size`` bytes (views are copied one slice at a time)."""
    view = memoryview(data)
    for start in range(0, len(data), size):
        yield bytes(view[start : start + size])


def decode_stream(
    pieces: Iterable[bytes], encodings: Iterable[str], limit: int = MAX_DECODED_BYTES
) -> Iterator[bytes]:
    """The decoded stream of ``pieces``; raises :class:`DecodeError` as soon as it must."""
    decoder = Decoder(encodings, limit)
    for piece in pieces:
        yield from decoder.feed(piece)
    yield from decoder.flush()
