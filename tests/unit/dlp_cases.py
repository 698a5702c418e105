"""What egress DLP catches and what it does not: the one table that tests and docs share.

``tests/unit/test_dlp_cases.py`` runs every case through the real addon and fails when a
case's ``caught`` is no longer true; ``scripts/dlp_table.py`` renders ``docs/dlp.md`` from
the same lists (a unit test fails when the doc is out of date). Edit here, then run
``uv run python scripts/dlp_table.py``.
"""

from __future__ import annotations

import base64
import codecs
import gzip
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import brotli  # type: ignore[import-untyped]

try:
    from compression import zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    from backports import zstd  # type: ignore[import-not-found,no-redef,unused-ignore]

MIB = 1 << 20


@dataclass(frozen=True)
class Request:
    path: str = "/upload"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    host: str = "upload.example.com"  # a route with dlp: block and no credential


@dataclass(frozen=True)
class Case:
    form: str  # how the secret travels, as the docs say it
    caught: bool
    build: Callable[[str], list[Request]]  # the requests (or response) carrying the secret


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)


def _mime(data: bytes) -> bytes:
    return base64.encodebytes(b"-----header-----\n" + data + b"\n-----trailer-----")


def _json_u(secret: str, every: int = 1) -> str:
    return "".join(f"\\u{ord(c):04x}" if i % every == 0 else c for i, c in enumerate(secret))


def body(data: bytes, *headers: tuple[str, str]) -> list[Request]:
    return [Request(headers=headers, body=data)]


def _zstd(data: bytes) -> bytes:
    out: bytes = zstd.compress(data)
    return out


def _split(secret: str) -> list[Request]:
    half = len(secret) // 2
    return [Request(body=f"part={secret[:half]}".encode()), Request(body=secret[half:].encode())]


REQUEST_CASES: tuple[Case, ...] = (
    Case("plain, in the query", True, lambda s: [Request(path=f"/upload?k={s}")]),
    Case("plain, in the path", True, lambda s: [Request(path=f"/upload/{s}/x")]),
    Case("plain, in a header value", True, lambda s: [Request(headers=(("X-Note", s),))]),
    Case("plain, as a header name", True, lambda s: [Request(headers=((f"X-{s}", "1"),))]),
    Case("plain, in the body", True, lambda s: body(s.encode())),
    Case(
        "plain, after 3 MiB of body",
        True,
        lambda s: body(b"a" * (3 * MIB) + s.encode()),
    ),
    Case("URL-encoded", True, lambda s: [Request(path="/upload?k=" + quote(s, safe=""))]),
    Case(
        "URL-encoded in part (some characters escaped)",
        True,
        lambda s: [Request(path="/upload?k=" + "".join(f"%{ord(c):02X}" for c in s[:4]) + s[4:])],
    ),
    Case(
        "double URL-encoded",
        True,
        lambda s: [Request(path="/upload?k=" + quote("".join(f"%{ord(c):02X}" for c in s)))],
    ),
    Case("base64", True, lambda s: body(_b64(s.encode()))),
    Case("base64url", True, lambda s: body(base64.urlsafe_b64encode(b"?>" + s.encode()))),
    Case(
        "base64 in Basic auth (`user:secret`)",
        True,
        lambda s: [
            Request(headers=(("Authorization", "Basic " + _b64(f"u:{s}".encode()).decode()),))
        ],
    ),
    Case("base64 with MIME line breaks (76 columns)", True, lambda s: body(_mime(s.encode() * 4))),
    Case("double base64", True, lambda s: body(_b64(_b64(b"k=" + s.encode())))),
    Case("hex, lower case", True, lambda s: body(s.encode().hex().encode())),
    Case("hex, upper case", True, lambda s: body(s.encode().hex().upper().encode())),
    Case("base32", True, lambda s: body(base64.b32encode(b"x" + s.encode()))),
    Case("base32, lower case", True, lambda s: body(base64.b32encode(s.encode()).lower())),
    Case("JSON `\\u` escapes", True, lambda s: body(('{"k": "' + _json_u(s) + '"}').encode())),
    Case(
        "JSON `\\u` escapes, some characters",
        True,
        lambda s: body(('{"k": "' + _json_u(s, 3) + '"}').encode()),
    ),
    Case(
        "gzip body, `Content-Encoding: gzip`",
        True,
        lambda s: body(gzip.compress(s.encode()), ("Content-Encoding", "gzip")),
    ),
    Case(
        "deflate body, `Content-Encoding: deflate`",
        True,
        lambda s: body(zlib.compress(s.encode()), ("Content-Encoding", "deflate")),
    ),
    Case(
        "brotli body, `Content-Encoding: br`",
        True,
        lambda s: body(brotli.compress(s.encode()), ("Content-Encoding", "br")),
    ),
    Case(
        "zstd body, `Content-Encoding: zstd`",
        True,
        lambda s: body(_zstd(s.encode()), ("Content-Encoding", "zstd")),
    ),
    Case("gzip body, no `Content-Encoding`", True, lambda s: body(gzip.compress(s.encode()))),
    Case("zlib body, no `Content-Encoding`", True, lambda s: body(zlib.compress(s.encode()))),
    Case("zstd body, no `Content-Encoding`", True, lambda s: body(_zstd(s.encode()))),
    Case(
        "gzip twice, `Content-Encoding: gzip, gzip`",
        True,
        lambda s: body(
            gzip.compress(gzip.compress(s.encode())), ("Content-Encoding", "gzip, gzip")
        ),
    ),
    Case(
        "gzip twice, `Content-Encoding: gzip` (one layer undeclared)",
        True,
        lambda s: body(gzip.compress(gzip.compress(s.encode())), ("Content-Encoding", "gzip")),
    ),
    Case(
        "gzip body, `Content-Encoding: br` (mislabelled), to a credentialed host: refused",
        True,
        lambda s: [
            Request(
                host="api.github.com",
                path="/repos/o/r",
                headers=(("Content-Encoding", "br"),),
                body=gzip.compress(s.encode()),
            )
        ],
    ),
    Case(
        "gzip bomb (128 MiB of zeros) before the secret, to a credentialed host: refused",
        True,
        lambda s: [
            Request(
                host="api.github.com",
                path="/repos/o/r",
                headers=(("Content-Encoding", "gzip"),),
                body=_bomb(s),
            )
        ],
    ),
    Case(
        "brotli body, no `Content-Encoding` (brotli has no magic bytes)",
        False,
        lambda s: body(brotli.compress(b"lorem ipsum dolor " * 50 + s.encode())),
    ),
    Case("reversed", False, lambda s: body(s[::-1].encode())),
    Case(
        "ROT13 (any cipher or encryption)",
        False,
        lambda s: body(codecs.encode(s, "rot13").encode()),
    ),
    Case(
        "XOR with a key (any cipher or encryption)",
        False,
        lambda s: body(bytes(b ^ 0x5A for b in s.encode())),
    ),
    Case(
        "split across two requests",
        False,
        _split,
    ),
    Case(
        "steganography: one character per word",
        False,
        lambda s: body(" ".join(f"{c}word" for c in s).encode()),
    ),
)


