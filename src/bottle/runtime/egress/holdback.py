"""Request bodies egress holds to scan: bounded, and a refusal answered before any is read.

mitmproxy reads a body it does not stream whole into memory, with no bound when the length is
not declared (HTTP/1 chunked, HTTP/2 or 3 without Content-Length), and an answer set at
``requestheaders`` waits until the whole body has been read. A streamed body cannot be held
back instead: its headers leave for upstream first, and a kill is only seen at hook points
(mitmproxy #4711), so a body found bad half-way would already be on its way.

So egress changes the one state of mitmproxy's ``HttpStream`` that reads a held body
(:func:`install`, once per process, from :mod:`.addon`):

- a flow answered at ``requestheaders`` (a refusal) gets its answer at once; the body that
  follows is read and dropped, never kept (a long or undeclared one also gets
  ``Connection: close``, so the client stops sending);
- a held body that grows past :data:`~.log.MAX_HELD_BODY` is dropped, the flow is refused
  with the JSON reason ``on_overflow`` sets, and the rest is dropped as above.

Nothing of a held body goes upstream before the ``request`` hook has scanned all of it
(mitmproxy opens the upstream connection only then), so a refused body never leaves.

And one fix on the way out: mitmproxy turns an HTTP/2 or 3 request into HTTP/1 for an HTTP/1
upstream without framing a body that declares no length, so the upstream read no body and took
the body's bytes for the next request on its connection (a request egress never saw). Such a
body now goes chunked.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator
from typing import Any

from mitmproxy import http
from mitmproxy.proxy.layers.http import DropStream, HttpStream, SendHttp
from mitmproxy.proxy.layers.http._events import (
    RequestData,
    RequestEndOfMessage,
    RequestHeaders,
    ResponseEndOfMessage,
)
from mitmproxy.proxy.layers.http._hooks import HttpResponseHeadersHook
from mitmproxy.proxy.layers.http._http1 import Http1Client

from bottle.runtime.egress.log import MAX_HELD_BODY, declared_length

_Commands = Generator[Any, Any, None]

#: Set on the HttpStream class when installed (the originals, to call and to undo).
_ORIGINAL = "_bottle_original_states"


def install(on_overflow: Callable[[http.HTTPFlow], None], limit: int = MAX_HELD_BODY) -> None:
    """Patch mitmproxy's HttpStream (once): ``on_overflow(flow)`` must set ``flow.response``
    to the refusal of a body that grew past ``limit`` bytes."""
    originals = getattr(HttpStream, _ORIGINAL, None)
    if originals is None:
        originals = (
            HttpStream.state_wait_for_request_headers,
            HttpStream.state_consume_request_body,
            Http1Client.send,
        )
        setattr(HttpStream, _ORIGINAL, originals)
    wait_for_headers, consume_body, send_upstream = originals

    def send(self: Http1Client, event: Any) -> _Commands:
        yield from send_upstream(self, framed(event))

    def state_wait_for_request_headers(self: HttpStream, event: Any) -> _Commands:
        yield from wait_for_headers(self, event)
        if (
            not event.end_stream
            and self.flow.response is not None
            and self.client_state == self.state_consume_request_body
        ):
            yield from _answer_now(self)

    def state_consume_request_body(self: HttpStream, event: Any) -> _Commands:
        if isinstance(event, RequestData) and len(self.request_body_buf) + len(event.data) > limit:
            _clear(self)
            on_overflow(self.flow)
            if self.flow.response is None:  # pragma: no cover - on_overflow must answer
                self.flow.response = http.Response.make(403, b"request body too long\n")
            yield from _answer_now(self)
            return
        yield from consume_body(self, event)

    HttpStream.state_wait_for_request_headers = state_wait_for_request_headers  # type: ignore[method-assign]
    HttpStream.state_consume_request_body = state_consume_request_body  # type: ignore[method-assign]
    Http1Client.send = send  # type: ignore[method-assign]


def framed(event: Any) -> Any:
    """``event`` as an HTTP/1 upstream must get it: the headers of an HTTP/2 or 3 request with
    a body of no declared length say ``Transfer-Encoding: chunked`` (the HTTP/1 client then
    frames each piece). Anything else is returned as it is."""
    if not isinstance(event, RequestHeaders) or event.end_stream:
        return event
    request = event.request
    if not (request.is_http2 or request.is_http3) or "content-length" in request.headers:
        return event
    request = request.copy()
    request.headers["transfer-encoding"] = "chunked"
    return dataclasses.replace(event, request=request)


def uninstall() -> None:
    """Undo :func:`install` (tests)."""
    originals = getattr(HttpStream, _ORIGINAL, None)
    if originals is not None:
        HttpStream.state_wait_for_request_headers = originals[0]  # type: ignore[method-assign]
        HttpStream.state_consume_request_body = originals[1]  # type: ignore[method-assign]
        Http1Client.send = originals[2]  # type: ignore[method-assign]
        delattr(HttpStream, _ORIGINAL)


def _clear(stream: HttpStream) -> None:
    held: Any = stream.request_body_buf  # a bytearray-like buffer, untyped upstream
    held.clear()


def _answer_now(stream: HttpStream) -> _Commands:
    """Send the flow's response now, as mitmproxy does for one set at the ``request`` hook,
    and drop whatever of the request body is still to come."""
    flow = stream.flow
    assert flow.response is not None
    length = declared_length(flow.request)
    if length is None or length > MAX_HELD_BODY or stream.request_body_buf:
        flow.response.headers["connection"] = "close"
    _clear(stream)
    flow.response.timestamp_start = time.time()
    stream.client_state = _Discard(stream)
    yield HttpResponseHeadersHook(flow)
    if (yield from stream.check_killed(True)):
        return
    yield from stream.send_response()
    yield SendHttp(ResponseEndOfMessage(stream.stream_id), stream.context.client)


class _Discard:
    """The client state of a flow already answered: the rest of its body is read and dropped."""

    def __init__(self, stream: HttpStream) -> None:
        self.stream = stream

    def __call__(self, event: Any) -> _Commands:
        if isinstance(event, RequestEndOfMessage):
            self.stream.client_state = self.stream.state_done
            yield DropStream(self.stream.stream_id)
