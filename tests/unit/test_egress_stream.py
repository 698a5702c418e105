"""Request bodies decided at ``requestheaders``: streamed where no scan is needed, scanned as
they stream on ``dlp: warn``, held (bounded) on ``dlp: block``, refused unread when too long.

Flows are as mitmproxy hands them to ``requestheaders``: headers only, the body not read yet
(``content`` is None), then the body pieces through the stream callable the addon set.
"""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.flow import Error
from mitmproxy.proxy.layers.http import (
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHook,
)

from bottle.runtime.egress.log import MAX_HELD_BODY
from tests.unit.test_egress_addon import EXTRA_SECRET, GH_SECRET, Env, env, make_flow  # noqa: F401


def headers_only(method: str, url: str, headers: dict[str, str]) -> http.HTTPFlow:
    flow = make_flow(method, url)
    flow.request.data.content = None  # what mitmproxy has at requestheaders
    flow.request.headers.pop("content-length", None)  # make() adds one for its empty body
    flow.request.headers.update(headers)
    return flow


def killed(flow: http.HTTPFlow) -> bool:
    return flow.error is not None and flow.error.msg == Error.KILLED_MESSAGE


def answer(env: Env, flow: http.HTTPFlow) -> None:  # noqa: F811
    flow.response = http.Response.make(200, b"ok")
    env.fire(HttpResponseHook(flow))


def test_a_dlp_off_route_streams_a_long_body_untouched(env: Env) -> None:  # noqa: F811
    length = str(10 * MAX_HELD_BODY)
    flow = headers_only("POST", "https://off.example.com/up", {"content-length": length})
    env.fire(HttpRequestHeadersHook(flow))
    assert flow.response is None and not killed(flow)
    assert flow.request.stream is True


def test_a_bodyless_request_is_never_streamed_nor_refused(env: Env) -> None:  # noqa: F811
    for url in ("https://off.example.com/", "https://upload.example.com/", "https://pypi.org/x"):
        flow = headers_only("GET", url, {})
        env.fire(HttpRequestHeadersHook(flow))
        assert not flow.request.stream and not killed(flow), url


def test_a_block_route_holds_a_body_within_the_bound_and_scans_it(env: Env) -> None:  # noqa: F811
    body = f"data={EXTRA_SECRET}".encode()
    flow = headers_only("POST", "https://upload.example.com/u", {"content-length": str(len(body))})
    env.fire(HttpRequestHeadersHook(flow))
    assert flow.request.stream is False and flow.response is None
    flow.request.data.content = body  # mitmproxy read it whole, then fires request
    env.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert "secret:EXTRA_SECRET" in flow.response.get_text()


def test_a_block_route_refuses_a_declared_body_over_the_bound_unread(env: Env) -> None:  # noqa: F811
    flow = headers_only("POST", "https://upload.example.com/u", {"content-length": over()})
    env.fire(HttpRequestHeadersHook(flow))
    # Answered with the JSON reason (holdback sends it before reading any of the body).
    assert flow.response is not None and flow.response.status_code == 403 and not killed(flow)
    assert flow.request.stream is False
    assert "cannot be scanned before it is sent" in flow.response.get_text()
    line = env.log_lines()[-1]
    assert line["decision"] == "dlp-block"
    assert "was not read" in line["reason"]


def test_a_block_route_holds_a_chunked_body_and_refuses_it_past_the_bound(env: Env) -> None:  # noqa: F811
    flow = headers_only("POST", "https://upload.example.com/u", {"transfer-encoding": "chunked"})
    env.fire(HttpRequestHeadersHook(flow))
    assert flow.response is None and flow.request.stream is False  # held, not refused
    env.addon.scan.too_long(flow)  # what holdback calls when the held part passes the bound
    assert flow.response is not None and flow.response.status_code == 403
    assert "of undeclared length cannot be scanned" in flow.response.get_text()
    assert env.log_lines()[-1]["decision"] == "dlp-block"


def over() -> str:
    return str(MAX_HELD_BODY + 1)


def test_a_refusal_is_answered_whatever_the_body_length(env: Env) -> None:  # noqa: F811
    for length in ("10", over()):
        headers = {"content-length": length, "expect": "100-continue"}
        flow = headers_only("POST", "https://nowhere.example.net/x", headers)
        env.fire(HttpRequestHeadersHook(flow))
        assert flow.response is not None and flow.response.status_code == 403
        assert not killed(flow) and flow.request.stream is False
        assert "expect" not in flow.request.headers  # no 100 Continue: the body stays home
        line = env.log_lines()[-1]
        assert line["decision"] == "refuse" and "no route names host" in line["reason"]


def test_a_warn_route_streams_and_scans_across_pieces(env: Env) -> None:  # noqa: F811
    flow = headers_only("POST", "https://warn.example.com/u", {"transfer-encoding": "chunked"})
    env.fire(HttpRequestHeadersHook(flow))
    stream = flow.request.stream
    assert callable(stream) and flow.response is None
    half = len(EXTRA_SECRET) // 2
    pieces = [b"a" * 70_000 + EXTRA_SECRET[:half].encode(), EXTRA_SECRET[half:].encode(), b""]
    assert [stream(piece) for piece in pieces] == pieces  # every byte goes on, as it came
    env.fire(HttpRequestHook(flow))
    answer(env, flow)
    line = env.log_lines()[-1]
    assert line["decision"] == "dlp-warn"
    assert line["findings"] == ["secret:EXTRA_SECRET (plain) in body"]


def test_a_warn_route_scans_a_streamed_gzip_body_decoded(env: Env) -> None:  # noqa: F811
    import gzip

    packed = gzip.compress(f"token={EXTRA_SECRET}".encode())
    headers = {"content-encoding": "gzip", "content-length": str(len(packed))}
    flow = headers_only("POST", "https://warn.example.com/u", headers)
    env.fire(HttpRequestHeadersHook(flow))
    stream = flow.request.stream
    assert callable(stream)
    stream(packed[:7])
    stream(packed[7:])
    stream(b"")
    answer(env, flow)
    assert env.log_lines()[-1]["findings"] == ["secret:EXTRA_SECRET (plain) in body"]


def test_the_url_is_scanned_and_the_credential_set_at_requestheaders(env: Env) -> None:  # noqa: F811
    leak = headers_only("GET", f"https://pypi.org/simple/?q={EXTRA_SECRET}", {})
    env.fire(HttpRequestHeadersHook(leak))
    assert leak.response is not None and leak.response.status_code == 403
    flow = headers_only(
        "POST", "https://api.github.com/repos/o/r", {"content-length": "2", "authorization": "x"}
    )
    env.fire(HttpRequestHeadersHook(flow))
    assert flow.response is None
    # In place before any of the body is read or sent, and not scanned as a leak.
    assert flow.request.headers["authorization"] == f"Bearer {GH_SECRET}"
    flow.request.data.content = b"{}"
    env.fire(HttpRequestHook(flow))
    assert flow.response is None
    assert flow.request.headers.get_all("authorization") == [f"Bearer {GH_SECRET}"]
