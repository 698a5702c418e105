"""Every case of the DLP table (``dlp_cases``) through the real egress addon: a case marked
caught is refused (requests) or scrubbed (responses), and one marked not caught really is
not, so docs/dlp.md, rendered from the same table, says what egress does."""

from __future__ import annotations

import contextlib
import importlib.util
import zlib
from pathlib import Path

import brotli  # type: ignore[import-untyped]
import pytest
from mitmproxy import http
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHeadersHook, HttpResponseHook

from bottle.runtime.egress import dlp
from tests.unit import dlp_cases
from tests.unit.test_egress_addon import EXTRA_SECRET, Env, env, make_flow  # noqa: F401

ROOT = Path(__file__).resolve().parents[2]


def refused(flow: http.HTTPFlow) -> bool:
    return flow.response is not None and flow.response.headers.get("x-bottle-egress") in {
        "dlp-block"
    }


@pytest.mark.parametrize("case", dlp_cases.REQUEST_CASES, ids=lambda c: c.form)
def test_request_case(env: Env, case: dlp_cases.Case) -> None:  # noqa: F811
    caught = False
    for req in case.build(EXTRA_SECRET):
        # Of a type no server reads fields from unless the case says otherwise: a POST
        # without one is a form to Rack, whose _method the guards check (and, when it does
        # not decode, refuse) before DLP looks (test_egress_addon covers that refusal).
        headers = {"Content-Type": "application/octet-stream", **dict(req.headers)}
        flow = make_flow("POST", f"https://{req.host}{req.path}", headers=headers)
        flow.request.raw_content = req.body  # as sent: make() would encode it again
        env.fire(HttpRequestHook(flow))
        if refused(flow):
            caught = True
            assert flow.response is not None and flow.response.status_code == 403
            assert EXTRA_SECRET not in flow.response.get_text(strict=False)
        else:
            assert flow.response is None, flow.response
    assert caught is case.caught
    assert EXTRA_SECRET not in (env.log.read_text() if env.log.exists() else "")


def through_response(env: Env, resp: dlp_cases.Response) -> tuple[http.HTTPFlow, bytes]:  # noqa: F811
    """A GET through the addon, then the upstream's answer as mitmproxy streams it."""
    flow = make_flow("GET", "https://pypi.org/simple/")
    env.fire(HttpRequestHook(flow))
    assert flow.response is None
    flow.response = http.Response.make(200)
    flow.response.headers.fields = tuple((k.encode(), v.encode()) for k, v in resp.headers)
    env.fire(HttpResponseHeadersHook(flow))
    stream = flow.response.stream
    assert callable(stream)
    out = b""
    for start in range(0, len(resp.body), resp.chunk):
        out += b"".join(stream(resp.body[start : start + resp.chunk]))
    out += b"".join(stream(b""))
    return flow, out


@pytest.mark.parametrize("case", dlp_cases.RESPONSE_CASES, ids=lambda c: c.form)
def test_response_case(env: Env, case: dlp_cases.ResponseCase) -> None:  # noqa: F811
    flow, out = through_response(env, case.build(EXTRA_SECRET))
    assert flow.response is not None
    secrets = env.addon.current.secrets
    headers = b"\n".join(k + b": " + v for k, v in flow.response.headers.fields)
    visible = dlp.scan_body(headers, "", secrets)[0]
    for seen in (out, *partly_decoded(out)):  # what the agent could get out of it
        visible += dlp.scan_body(seen, "", secrets)[0]
    assert (not visible) is case.scrubbed, visible
    assert "content-encoding" not in flow.response.headers


@pytest.mark.parametrize("case", dlp_cases.RESPONSE_CASES, ids=lambda c: c.form)
def test_response_case_held_whole(env: Env, case: dlp_cases.ResponseCase) -> None:  # noqa: F811
    """The same cases as a small response with a length: held whole, scrubbed in one go."""
    resp = case.build(EXTRA_SECRET)
    flow = make_flow("GET", "https://pypi.org/simple/")
    env.fire(HttpRequestHook(flow))
    flow.response = http.Response.make(200)
    fields = [(k, v) for k, v in resp.headers if k.lower() != "transfer-encoding"]
    fields.append(("Content-Length", str(len(resp.body))))
    flow.response.headers.fields = tuple((k.encode(), v.encode()) for k, v in fields)
    env.fire(HttpResponseHeadersHook(flow))
    assert not flow.response.stream
    flow.response.raw_content = resp.body
    env.fire(HttpResponseHook(flow))
    out = flow.response.raw_content or b""
    secrets = env.addon.current.secrets
    headers = b"\n".join(k + b": " + v for k, v in flow.response.headers.fields)
    visible = dlp.scan_body(headers, "", secrets)[0]
    for seen in (out, *partly_decoded(out)):
        visible += dlp.scan_body(seen, "", secrets)[0]
    assert (not visible) is case.scrubbed, visible
    assert EXTRA_SECRET not in (env.log.read_text() if env.log.exists() else "")


def partly_decoded(data: bytes) -> list[bytes]:
    """``data`` decoded as far as it goes in each compression (a cut body too)."""
    out: list[bytes] = []
    for wbits in (16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS):
        with contextlib.suppress(zlib.error):
            out.append(zlib.decompressobj(wbits).decompress(data))
    decompressor = brotli.Decompressor()
    with contextlib.suppress(brotli.error):
        out.append(decompressor.process(data))
    with contextlib.suppress(Exception):
        out.append(dlp_cases.zstd.ZstdDecompressor().decompress(data))
    return out


def load_script() -> object:
    spec = importlib.util.spec_from_file_location("dlp_table", ROOT / "scripts" / "dlp_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_table_is_rendered_from_these_cases() -> None:
    script = load_script()
    rendered = script.render()  # type: ignore[attr-defined]
    assert (ROOT / "docs" / "dlp.md").read_text(encoding="utf-8") == rendered, (
        "docs/dlp.md is out of date: run `uv run python scripts/dlp_table.py`"
    )
    for case in dlp_cases.REQUEST_CASES:
        assert case.form in rendered
