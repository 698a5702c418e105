"""Responses scrubbed and bodies decoded in bounded memory: chunk boundaries, the long
stream, the decompression bomb, and what the addon logs and sends on."""

from __future__ import annotations

import base64
import contextlib
import gzip
import random
import struct
import tracemalloc
import zlib
from typing import Any

import pytest
from mitmproxy import http, websocket
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHeadersHook, HttpResponseHook
from mitmproxy.proxy.layers.websocket import WebsocketMessageHook
from wsproto.frame_protocol import Opcode

from bottle.runtime.egress import decoding, dlp, scrub
from tests.unit import dlp_cases
from tests.unit.test_dlp_cases import partly_decoded
from tests.unit.test_egress_addon import EXTRA_SECRET, GH_SECRET, Env, env, make_flow  # noqa: F401

SECRETS = dlp.known_secrets(["T"], {"T": GH_SECRET})
NEEDLES = scrub.needles(SECRETS)
MIB = 1 << 20


def run(scrubber: scrub.StreamScrubber, data: bytes, cut: int) -> bytes:
    pieces = [piece for piece in (data[:cut], data[cut:]) if piece]  # b"" is the end
    return b"".join(b"".join(scrubber(piece)) for piece in [*pieces, b""])


@pytest.mark.parametrize(("form", "needle"), sorted(set(SECRETS[0].forms)))
def test_every_form_is_scrubbed_at_every_chunk_boundary(form: str, needle: str) -> None:
    data = b"<<" + needle.encode() + b">>"
    for cut in range(len(data) + 1):
        scrubber = scrub.StreamScrubber(NEEDLES)
        out = run(scrubber, data, cut)
        assert out == b"<<" + scrub.MARKER + b">>", (form, cut)
        assert scrubber.found == {"T"}


def test_request_scanner_finds_a_secret_split_at_every_boundary() -> None:
    data = b"x" * 150 + GH_SECRET.encode() + b"y" * 150
    for cut in range(140, 150 + len(GH_SECRET) + 10):
        scanner = dlp.BodyScanner("body", SECRETS, window=64)
        scanner.feed(data[:cut])
        scanner.feed(data[cut:])
        assert [f.kind for f in scanner.close()] == ["secret:T"], cut