def gzip_of_zeros(mib: int, then: bytes = b"") -> bytes:
    """A valid gzip of ``mib`` MiB of zeros followed by ``then``, made without compressing
    them all: after a full flush deflate starts afresh, so each further MiB is the same
    bytes (a bomb of 128 MiB costs milliseconds here, a third of a second through zlib)."""
    zeros = bytes(MIB)
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    first = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    again = packer.compress(zeros) + packer.flush(zlib.Z_FULL_FLUSH)
    end = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)  # raw deflate: its last block
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    crc = zlib.crc32(then, crc)
    size = (mib * MIB + len(then)) & 0xFFFFFFFF
    return b"".join(
        [first, again * (mib - 1), end.compress(then), end.flush(), struct.pack("<II", crc, size)]
    )


def _bomb(secret: str) -> bytes:
    """gzip of 128 MiB of zeros then the secret: about 130 KB on the wire."""
    return gzip_of_zeros(128, secret.encode())


@dataclass(frozen=True)
class Response:
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    chunk: int = 7  # the body reaches egress in pieces of this many bytes


@dataclass(frozen=True)
class ResponseCase:
    form: str
    scrubbed: bool
    build: Callable[[str], Response]


RESPONSE_CASES: tuple[ResponseCase, ...] = (
    ResponseCase("plain, in the body", True, lambda s: Response(body=f"echo {s} done".encode())),
    ResponseCase(
        "plain, split across body chunks",
        True,
        lambda s: Response(body=b"x" * 5 + s.encode() + b"y" * 5, chunk=3),
    ),
    ResponseCase("plain, in a header value", True, lambda s: Response(headers=(("X-Echo", s),))),
    ResponseCase("plain, as a header name", True, lambda s: Response(headers=((f"X-{s}", "1"),))),
    ResponseCase("URL-encoded", True, lambda s: Response(body=quote(s, safe="").encode())),
    ResponseCase(
        "double URL-encoded",
        True,
        lambda s: Response(body=quote(quote(s, safe=""), safe="").encode()),
    ),
    ResponseCase("base64", True, lambda s: Response(body=_b64(b"u:" + s.encode()))),
    ResponseCase("double base64", True, lambda s: Response(body=_b64(_b64(s.encode())))),
    ResponseCase(
        "hex, lower and upper case",
        True,
        lambda s: Response(body=(s.encode().hex() + s.encode().hex().upper()).encode()),
    ),
    ResponseCase("base32", True, lambda s: Response(body=base64.b32encode(s.encode()))),
    ResponseCase("JSON `\\u` escapes", True, lambda s: Response(body=_json_u(s).encode())),
    ResponseCase(
        "gzip body, `Content-Encoding: gzip` (sent on as identity)",
        True,
        lambda s: Response(
            headers=(("Content-Encoding", "gzip"),), body=gzip.compress(s.encode() * 3)
        ),
    ),
    ResponseCase(
        "brotli, then gzip: `Content-Encoding: br, gzip`",
        True,
        lambda s: Response(
            headers=(("Content-Encoding", "br, gzip"),),
            body=gzip.compress(brotli.compress(s.encode())),
        ),
    ),
    ResponseCase(
        "unknown `Content-Encoding`: the body is withheld",
        True,
        lambda s: Response(headers=(("Content-Encoding", "x-custom"),), body=s.encode()),
    ),
    ResponseCase(
        "URL-encoded in part (`%41BC…` mixed)",
        True,
        lambda s: Response(body=("".join(f"%{ord(c):02X}" for c in s[:4]) + s[4:]).encode()),
    ),
    ResponseCase(
        "URL-encoded in part, every other character",
        True,
        lambda s: Response(
            body=(
                "x=" + "".join(f"%{ord(c):02x}" if i % 2 else c for i, c in enumerate(s)) + "&"
            ).encode()
        ),
    ),
    ResponseCase(
        "double URL-encoded in part",
        True,
        lambda s: Response(body=("".join(f"%25{ord(c):02X}" for c in s[:5]) + s[5:]).encode()),
    ),
    ResponseCase(
        "JSON `\\u` escapes, some characters",
        True,
        lambda s: Response(body=('{"k": "' + _json_u(s, 3) + '"}').encode()),
    ),
    ResponseCase(
        "base64url",
        True,
        lambda s: Response(body=base64.urlsafe_b64encode(b"\xfb\xff" + s.encode())),
    ),
    ResponseCase(
        "base64 with MIME line breaks (76 columns, CRLF)",
        True,
        lambda s: Response(body=_mime(s.encode() * 4).replace(b"\n", b"\r\n")),
    ),
    ResponseCase(
        "base64 with MIME line breaks, split across body chunks",
        True,
        lambda s: Response(body=b"attachment:\r\n" + _mime(b"x" * 50 + s.encode()), chunk=5),
    ),
    ResponseCase(
        "hex split across body chunks",
        True,
        lambda s: Response(body=b"id=" + s.encode().hex().encode() + b";", chunk=3),
    ),
    ResponseCase(
        "hex with line breaks",
        True,
        lambda s: Response(body=_wrapped(s.encode().hex().encode(), 16)),
    ),
    ResponseCase(
        "gzip body, `Content-Encoding: gzip`, in pieces across chunk boundaries",
        True,
        lambda s: Response(
            headers=(("Content-Encoding", "gzip"), ("Transfer-Encoding", "chunked")),
            body=gzip.compress(b"a" * 3000 + s.encode()),
            chunk=2,
        ),
    ),
    ResponseCase(
        "gzip inside gzip, `Content-Encoding: gzip` (one layer undeclared)",
        True,
        lambda s: Response(
            headers=(("Content-Encoding", "gzip"),), body=gzip.compress(gzip.compress(s.encode()))
        ),
    ),
    ResponseCase(
        "gzip body, no `Content-Encoding`: the body is cut",
        True,
        lambda s: Response(body=gzip.compress(s.encode())),
    ),
    ResponseCase(
        "zlib body, no `Content-Encoding`: the body is cut",
        True,
        lambda s: Response(body=zlib.compress(b"data " + s.encode())),
    ),
    ResponseCase(
        "raw deflate body, no `Content-Encoding`: the body is cut",
        True,
        lambda s: Response(body=_raw_deflate(b"data " + s.encode())),
    ),
    ResponseCase(
        "brotli body, no `Content-Encoding`: the body is cut",
        True,
        lambda s: Response(body=brotli.compress(b"data " + s.encode())),
    ),
    ResponseCase(
        "zstd body, no `Content-Encoding`: the body is cut",
        True,
        lambda s: Response(body=_zstd(b"data " + s.encode())),
    ),
    ResponseCase(
        "gzip inside gzip, the inner one behind a 5 MiB comment, no `Content-Encoding`: "
        "the body is cut",
        True,
        lambda s: Response(body=gzip.compress(_gzip_comment(b"data " + s.encode(), 5 << 20))),
    ),
    ResponseCase(
        "base64 broken by a blank line (a blank line ends a run: event streams are not held)",
        False,
        lambda s: Response(body=_blank_line(base64.b64encode(s.encode()))),
    ),
)


def _gzip_comment(data: bytes, comment_bytes: int) -> bytes:
    """A gzip member whose FCOMMENT, which readers skip, comes before ``data``: a layer that
    gives no output for that long holds more back than egress holds."""
    head = b"\x1f\x8b\x08\x10\0\0\0\0\x00\xff" + b"A" * comment_bytes + b"\0"
    trailer = struct.pack("<II", zlib.crc32(data), len(data))
    return head + _raw_deflate(data) + trailer


def _blank_line(data: bytes) -> bytes:
    half = len(data) // 2
    return data[:half] + b"\n\n" + data[half:]


def _wrapped(data: bytes, width: int) -> bytes:
    return b"\n".join(data[i : i + width] for i in range(0, len(data), width))


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()
