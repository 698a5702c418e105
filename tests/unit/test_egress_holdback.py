"""holdback's changes to mitmproxy: installed once, and HTTP/2 bodies framed for HTTP/1.

What the patched states do on the wire (a refusal answered before the body is read, a held
body bounded, nothing of a refused one upstream) is proven against a real upstream in
tests/integration/test_dlp_wire.py; these are the pure parts."""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.proxy.layers.http import HttpStream
from mitmproxy.proxy.layers.http._events import RequestHeaders
from mitmproxy.proxy.layers.http._http1 import Http1Client

from bottle.runtime.egress import holdback


def request(version: str, headers: dict[str, str]) -> http.Request:
    req = http.Request.make("POST", "https://upstream.test/up", b"", headers)
    req.headers.pop("content-length", None)
    req.headers.update(headers)
    req.http_version = version
    return req


def test_an_http2_body_of_no_declared_length_goes_chunked_to_http1() -> None:
    event = RequestHeaders(1, request("HTTP/2.0", {}), end_stream=False)
    out = holdback.framed(event)
    assert out.request.headers["transfer-encoding"] == "chunked"
    assert "transfer-encoding" not in event.request.headers  # the flow's own is untouched


def test_framing_is_left_alone_where_it_is_already_known() -> None:
    for event in (
        RequestHeaders(1, request("HTTP/2.0", {"content-length": "3"}), end_stream=False),
        RequestHeaders(1, request("HTTP/2.0", {}), end_stream=True),  # no body at all
        RequestHeaders(1, request("HTTP/1.1", {"transfer-encoding": "chunked"}), False),
    ):
        assert holdback.framed(event) is event


def _states() -> tuple[object, ...]:
    return (
        HttpStream.state_wait_for_request_headers,
        HttpStream.state_consume_request_body,
        Http1Client.send,
    )


def test_install_patches_once_and_uninstall_restores() -> None:
    was, originals = _states(), getattr(HttpStream, holdback._ORIGINAL, None)
    holdback.uninstall()
    before = _states()
    try:
        holdback.install(lambda flow: None)
        assert all(now is not then for now, then in zip(_states(), before, strict=True))
        holdback.install(lambda flow: None)  # again: wraps the originals, not the patch
        assert getattr(HttpStream, holdback._ORIGINAL) == before
        holdback.uninstall()
        assert _states() == before
    finally:  # as this process had it (the addon module installs it on import)
        HttpStream.state_wait_for_request_headers = was[0]  # type: ignore[method-assign]
        HttpStream.state_consume_request_body = was[1]  # type: ignore[method-assign]
        Http1Client.send = was[2]  # type: ignore[method-assign]
        if originals is not None:
            setattr(HttpStream, holdback._ORIGINAL, originals)