def test_a_stream_four_times_its_bound_is_scrubbed_in_bounded_memory() -> None:
    # What egress reads at a time (1 MiB) goes through a few copies; a scrubber that kept
    # the body, or a share of it that grows with the body, passes the bound 5 MiB in.
    piece = (b"a" * 65535 + b"\n") * 16  # 1 MiB
    scrubber = scrub.StreamScrubber(NEEDLES)
    tracemalloc.start()
    try:
        sent = 0
        for index in range(20):
            chunk = piece if index != 13 else piece[:-40] + GH_SECRET.encode()[:20]
            if index == 14:
                chunk = GH_SECRET.encode()[20:] + piece[len(GH_SECRET) - 20 :]
            for out in scrubber(chunk):
                sent += len(out)
                assert GH_SECRET.encode()[:20] not in out or scrub.MARKER in out
        for out in scrubber(b""):
            sent += len(out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert scrubber.found == {"T"}
    assert sent > 19 * MIB
    # A few copies of one 1 MiB piece (the run stage masks and decodes it), never the body.
    assert peak < 5 * MIB, peak


def test_a_request_body_three_times_its_bound_is_scanned_in_bounded_memory() -> None:
    scanner = dlp.BodyScanner("body", SECRETS)
    piece = bytes(MIB)
    tracemalloc.start()
    try:
        for index in range(24):
            scanner.feed(piece if index != 23 else piece + GH_SECRET.encode())
        found = scanner.close()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [f.kind for f in found] == ["secret:T"]
    # The scan window and the piece in hand, a few times over: never the 24 MiB body.
    assert peak < 8 * MIB, peak


def test_a_decompression_bomb_stops_at_the_bound_in_bounded_memory() -> None:
    bomb = dlp_cases.gzip_of_zeros(64)
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(decoding.TooLarge, match="more than 16 MiB"):
            for _ in decoding.decode_stream(decoding.chunks(bomb, 4096), ["gzip"], 16 * MIB):
                pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * MIB, peak


def test_a_response_bomb_is_cut_with_a_note() -> None:
    bomb = gzip.compress(bytes(4 * MIB))
    scrubber = scrub.StreamScrubber(NEEDLES, ["gzip"])
    scrubber.decoder = decoding.Decoder(["gzip"], MIB)
    out = b"".join(scrubber(bomb)) + b"".join(scrubber(b""))
    assert len(out) < 2 * MIB
    assert out.endswith(b"decodes to more than 1 MiB]\n")
    assert "more than 1 MiB" in scrubber.problem


@pytest.mark.parametrize(
    "header",
    ["gzip", "gzip, gzip", "x-gzip", "deflate", "br", "zstd", "identity", "IDENTITY, gzip"],
)
def test_decoder_undoes_each_declared_encoding(header: str) -> None:
    from tests.unit.dlp_cases import brotli, zstd

    data = b"payload " * 1000
    encoded = data
    for name in decoding.parse(header):
        encoded = {
            "gzip": gzip.compress,
            "x-gzip": gzip.compress,
            "deflate": zlib.compress,
            "br": brotli.compress,
            "zstd": zstd.compress,
        }[name](encoded)
    assert (
        b"".join(decoding.decode_stream(decoding.chunks(encoded, 13), decoding.parse(header)))
        == data
    )


@pytest.mark.parametrize(
    ("blob", "names"),
    [(b"not gzip", ["gzip"]), (gzip.compress(b"x" * 100)[:20], ["gzip"]), (b"x", ["compress"])],
    ids=["not gzip", "cut gzip", "unknown coding"],  # the same ids every run (gzip has a time)
)
def test_decoder_refuses_what_does_not_decode(blob: bytes, names: list[str]) -> None:
    with pytest.raises(decoding.DecodeError):
        b"".join(decoding.decode_stream([blob], names))


# -- the addon -------------------------------------------------------------------------------


def test_response_is_scrubbed_logged_and_reframed(env: Env) -> None:  # noqa: F811
    flow = make_flow("GET", "https://api.github.com/repos/o/r")
    env.fire(HttpRequestHook(flow))
    assert flow.response is None
    assert flow.request.headers["Authorization"] == f"Bearer {GH_SECRET}"  # injected
    flow.response = http.Response.make(200)
    flow.response.headers.fields = (
        (b"Content-Encoding", b"gzip"),
        (b"Content-Length", b"5000000"),  # big: streamed
        (b"X-Echo", f"Bearer {GH_SECRET}".encode()),
    )
    env.fire(HttpResponseHeadersHook(flow))
    assert flow.response.headers["x-echo"] == "Bearer [bottle:scrubbed]"
    assert "content-encoding" not in flow.response.headers
    assert "content-length" not in flow.response.headers
    assert flow.response.headers["transfer-encoding"] == "chunked"
    stream = flow.response.stream
    assert callable(stream)
    blob = gzip.compress(f"you sent {GH_SECRET} and {EXTRA_SECRET}".encode())
    out = b"".join(b"".join(stream(blob[i : i + 5])) for i in range(0, len(blob), 5))
    out += b"".join(stream(b""))
    assert out == b"you sent [bottle:scrubbed] and [bottle:scrubbed]"
    env.fire(HttpResponseHook(flow))
    (line,) = env.log_lines()
    assert line["decision"] == "allow"
    assert sorted(line["scrubbed"]) == [
        "secret:EXTRA_SECRET in body",
        "secret:GH_TOKEN in body",
        "secret:GH_TOKEN in headers",
    ]
    assert GH_SECRET not in env.log.read_text()


def test_a_clean_response_is_streamed_unchanged_and_logged_without_scrubbed(env: Env) -> None:  # noqa: F811
    flow = make_flow("GET", "https://pypi.org/simple/")
    env.fire(HttpRequestHook(flow))
    flow.response = http.Response.make(200, b"", {"X-A": "b"})
    del flow.response.headers["content-length"]  # unknown length: streamed
    env.fire(HttpResponseHeadersHook(flow))
    stream = flow.response.stream
    assert callable(stream)
    out = b"".join(stream(b"hello ")) + b"".join(stream(b"world")) + b"".join(stream(b""))
    assert out == b"hello world"
    env.fire(HttpResponseHook(flow))
    assert env.log_lines()[0]["scrubbed"] is None


@pytest.mark.parametrize("streamed", [True, False])
def test_an_echo_in_the_reason_phrase_or_a_trailer_is_scrubbed(
    env: Env,  # noqa: F811
    streamed: bool,
) -> None:
    # mitmproxy sends trailers after the response hook, the body streamed or held: both ways.
    flow = make_flow("GET", "https://api.github.com/repos/o/r")
    env.fire(HttpRequestHook(flow))
    body = b"fine"
    flow.response = http.Response.make(200, body)
    flow.response.headers["Content-Length"] = str(5 * MIB if streamed else len(body))
    flow.response.reason = f"OK Bearer {GH_SECRET}"
    flow.response.trailers = http.Headers(
        [(b"X-Echo", f"Bearer {GH_SECRET}".encode()), (EXTRA_SECRET.encode(), b"as a name")]
    )
    env.fire(HttpResponseHeadersHook(flow))
    assert flow.response.reason == "OK Bearer [bottle:scrubbed]"
    assert bool(flow.response.stream) is streamed
    env.fire(HttpResponseHook(flow))
    assert flow.response.trailers is not None
    assert flow.response.trailers.fields == (
        (b"X-Echo", b"Bearer [bottle:scrubbed]"),
        (scrub.MARKER_HEADER, b"as a name"),
    )
    (line,) = env.log_lines()
    assert sorted(line["scrubbed"]) == [
        "secret:EXTRA_SECRET in trailers",
        "secret:GH_TOKEN in reason phrase",
        "secret:GH_TOKEN in trailers",
    ]
    assert GH_SECRET not in env.log.read_text() and EXTRA_SECRET not in env.log.read_text()


@pytest.mark.parametrize(
    ("url", "refused"),
    [("https://api.github.com/repos/o/r", True), ("https://warn.example.com/u", False)],
)
def test_a_secret_in_a_request_trailer_is_found(env: Env, url: str, refused: bool) -> None:  # noqa: F811
    # The body is held (dlp: block) or streamed (warn): the trailers wait for the request
    # hook either way (mitmproxy sends them after it), so a finding there still refuses.
    flow = make_flow("POST", url, headers={"Transfer-Encoding": "chunked"}, content=b"x")
    flow.request.trailers = http.Headers([(b"X-Checksum", EXTRA_SECRET.encode())])
    env.fire(HttpRequestHook(flow))
    if refused:
        assert flow.response is not None and flow.response.status_code == 403
        assert "EXTRA_SECRET" in flow.response.get_text()
    else:
        assert flow.response is None
        flow.response = http.Response.make(200, b"ok")
        env.fire(HttpResponseHook(flow))
    line = env.log_lines()[-1]
    assert line["decision"] == ("dlp-block" if refused else "dlp-warn")
    assert line["findings"] == ["secret:EXTRA_SECRET (plain) in header x-checksum"]


def test_websocket_message_from_upstream_is_scrubbed(env: Env) -> None:  # noqa: F811
    flow = make_flow("GET", "https://pypi.org/socket")
    env.fire(HttpRequestHook(flow))
    flow.websocket = websocket.WebSocketData()
    echo = websocket.WebSocketMessage(Opcode.TEXT, False, f"you said {EXTRA_SECRET}".encode())
    flow.websocket.messages.append(echo)
    env.fire(WebsocketMessageHook(flow))
    assert echo.content == b"you said [bottle:scrubbed]"
    assert not echo.dropped
    line = env.log_lines()[-1]
    assert line["scrubbed"] == ["secret:EXTRA_SECRET in websocket message"]


@pytest.mark.parametrize(
    ("url", "refused", "decision"),
    [
        ("https://api.github.com/repos/o/r", True, "dlp-block"),  # credentialed, dlp: block
        ("https://upload.example.com/u", True, "dlp-block"),  # no credential, dlp: block
        ("https://warn.example.com/u", False, "allow"),  # dlp: warn: sent, logged as unscanned
        ("https://off.example.com/u", False, "allow"),  # dlp: off: not looked at
    ],
)
def test_undecodable_request_body_is_refused_wherever_dlp_blocks(
    env: Env,  # noqa: F811
    url: str,
    refused: bool,
    decision: str,
) -> None:
    # A declared encoding that does not decode hides the body from DLP, credential or not.
    # (Of a type no server reads fields from: as a form, the method check refuses it first,
    # test_a_body_that_could_claim_another_method_is_refused_with_why.)
    flow = make_flow(
        "POST",
        url,
        headers={"Content-Encoding": "gzip", "Content-Type": "application/octet-stream"},
    )
    flow.request.raw_content = b"x"
    env.fire(HttpRequestHook(flow))
    if refused:
        assert flow.response is not None and flow.response.status_code == 403
        assert "does not decode" in flow.response.get_text()
    else:
        assert flow.response is None
        flow.response = http.Response.make(200, b"ok")
        env.fire(HttpResponseHook(flow))
    line = env.log_lines()[-1]
    assert line["decision"] == decision
    if "warn" in url:
        assert "body not scanned whole" in line["reason"]


def small_response(env: Env, body: bytes, encoding: str) -> http.HTTPFlow:  # noqa: F811
    flow = make_flow("GET", "https://pypi.org/simple/")
    env.fire(HttpRequestHook(flow))
    flow.response = http.Response.make(200)
    flow.response.headers["Content-Encoding"] = encoding
    flow.response.raw_content = body
    flow.response.headers["Content-Length"] = str(len(body))
    env.fire(HttpResponseHeadersHook(flow))
    assert not flow.response.stream  # small: held whole
    env.fire(HttpResponseHook(flow))
    return flow


def test_small_compressed_response_is_scrubbed_whole_and_logged(env: Env) -> None:  # noqa: F811
    flow = small_response(env, gzip.compress(f"echo {EXTRA_SECRET}!".encode()), "gzip")
    assert flow.response is not None
    assert flow.response.raw_content == b"echo [bottle:scrubbed]!"
    assert "content-encoding" not in flow.response.headers
    assert flow.response.headers["content-length"] == str(len(flow.response.raw_content))
    assert env.log_lines()[0]["scrubbed"] == ["secret:EXTRA_SECRET in body"]


def test_small_clean_response_is_sent_on_as_it_came(env: Env) -> None:  # noqa: F811
    blob = gzip.compress(b"nothing to see")
    flow = small_response(env, blob, "gzip")
    assert flow.response is not None
    assert flow.response.raw_content == blob
    assert flow.response.headers["content-encoding"] == "gzip"


def test_small_bomb_response_is_withheld(env: Env) -> None:  # noqa: F811
    flow = small_response(env, dlp_cases.gzip_of_zeros(80), "gzip")
    assert flow.response is not None
    assert flow.response.raw_content is not None
    assert flow.response.raw_content.startswith(b"[bottle: this response was withheld")
    assert "withheld" in env.log_lines()[0]["reason"]


@pytest.mark.parametrize(
    ("method", "status"), [("GET", 101), ("GET", 204), ("GET", 304), ("HEAD", 200)]
)
def test_bodiless_responses_keep_their_framing(env: Env, method: str, status: int) -> None:  # noqa: F811
    flow = make_flow(method, "https://pypi.org/socket")
    env.fire(HttpRequestHook(flow))
    flow.response = http.Response.make(status)
    flow.response.headers.fields = ((b"Upgrade", b"websocket"), (b"X-Echo", EXTRA_SECRET.encode()))
    env.fire(HttpResponseHeadersHook(flow))
    assert flow.response.headers["x-echo"] == "[bottle:scrubbed]"
    assert "transfer-encoding" not in flow.response.headers
    assert not flow.response.stream


def stream_all(scrubber: scrub.StreamScrubber, data: bytes, size: int) -> bytes:
    out = b"".join(b"".join(scrubber(data[i : i + size])) for i in range(0, len(data), size))
    return out + b"".join(scrubber(b""))


def test_a_clean_undeclared_gzip_download_goes_on_byte_for_byte() -> None:
    # A .tar.gz from a package index: no Content-Encoding, and its hash must hold.
    blob = gzip.compress(bytes(range(256)) * 20_000 + b"no secret here" * 1000)
    scrubber = scrub.StreamScrubber(NEEDLES)
    assert stream_all(scrubber, blob, 64 << 10) == blob
    assert not scrubber.found and not scrubber.problem


def test_an_undeclared_compressed_secret_is_cut_before_any_of_it_goes() -> None:
    clean = bytes(range(256)) * 8192  # 2 MiB that compresses poorly enough to span pieces
    for name, pack in (
        ("gzip", gzip.compress),
        ("zstd", dlp_cases._zstd),
        ("deflate", dlp_cases._raw_deflate),
    ):
        blob = pack(clean + b" token=" + GH_SECRET.encode() + b" " + clean)
        scrubber = scrub.StreamScrubber(NEEDLES)
        out = stream_all(scrubber, blob, 16 << 10)
        assert scrubber.found == {"T"} and "secret was found" in scrubber.problem, name
        assert 0 < len(out) < len(blob), name  # what came before went on; the rest did not
        for seen in partly_decoded(out.split(b"\n[bottle:")[0]):
            assert GH_SECRET.encode()[:8] not in seen, name


def test_what_came_before_an_undeclared_secret_goes_on_however_the_body_was_read() -> None:
    # mitmproxy may hand the whole body over in one read: the clean part still goes first.
    noise = random.Random(0).randbytes(2 << 20)  # a download: it does not compress
    blob = gzip.compress(noise + b" token=" + GH_SECRET.encode())
    for size in (len(blob), 1 << 20, 4096):
        scrubber = scrub.StreamScrubber(NEEDLES)
        out = stream_all(scrubber, blob, size)
        assert scrubber.found == {"T"}, size
        kept = out.split(b"\n[bottle:")[0]
        assert kept[:2] == b"\x1f\x8b" and len(kept) > len(blob) // 2, size
        assert blob.startswith(kept), size


def _gzip_with_comment(data: bytes, comment_bytes: int) -> bytes:
    """A gzip member whose FCOMMENT (ignored by every reader) comes before ``data``."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = b"\x1f\x8b\x08\x10\0\0\0\0\x00\xff" + b"A" * comment_bytes + b"\0"
    body = packer.compress(data) + packer.flush()
    return head + body + struct.pack("<II", zlib.crc32(data), len(data))


@pytest.mark.parametrize(
    "outer", [gzip.compress, zlib.compress, dlp_cases._raw_deflate, dlp_cases._zstd]
)
def test_a_layer_inside_that_cannot_be_scanned_cuts_the_body(outer: Any) -> None:
    # Review 5, F1: a 5 MiB gzip comment makes the inner layer hold more than egress holds,
    # so it stops scanning; the outer layer (5 KB on the wire) went on whole, and the agent
    # decoded the secret out of it.
    inner = _gzip_with_comment(b"hello " + GH_SECRET.encode() + b" bye", 5 << 20)
    scrubber = scrub.StreamScrubber(NEEDLES)
    out = stream_all(scrubber, outer(inner), 64 << 10)
    assert "could not be scanned" in scrubber.problem
    for seen in partly_decoded(out.split(b"\n[bottle:")[0]):
        assert GH_SECRET.encode()[:8] not in seen
    kept = out.split(b"\n[bottle:")[0]
    with contextlib.suppress(Exception):
        kept = gzip.decompress(zlib.decompress(kept, 47))
    assert GH_SECRET.encode() not in kept


def test_an_event_stream_is_not_held_back() -> None:
    # Server-sent events end with a blank line: each goes on whole as soon as it came.
    scrubber = scrub.StreamScrubber(NEEDLES)
    for text in (b'data: {"delta": "hello"}\n\n', b"event: ping\ndata: 1234567890abcdef\n\n"):
        assert b"".join(scrubber(text)) == text


def test_a_secret_broken_across_lines_inside_a_long_run_is_scrubbed() -> None:
    # A base64 attachment longer than a run is held (MAX_RUN), the secret deep inside it.
    inner = base64.encodebytes(b"x" * 150_000 + GH_SECRET.encode() + b"y" * 150_000)
    data = b"begin\r\n" + inner.replace(b"\n", b"\r\n") + b"end\r\n"
    scrubber = scrub.StreamScrubber(NEEDLES)
    out = stream_all(scrubber, data, 4096)
    assert scrubber.found == {"T"}
    assert not dlp.scan_body(out, "", SECRETS)[0]
    assert out.startswith(b"begin\r\n") and out.endswith(b"end\r\n")


def test_an_undeclared_compressed_stream_is_checked_in_bounded_memory() -> None:
    packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    piece = bytes(range(256)) * 4096  # 1 MiB
    scrubber = scrub.StreamScrubber(NEEDLES)
    tracemalloc.start()
    try:
        sent = 0
        for _ in range(40):
            for out in scrubber(packer.compress(piece)):
                sent += len(out)
        for out in scrubber(packer.flush()):
            sent += len(out)
        for out in scrubber(b""):
            sent += len(out)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not scrubber.problem and sent > 0
    assert peak < 16 * MIB, peak  # pieces and decoders, never the 40 MiB
