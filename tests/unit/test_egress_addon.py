"""The egress addon, driven through mitmproxy's own test harness (no sockets, no Docker).

Routes, status and decision log are real files under tmp_path, found through the addon's
environment overrides. Hooks are fired the way mitmproxy fires them (``invoke_addon_sync``
with the real hook classes), so a misnamed hook fails here.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import hashlib
import json
import os
import signal
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from mitmproxy import http, websocket
from mitmproxy.hooks import Hook, RunningHook
from mitmproxy.proxy import context
from mitmproxy.proxy.layers.http import (
    HttpConnectHook,
    HttpErrorHook,
    HttpRequestHeadersHook,
    HttpRequestHook,
    HttpResponseHook,
)
from mitmproxy.proxy.layers.tcp import TcpStartHook
from mitmproxy.proxy.layers.tls import TlsClienthelloHook, parse_client_hello
from mitmproxy.proxy.layers.websocket import WebsocketMessageHook
from mitmproxy.test import taddons, tflow
from wsproto.frame_protocol import Opcode

from bottle.policy import Routes, parse_routes_file
from bottle.runtime.egress import __main__ as egress_main
from bottle.runtime.egress import addon as egress_addon
from bottle.runtime.egress import dlp, guards
from bottle.runtime.egress import reload as egress_reload
from bottle.runtime.egress import scan as egress_scan
from bottle.runtime.egress.addon import HOW_TO_ASK, Egress

GH_SECRET = "gh-secret-" + "9f8e7d6c5b4a" * 2  # injected by egress; the agent must not hold it
EXTRA_SECRET = "extra-" + "0123456789abcdef"  # named in BOTTLE_DLP_SECRETS

ROUTES = """\
routes:
  - host: api.github.com
    paths: ["/repos/"]
    methods: [GET, POST]
    auth: {scheme: bearer, token_ref: GH_TOKEN}
  - host: pypi.org
    methods: [GET]
  - host: upload.example.com
    methods: [POST]
  - host: "*.passthrough.example"
    passthrough: true
  - host: warn.example.com
    dlp: warn
  - host: off.example.com
    dlp: "off"
  - host: warn-post.example.com
    methods: [POST]
    dlp: warn
  - host: off-post.example.com
    methods: [POST]
    dlp: "off"
  - host: nocred.example.com
    auth: {scheme: token, token_ref: NOT_SET_TOKEN}
  - host: github.com
"""


@dataclass
class Env:
    tctx: taddons.context
    addon: Egress
    routes: Path
    status: Path
    log: Path

    def fire(self, hook: Hook) -> None:
        self.tctx.master.addons.invoke_addon_sync(self.addon, hook)

    def status_data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.status.read_text())
        return data

    def log_lines(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


# What the real parser made of each routes file these tests load, by its bytes.
_PARSED: dict[bytes, Routes] = {}


def _parse_once(data: bytes, source: str = "routes.yaml") -> Routes:
    """``parse_routes_file``, run once per distinct file of a test run.

    Nearly every test here loads the same ROUTES (a pure-Python YAML parse, milliseconds,
    hundreds of times a run). A ``Routes`` is frozen all the way down, so tests sharing one
    share nothing they could change; a file that fails to parse is parsed (and fails)
    afresh, so each error still names its own file.
    """
    parsed = _PARSED.get(data)
    if parsed is None:
        parsed = _PARSED[data] = parse_routes_file(data, source)
    return parsed


# The forms each secret value travels in, by value: every env below loads the same two.
_FORMS: dict[str, tuple[tuple[str, str], ...]] = {}
_encoded_forms = dlp.encoded_forms


def _forms_once(secret: str) -> tuple[tuple[str, str], ...]:
    """``dlp.encoded_forms``, worked out once per secret value of a test run.

    Each load of the routes expands every secret into its forms (two dozen encodings, half
    a millisecond), in every test here; the forms of a value are always the same, and a
    tuple of strings, so tests sharing them share nothing they could change.
    """
    forms = _FORMS.get(secret)
    if forms is None:
        forms = _FORMS[secret] = _encoded_forms(secret)
    return forms


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setattr(egress_reload, "parse_routes_file", _parse_once)
    monkeypatch.setattr(dlp, "encoded_forms", _forms_once)
    routes = tmp_path / "live-config" / "egress" / "routes.yaml"
    routes.parent.mkdir(parents=True)
    routes.write_text(ROUTES)
    status = tmp_path / "status" / "egress.json"
    log = tmp_path / "logs" / "egress.jsonl"
    monkeypatch.setenv("BOTTLE_EGRESS_ROUTES", str(routes))
    monkeypatch.setenv("BOTTLE_EGRESS_STATUS", str(status))
    monkeypatch.setenv("BOTTLE_EGRESS_LOG", str(log))
    monkeypatch.setenv("GH_TOKEN", GH_SECRET)
    monkeypatch.setenv("EXTRA_SECRET", EXTRA_SECRET)
    monkeypatch.setenv("BOTTLE_DLP_SECRETS", "EXTRA_SECRET")
    monkeypatch.delenv("NOT_SET_TOKEN", raising=False)
    addon = Egress()
    # Without mitmproxy's core addon (half the context's cost, every test): nothing of the
    # addon's goes through it; the shipped chain, core included, is test_egress_master's.
    with taddons.context(addon, loadcore=False) as tctx:
        e = Env(tctx, addon, routes, status, log)
        e.fire(RunningHook())
        yield e


def make_flow(
    method: str, url: str, *, headers: dict[str, str] | None = None, content: bytes = b""
) -> http.HTTPFlow:
    req = http.Request.make(method, url, content, headers or {})
    req.headers["Host"] = req.host
    return tflow.tflow(req=req)


def send(env: Env, flow: http.HTTPFlow, *, upstream: bytes = b"upstream says hi") -> None:
    """Request hook, then (if the addon let it through) a fake upstream answer."""
    env.fire(HttpRequestHook(flow))
    if flow.response is None:
        flow.response = http.Response.make(200, upstream)
    env.fire(HttpResponseHook(flow))


def body(flow: http.HTTPFlow) -> dict[str, Any]:
    assert flow.response is not None
    data: dict[str, Any] = json.loads(flow.response.get_text() or "")
    return data


# -- allow and refuse ------------------------------------------------------------------------


def test_allowed_route_passes_untouched_and_is_logged(env: Env) -> None:
    flow = make_flow("GET", "https://pypi.org/simple/pip/?x=1")
    env.fire(HttpRequestHook(flow))
    assert flow.response is None
    flow.response = http.Response.make(200, b"0123456789")
    env.fire(HttpResponseHook(flow))
    (line,) = env.log_lines()
    assert line["decision"] == "allow"
    assert line["host"] == "pypi.org"
    assert line["path"] == "/simple/pip/"  # no query string
    assert line["method"] == "GET"
    assert line["route"] == 1
    assert line["response_bytes"] == 10
    assert line["request_bytes"] == 0
    assert line["status"] == 200
    assert line["generation"] == 1
    assert set(line) >= {"time", "reason"}


def test_the_decision_log_is_bounded_on_disk_and_says_when_it_dropped_records(
    env: Env,
) -> None:
    """The agent decides how many requests it makes; the log's files on the host do not
    grow past KEEP + 2 of max_bytes. A flood of refusals cannot push out the run's first
    records (``.0``); what it pushes out of the middle is counted, by decision and time, in
    a note (the newest one covers the whole gap)."""
    from bottle.runtime.egress import records

    env.addon.log.max_bytes = 4096
    for n in range(400):
        flow = make_flow("GET", f"https://unlisted.example.org/{n}")
        env.fire(HttpRequestHook(flow))
    files = [p for p in records.log_files(env.log) if p.exists()]
    assert [p.name for p in files] == [f"egress.jsonl.{n}" for n in (0, 2, 1)] + ["egress.jsonl"]
    assert sorted(p.name for p in env.log.parent.iterdir()) == sorted(p.name for p in files)
    assert all(p.stat().st_size <= 4096 for p in files)
    first = [json.loads(x) for x in files[0].read_text().splitlines()]
    assert [int(x["path"].strip("/")) for x in first] == list(range(len(first)))
    assert first and all(x["decision"] == "refuse" for x in first)
    lines = [json.loads(x) for p in files[1:] for x in p.read_text().splitlines()]
    kept = [x for x in lines if x["decision"] == "refuse"]
    # After the first file, the newest records are the ones kept, in order, to the last.
    paths = [int(x["path"].strip("/")) for x in kept]
    assert paths == list(range(paths[0], 400)) and paths[0] > len(first)
    notes = [x for x in lines if x["decision"] == "note"]
    assert notes and all("older records were dropped" in x["reason"] for x in notes)
    assert json.loads(env.log.read_text().splitlines()[0])["decision"] == "note"
    gap = paths[0] - len(first)
    newest = notes[-1]
    assert newest["dropped"] == {"refuse": gap}
    assert f"{gap} older records were dropped (refuse {gap})" in newest["reason"]
    assert first[-1]["time"] <= newest["dropped_from"] <= newest["dropped_to"] <= kept[0]["time"]
    [parsed] = {records.LogRecord.model_validate(x).decision for x in notes}
    assert parsed == "note"


def test_a_flood_of_refusals_leaves_the_first_moves_readable_to_the_operator(env: Env) -> None:
    """An injected agent's first moves, then a flood of refusals (each to another host, so
    no two are alike) to push them out: ``bottle egress log`` still shows them first, and
    a note counts what the flood pushed out."""
    from bottle.runtime.egress import records
    from bottle_cli import decisions

    env.addon.log.max_bytes = 8192
    first = make_flow("GET", "https://pypi.org/simple/exfil-step-one/")
    env.fire(HttpRequestHook(first))
    first.response = http.Response.make(200, b"ok")
    env.fire(HttpResponseHook(first))
    for n in range(600):
        env.fire(HttpRequestHook(make_flow("GET", f"https://n{n}.flood.example/")))
    shown = list(decisions._log_records(env.log, follow=False))
    assert (shown[0].decision, shown[0].host, shown[0].path) == (
        "allow",
        "pypi.org",
        "/simple/exfil-step-one/",
    )
    assert records.first_file(env.log).exists()
    floods = [int(r.host.split(".")[0][1:]) for r in shown if r.decision == "refuse"]
    assert floods[-1] == 599 and floods != list(range(600))  # some did go: the disk bound
    [*_, note] = [r for r in shown if r.decision == "note"]
    assert note.dropped == {"refuse": 600 - len(floods)}
    assert note.dropped_from is not None and note.dropped_to is not None


def test_a_dropped_file_is_counted_by_what_its_lines_say_not_what_the_agent_wrote(
    tmp_path: Path,
) -> None:
    """The tally of a dropped file reads the fields' shape, not each line whole: text the
    agent chose (a path that spells another decision) cannot change the counts."""
    from bottle.runtime.egress import records

    fake = '","route":null,"decision":"allow","reason":"'
    lines = [
        records.LogRecord(time="t1", host=fake, path="/" + fake, decision="refuse", reason=fake),
        records.LogRecord(time="t2", method=fake, decision="dlp-block", route=3),
        records.Note(time="t3", dropped={"allow": 2, "refuse": 5}, dropped_from="t0"),
        records.Note(time="t4", unwritten=4),
    ]
    path = tmp_path / "egress.jsonl.2"
    path.write_text("".join(x.to_line() for x in lines) + '{"time":"t5","decision":"ref')
    found = records._tally(path)
    # The drop note's counts are carried on from the newest note by rotate, not from here.
    assert found.counts == {"refuse": 1, "dlp-block": 1, "unwritten": 4}
    assert (found.first, found.last) == ("t1", "t4")


def test_a_drop_note_that_could_not_be_written_at_once_still_opens_the_new_file(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The files moved and the dropped one is gone: if the new file cannot be opened at
    that moment, the next write that works still puts the drop's note first."""
    from bottle.runtime.egress import log as egress_log
    from bottle.runtime.egress import records

    real_rotate, real_open = records.rotate, egress_log.DecisionLog._open
    failing = {"next_open": False}

    def rotate(path: Path, keep: int = records.KEEP) -> records.Tally | None:
        dropped = real_rotate(path, keep)
        failing["next_open"] = dropped is not None
        return dropped

    def open_(self: egress_log.DecisionLog) -> None:
        if failing["next_open"]:
            failing["next_open"] = False
            raise OSError(24, "Too many open files")
        real_open(self)

    monkeypatch.setattr(records, "rotate", rotate)
    monkeypatch.setattr(egress_log.DecisionLog, "_open", open_)
    env.addon.log.max_bytes = 2048
    for n in range(60):
        env.fire(HttpRequestHook(make_flow("GET", f"https://unlisted.example.org/{n}")))
    for path in [p for p in records.log_files(env.log) if p.exists()][2:]:
        assert json.loads(path.read_text().splitlines()[0])["decision"] == "note"


def test_when_the_decision_log_cannot_be_written_egress_refuses_and_says_so_later(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fail closed: a request egress could not log would be an exfiltration no one sees (the
    agent can fill the host's disk through /workspace). Until the log works again every
    request gets a 503; then a note counts what went unwritten."""
    from bottle.runtime.egress import records

    env.fire(HttpRequestHook(make_flow("GET", "https://unlisted.example.org/")))  # logged
    allowed = make_flow("GET", "https://pypi.org/simple/")
    env.fire(HttpRequestHook(allowed))
    assert allowed.response is None

    def broken(path: Path, keep: int = records.KEEP) -> None:
        raise OSError(28, "No space left on device")

    env.addon.log.max_bytes = 1  # each record rotates, and rotating fails
    monkeypatch.setattr(records, "rotate", broken)
    # Upstream already when the log fails: the one kind of flow that goes unlogged.
    allowed.response = http.Response.make(200, b"ok")
    env.fire(HttpResponseHook(allowed))
    for url in ("https://pypi.org/simple/", "https://unlisted.example.org/", "https://pypi.org/x"):
        flow = make_flow("GET", url)
        env.fire(HttpRequestHook(flow))
        assert flow.response is not None and flow.response.status_code == 503
        assert body(flow)["error"] == "egress_log_unavailable"
    monkeypatch.undo()
    env.addon.log.max_bytes = records.MAX_FILE_BYTES
    soon = make_flow("GET", "https://pypi.org/simple/")
    env.fire(HttpRequestHook(soon))  # tried again once a second, not on every request
    assert soon.response is not None and soon.response.status_code == 503
    env.addon.log._retry_at = 0.0  # a second later
    again = make_flow("GET", "https://pypi.org/simple/")
    env.fire(HttpRequestHook(again))
    assert again.response is None
    written = [json.loads(x) for p in records.log_files(env.log) if p.exists()
               for x in p.read_text().splitlines()]  # fmt: skip
    note = written[-1]
    assert note["decision"] == "note" and note["unwritten"] == 5
    assert "refused every request" in note["reason"]


@pytest.mark.parametrize(
    ("method", "url", "reason"),
    [
        ("GET", "https://unlisted.example.org/x", "no route names host unlisted.example.org"),
        ("GET", "https://api.github.com/user", "no route for api.github.com allows GET /user"),
        ("DELETE", "https://api.github.com/repos/o/r", "allows DELETE /repos/o/r"),
        ("POST", "https://pypi.org/legacy/", "no route for pypi.org allows POST /legacy/"),
    ],
)
def test_unmatched_requests_get_a_readable_403(
    env: Env, method: str, url: str, reason: str
) -> None:
    flow = make_flow(method, url + "?q=1")
    send(env, flow)
    assert flow.response is not None
    assert flow.response.status_code == 403
    assert flow.response.headers["content-type"] == "application/json"
    assert flow.response.headers["x-bottle-egress"] == "refused"
    data = body(flow)
    assert data["error"] == "egress_refused"
    assert reason in data["reason"]
    assert data["host"] == flow.request.host
    assert data["method"] == method
    assert data["path"] == flow.request.path.split("?")[0]
    assert data["how_to_ask"] == HOW_TO_ASK
    assert "egress-block" in data["how_to_ask"]
    (line,) = env.log_lines()
    assert line["decision"] == "refuse"
    assert line["route"] is None
    assert line["status"] == 403


def test_wildcard_route_host_and_trailing_dot(env: Env) -> None:
    flow = make_flow("GET", "https://cdn.passthrough.example./file")
    env.fire(HttpRequestHook(flow))
    assert flow.response is None


def test_host_header_must_agree_with_destination(env: Env) -> None:
    flow = make_flow("GET", "https://pypi.org/simple/")
    flow.request.headers["Host"] = "evil.example:443"
    env.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert "Host header names evil.example" in body(flow)["reason"]


@pytest.mark.parametrize(("sni", "refused"), [("pypi.org", False), ("evil.example", True)])
def test_tls_server_name_must_agree_with_destination(env: Env, sni: str, refused: bool) -> None:
    flow = make_flow("GET", "https://pypi.org/simple/")
    flow.client_conn.tls = True
    flow.client_conn.sni = sni
    env.fire(HttpRequestHook(flow))
    assert (flow.response is not None) is refused
    if refused:
        assert "SNI) names evil.example" in body(flow)["reason"]


@pytest.mark.parametrize(
    "path", ["/repos/../user", "/repos/%2e%2e/user", "/repos/./x", "/repos/..%2Fuser"]
)
def test_dot_segments_are_refused(env: Env, path: str) -> None:
    flow = make_flow("GET", "https://api.github.com" + path)
    env.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert "dot segments" in body(flow)["reason"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/o/r.git/git-receive-pack"),
        ("GET", "/o/r.git/info/refs?service=git-receive-pack"),
        ("GET", "/o/r.git/info/refs?service=git%2Dreceive%2Dpack"),
    ],
)
def test_git_push_over_http_is_always_refused(env: Env, method: str, path: str) -> None:
    flow = make_flow(method, "https://github.com" + path)
    send(env, flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert "git-gate" in body(flow)["reason"]
    assert env.log_lines()[-1]["decision"] == "refuse"


def test_git_fetch_over_http_is_allowed(env: Env) -> None:
    flow = make_flow("GET", "https://github.com/o/r.git/info/refs?service=git-upload-pack")
    env.fire(HttpRequestHook(flow))
    assert flow.response is None


# -- CONNECT and passthrough -----------------------------------------------------------------


def connect_flow(host: str, port: int = 443) -> http.HTTPFlow:
    req = http.Request(
        host,
        port,
        b"CONNECT",
        b"",
        f"{host}:{port}".encode(),
        b"",
        b"HTTP/1.1",
        http.Headers(),
        b"",
        None,
        0.0,
        0.0,
    )
    return tflow.tflow(req=req)


def test_connect_to_unnamed_host_is_refused_inside_tls_where_the_body_is_read(env: Env) -> None:
    flow = connect_flow("unlisted.example.org")
    env.fire(HttpConnectHook(flow))
    assert flow.response is None  # the tunnel is intercepted; its request gets the 403
    inner = make_flow("GET", "https://unlisted.example.org/x")
    env.fire(HttpRequestHook(inner))
    assert inner.response is not None and inner.response.status_code == 403
    data = body(inner)
    assert data["error"] == "egress_refused"
    assert data["how_to_ask"] == HOW_TO_ASK
    assert env.log_lines()[-1]["decision"] == "refuse"


def test_connect_to_named_host_is_left_to_interception(env: Env) -> None:
    flow = connect_flow("api.github.com")
    env.fire(HttpConnectHook(flow))
    assert flow.response is None
    assert env.log_lines() == []  # the requests inside the tunnel are logged one by one


def test_connect_to_passthrough_host_is_allowed_and_logged(env: Env) -> None:
    flow = connect_flow("files.passthrough.example")
    env.fire(HttpConnectHook(flow))
    assert flow.response is None
    (line,) = env.log_lines()
    assert line["decision"] == "allow"
    assert line["route"] == 3
    assert "passthrough" in line["reason"]


def client_hello(sni: str | None) -> Any:
    """A real ClientHello, made by Python's ssl module, parsed by mitmproxy.

    The context is ``create_default_context`` without the system's CA store (tens of
    milliseconds to load): a client sends nothing of it in its hello."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if sni is None:
        ctx.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=sni)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return parse_client_hello(outgoing.read())


def hello_data(server: str, sni: str | None, port: int = 443) -> Any:
    from mitmproxy import options, tls

    ctx = context.Context(tflow.tclient_conn(), options.Options())
    ctx.server.address = (server, port)
    return tls.ClientHelloData(ctx, client_hello(sni))


def test_passthrough_tunnels_only_to_its_port(env: Env) -> None:
    """Another port of a passthrough host is intercepted, so its requests meet the routes
    (which match only the route's port) and are refused with a readable reason."""
    data = hello_data("files.passthrough.example", "files.passthrough.example", 8443)
    env.fire(TlsClienthelloHook(data))
    assert data.ignore_connection is False
    flow = connect_flow("files.passthrough.example", 8443)
    env.fire(HttpConnectHook(flow))
    assert env.log_lines() == []  # not logged as a passthrough tunnel
    inner = make_flow("GET", "https://files.passthrough.example:8443/x")
    env.fire(HttpRequestHook(inner))
    assert inner.response is not None and inner.response.status_code == 403
    assert "port 8443" in body(inner)["reason"]


@pytest.mark.parametrize(
    ("server", "sni", "ignored"),
    [
        ("files.passthrough.example", "files.passthrough.example", True),
        # Only the route's own host is tunnelled: no SNI, or another one (even one that is
        # passthrough too: a shared front end would route by it), is looked into.
        ("files.passthrough.example", None, False),
        ("files.passthrough.example", "other.passthrough.example", False),
        ("files.passthrough.example", "pypi.org", False),
        ("pypi.org", "files.passthrough.example", False),
        ("pypi.org", "pypi.org", False),
        ("api.github.com", "api.github.com", False),
    ],
)
def test_tls_clienthello_tunnels_only_passthrough_hosts(
    env: Env, server: str, sni: str | None, ignored: bool
) -> None:
    data = hello_data(server, sni)
    env.fire(TlsClienthelloHook(data))
    assert data.ignore_connection is ignored


def test_a_fronted_request_in_an_intercepted_passthrough_tunnel_is_refused(env: Env) -> None:
    """The CONNECT names the passthrough host, the SNI another: intercepted, and the request
    inside (Host of the SNI's site) is refused as a Host / target mismatch."""
    data = hello_data("files.passthrough.example", "pypi.org")
    env.fire(TlsClienthelloHook(data))
    assert data.ignore_connection is False
    inner = make_flow("GET", "https://files.passthrough.example/x")
    inner.request.headers["Host"] = "pypi.org"
    env.fire(HttpRequestHook(inner))
    assert inner.response is not None and inner.response.status_code == 403
    assert "Host header names pypi.org" in body(inner)["reason"]


def test_raw_tcp_is_killed(env: Env) -> None:
    flow = tflow.ttcpflow()
    env.fire(TcpStartHook(flow))
    assert flow.error is not None
    assert env.log_lines()[-1]["decision"] == "refuse"


# -- credentials -----------------------------------------------------------------------------


def test_credential_is_injected_and_agent_credentials_stripped(env: Env) -> None:
    flow = make_flow(
        "GET",
        "https://api.github.com/repos/o/r",
        headers={"Authorization": "Bearer agent-made-this-up", "Proxy-Authorization": "Basic x"},
    )
    env.fire(HttpRequestHook(flow))
    assert flow.response is None
    assert flow.request.headers.get_all("Authorization") == [f"Bearer {GH_SECRET}"]
    assert "Proxy-Authorization" not in flow.request.headers
    flow.response = http.Response.make(200, b"{}")
    env.fire(HttpResponseHook(flow))
    assert GH_SECRET not in env.log.read_text()


def test_missing_credential_refuses_with_502_and_does_not_crash(env: Env) -> None:
    flow = make_flow("GET", "https://nocred.example.com/x")
    send(env, flow)
    assert flow.response is not None and flow.response.status_code == 502
    data = body(flow)
    assert data["error"] == "egress_credential_missing"
    assert "NOT_SET_TOKEN" in data["reason"]
    assert env.log_lines()[-1]["decision"] == "refuse"


@pytest.mark.parametrize(
    ("url", "words"),
    [
        ("http://api.github.com/repos/o/r", ["plain HTTP", "https://api.github.com/"]),
        ("https://api.github.com:8443/repos/o/r", ["port 8443", "port 443"]),
        ("http://api.github.com:443/repos/o/r", ["plain HTTP"]),
        ("https://api.github.com:80/repos/o/r", ["port 80"]),
        # Refused for the host, whatever the path: no route may carry it elsewhere.
        ("http://api.github.com/other", ["plain HTTP"]),
    ],
)
def test_credentialed_host_only_over_tls_to_its_port(env: Env, url: str, words: list[str]) -> None:
    flow = make_flow("GET", url, headers={"Authorization": "Bearer agent-made-this-up"})
    send(env, flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert GH_SECRET not in str(flow.request.headers)
    data = body(flow)
    assert data["error"] == "egress_refused"
    for word in words:
        assert word in data["reason"]
    assert "credential" in data["reason"]


def test_inject_checks_the_wire_again(env: Env) -> None:
    """Should a route table ever let plain HTTP through to a credentialed route, the
    credential addon still refuses: the check sits where the secret is added."""
    from bottle.runtime.egress.inject import Inject
    from bottle.runtime.egress.log import flow_record

    (inject,) = [a for a in env.addon.addons if isinstance(a, Inject)]
    flow = make_flow("GET", "http://api.github.com/repos/o/r")
    flow_record(flow)["route"] = 0
    env.tctx.master.addons.invoke_addon_sync(inject, HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert "only over https to port 443" in body(flow)["reason"]
    assert GH_SECRET not in str(flow.request.headers)


def test_no_credential_while_upstream_certificates_are_not_verified(env: Env) -> None:
    env.tctx.options.ssl_insecure = True
    flow = make_flow("GET", "https://api.github.com/repos/o/r")
    send(env, flow)
    assert flow.response is not None and flow.response.status_code == 502
    assert body(flow)["error"] == "egress_upstream_unverified"
    assert GH_SECRET not in str(flow.request.headers)
    env.tctx.options.ssl_insecure = False
    flow = make_flow("GET", "https://api.github.com/repos/o/r")
    env.fire(HttpRequestHook(flow))
    assert flow.response is None
    assert flow.request.headers["Authorization"] == f"Bearer {GH_SECRET}"


def test_mitmdump_never_turns_upstream_verification_off(tmp_path: Path) -> None:
    argv = egress_main.mitmdump_argv(tmp_path, tmp_path / "ca.pem")
    assert not any("ssl_insecure" in part or part == "-k" for part in argv)
    assert f"ssl_verify_upstream_trusted_ca={tmp_path / 'ca.pem'}" in argv


# -- paths and methods that could mean something else ------------------------------------------


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/repos/o/..;/admin", "dot segments"),
        ("/repos/%252e%252e/admin", "encoded twice"),
        ("/repos/o/%252fadmin", "encoded twice"),
        ("/repos/o%2f..%2fadmin", "dot segments"),
        ("/repos/o%2fr", "encoded '%2f'"),
        ("/repos\\o", "backslash"),
        ("/repos/o%5cr", "encoded '%5c'"),
    ],
)
def test_ambiguous_paths_are_refused_with_the_reason(env: Env, path: str, reason: str) -> None:
    flow = make_flow("GET", "https://api.github.com" + path)
    send(env, flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert reason in body(flow)["reason"]
    assert GH_SECRET not in str(flow.request.headers)


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ("/repos/o/r", True),
        ("/%72epos/o", True),
        ("/repos;x=1/o", True),
        ("//repos/o", True),
        ("/repository", False),
        ("/reposx/", False),
    ],
)
def test_paths_are_matched_normalised(env: Env, path: str, allowed: bool) -> None:
    flow = make_flow("GET", "https://api.github.com" + path)
    env.fire(HttpRequestHook(flow))
    assert (flow.response is None) is allowed


def _override_verdict(env: Env, method: str, query: str, headers: dict[str, str]) -> str | None:
    """None when the request to api.github.com goes on; else the reason of its 403, which
    names the override, and the route's token was never injected."""
    flow = make_flow(method, "https://api.github.com/repos/o/r" + query, headers=headers)
    env.fire(HttpRequestHook(flow))
    if flow.response is None:
        return None
    assert flow.response.status_code == 403
    assert GH_SECRET not in str(flow.request.headers)
    reason: str = body(flow)["reason"]
    assert "asks the server for" in reason
    return reason


@pytest.mark.parametrize(
    ("headers", "query", "allowed"),
    [
        ({"X-HTTP-Method-Override": "DELETE"}, "", False),
        ({"X-HTTP-Method": "put"}, "", False),
        ({"X-Method-Override": "PATCH"}, "", False),
        ({}, "?_method=DELETE", False),
        ({}, "?_METHOD=delete", False),
        ({"X-HTTP-Method-Override": "GET"}, "", True),  # the request's own method
        ({"X-HTTP-Method-Override": "POST"}, "", True),  # another method the route allows
        ({}, "?_method=GET", True),
    ],
)
def test_method_overrides_must_name_an_allowed_method(
    env: Env, headers: dict[str, str], query: str, allowed: bool
) -> None:
    reason = _override_verdict(env, "GET", query, headers)
    assert (reason is None) == allowed, reason
    assert reason is None or "send the real method" in reason


@pytest.mark.parametrize("header", list(guards.PATH_OVERRIDE_HEADERS))
@pytest.mark.parametrize(
    ("claimed", "allowed", "said"),
    [
        ("/admin/keys", False, "a path no route for api.github.com allows GET on"),
        ("/repos/o/other", True, ""),  # a path the route allows anyway: nothing gained
        ("/repos/o/r", True, ""),  # the request's own
        ("https://api.github.com/admin", False, "cannot match to a route"),
        ("admin", False, "cannot match to a route"),
        ("/repos/..;/admin", False, "cannot match to a route"),
        ("/repos/%2e%2e/admin", False, "cannot match to a route"),
        ("/repos/o/r.git/git-receive-pack", False, "a git push"),
    ],
)
def test_path_override_headers_must_name_an_allowed_path(
    env: Env, header: str, claimed: str, allowed: bool, said: str
) -> None:
    # Servers behind a front end take the path from these: the route must allow it too.
    flow = make_flow("GET", "https://api.github.com/repos/o/r", headers={header: claimed})
    env.fire(HttpRequestHook(flow))
    if allowed:
        assert flow.response is None
        return
    assert flow.response is not None and flow.response.status_code == 403
    reason = body(flow)["reason"]
    assert header in reason and said in reason and claimed not in reason
    assert GH_SECRET not in str(flow.request.headers)


def test_a_path_override_is_checked_with_the_overriding_method(env: Env) -> None:
    # Each alone is allowed (POST on the request's path; GET on the claimed one), together
    # they ask for POST on a path only GET may reach.
    flow = make_flow(
        "GET",
        "https://pypi.org/simple/",
        headers={"X-HTTP-Method-Override": "POST", "X-Original-URL": "/simple/x/"},
    )
    env.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert "asks the server for POST" in body(flow)["reason"]


MULTIPART = (
    b'--b0\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
    b'--b0\r\nContent-Disposition: form-data; name="_method"\r\n\r\nPUT\r\n--b0--\r\n'
)


@pytest.mark.parametrize(
    ("kind", "content", "allowed"),
    [
        ("application/x-www-form-urlencoded", b"a=1&_method=DELETE", False),
        (
            "application/x-www-form-urlencoded; charset=utf-8",
            b"%5F%6D%65%74%68%6F%64=delete",
            False,
        ),
        ("multipart/form-data; boundary=b0", MULTIPART, False),
        ("application/json", b'{"a": 1, "_method": "PATCH"}', False),
        ("application/json", b'{"\\u005fmethod": "DELETE"}', False),
        ("application/x-www-form-urlencoded", b"a=1&_method=GET", True),  # the route allows GET
        ("application/x-www-form-urlencoded", b"a=1&_method=POST", True),  # its own method
        ("application/json", b'["_method", "DELETE"]', True),  # no field: nothing claimed
        ("text/plain", b"_method=DELETE", True),  # no framework reads a field from this
        # Laravel reads any type with /json or +json as JSON input; Rack a POST without a
        # type as a form; a server may take either of two types.
        ("application/vnd.api+json", b'{"_method": "DELETE"}', False),
        ("text/json; charset=utf-8", b'{"_method": "DELETE"}', False),
        (None, b"_method=DELETE", False),
        (["text/plain", "application/x-www-form-urlencoded"], b"_method=DELETE", False),
        ("text/plain, application/x-www-form-urlencoded", b"_method=DELETE", False),
    ],
)
def test_a_method_field_in_a_held_body_must_name_an_allowed_method(
    env: Env, kind: str | list[str] | None, content: bytes, allowed: bool
) -> None:
    # Rails, Laravel and Symfony read a POSTed form's _method as the method; Laravel JSON's.
    flow = make_flow("POST", "https://api.github.com/repos/o/r", content=content)
    _content_types(flow, kind)
    env.fire(HttpRequestHeadersHook(flow))
    assert flow.response is None and not flow.request.stream  # held: dlp block
    env.fire(HttpRequestHook(flow))
    if allowed:
        assert flow.response is None
        assert flow.request.headers["Authorization"] == f"Bearer {GH_SECRET}"
        return
    assert flow.response is not None and flow.response.status_code == 403
    reason = body(flow)["reason"]
    assert "body field" in reason and "send the real method" in reason
    assert GH_SECRET not in flow.response.get_text()  # answered here: nothing went upstream


def _mp(*parts: bytes, boundary: bytes = b"B") -> bytes:
    """A multipart body of ``parts`` (each its header lines, a blank line and its value)."""
    return b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts) + (
        b"--" + boundary + b"--\r\n"
    )


_CD_A = b'Content-Disposition: form-data; name="a"\r\n\r\n1'
_CD_METHOD = b'Content-Disposition: form-data; name="_method"\r\n\r\nDELETE'
_FORM_TYPE = "application/x-www-form-urlencoded"
_MP_TYPE = "multipart/form-data; boundary=B"
_READ = "body field _method asks the server for"  # read, and the method it names refused
_UNREADABLE = "egress cannot read the request body to check its _method field"

# (name, Content-Type, body, more headers, what the refusal says): each asked a server
# behind a route that allows POST but not DELETE for DELETE, and was once forwarded.
BODY_OVERRIDES = [
    # Read as the server reads it: after its Content-Encoding, in its charset.
    ("gzip form", _FORM_TYPE, gzip.compress(b"a=1&_method=DELETE"), {"content-encoding": "gzip"}, _READ),
    ("gzip that is not", _FORM_TYPE, b"a=1&_method=DELETE", {"content-encoding": "gzip"}, "does not decode"),
    ("unknown encoding", _FORM_TYPE, b"a=1&_method=DELETE", {"content-encoding": "x-rot13"}, "does not decode"),
    ("utf-16le form", f"{_FORM_TYPE}; charset=utf-16le", "_method=DELETE".encode("utf-16-le"), {}, "charset"),
    ("IBM037 form", f"{_FORM_TYPE}; charset=IBM037", "_method=DELETE".encode("cp037"), {}, "charset"),
    ("charset in a longer name", f"{_FORM_TYPE}; xcharset=utf-16", "_method=DELETE".encode("utf-16-le"), {}, "charset"),
    ("utf-16 json", 'application/json; charset="UTF-16"', '{"_method":"DELETE"}'.encode("utf-16"), {}, "charset"),
    # Field names as PHP (and old Rack) read them.
    ("php dot", _FORM_TYPE, b"a=1&.method=DELETE", {}, _READ),
    ("php space", _FORM_TYPE, b"a=1&+method=DELETE", {}, _READ),
    ("php leading space", _FORM_TYPE, b"a=1&%20.method=DELETE", {}, _READ),
    ("php array", _FORM_TYPE, b"_method[]=DELETE", {}, _READ),
    ("php NUL", _FORM_TYPE, b"_method%00x=DELETE", {}, _READ),
    ("semicolon", _FORM_TYPE, b"a=1;_method=DELETE", {}, _READ),
    ("php media type ends at a space", f"{_FORM_TYPE} x", b"_method=DELETE", {}, _READ),
    # Multipart: read strictly, whatever order or quoting, or refused.
    ("multipart type first", _MP_TYPE, _mp(_CD_A, b"Content-Type: text/plain\r\n" + _CD_METHOD), {}, _READ),
    ("multipart unquoted name", _MP_TYPE, _mp(_CD_A, b"Content-Disposition: form-data; name=_method\r\n\r\nDELETE"), {}, _READ),
    ("multipart quoted boundary", 'multipart/form-data; boundary="B"', _mp(_CD_A, _CD_METHOD), {}, _READ),
    ("multipart name*", _MP_TYPE, _mp(b"Content-Disposition: form-data; name*=UTF-8''%5Fmethod\r\n\r\nDELETE"), {}, "more than one plain name"),
    ("multipart/mixed", "multipart/mixed; boundary=B", _mp(_CD_METHOD), {}, _READ),
    ("multipart LF only", _MP_TYPE, _mp(_CD_A).replace(b"--B--\r\n", b"--B\n") + _CD_METHOD.replace(b"\r\n", b"\n") + b"\n--B--\n", {}, _UNREADABLE),
    ("multipart preamble", _MP_TYPE, b"_method=DELETE\r\n" + _mp(_CD_A), {}, "does not start with its boundary"),
    ("multipart epilogue", _MP_TYPE, _mp(_CD_A) + b"_method=DELETE", {}, "follow its closing boundary"),
    ("multipart two boundaries", "multipart/form-data; boundary=B; xboundary=C", _mp(_CD_A, _CD_METHOD), {}, "one boundary"),
    ("multipart escaped quote", _MP_TYPE, _mp(b'Content-Disposition: form-data; filename="a\\"; name="_method"\r\n\r\nDELETE'), {}, "more than one plain name"),
    ("multipart two dispositions", _MP_TYPE, _mp(b'Content-Disposition: form-data; name="a"\r\n' + _CD_METHOD), {}, "one Content-Disposition and one plain"),
    ("multipart folded header", _MP_TYPE, _mp(b'Content-Disposition: form-data;\r\n name="_method"\r\n\r\nDELETE'), {}, "does not parse strictly"),
    ("multipart boundary in a value", _MP_TYPE, _mp(b'Content-Disposition: form-data; name="a"\r\n\r\nx--B', _CD_METHOD), {}, "other than after CRLF"),
    # JSON: any type with "json" in it (Laravel's isJson); every key, duplicates too.
    # Unicorn files Content_Type under CONTENT_TYPE too, joined to the real one by a comma.
    ("underscore content type", "application/octet-stream", b"_method=DELETE", {"Content_Type": _FORM_TYPE}, _READ),
    ("isJson substring", "text/plain; a=/json", b'{"_method":"DELETE"}', {}, _READ),
    ("isJson in a quoted parameter", 'text/plain; charset="+json"', b'{"_method":"DELETE"}', {}, "charset"),
    ("json duplicate key", "application/json", b'{"_method":"DELETE","_method":"GET"}', {}, _READ),
    ("json truncated", "application/json", b'{"_method": "DELETE"', {}, "not valid JSON"),
    ("json too deep", "application/json", b"[" * 100_000 + b'"_method"', {}, "not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "content", "extra", "said"),
    [case[1:] for case in BODY_OVERRIDES],
    ids=[case[0] for case in BODY_OVERRIDES],
)
@pytest.mark.parametrize("host", ["api.github.com", "off-post.example.com"])
def test_a_body_that_could_claim_another_method_is_refused_with_why(
    env: Env, host: str, kind: str, content: bytes, extra: dict[str, str], said: str
) -> None:
    path = "/repos/o/r" if host == "api.github.com" else "/x"
    flow = make_flow("POST", f"https://{host}{path}")
    flow.request.headers.update(extra)  # after make, which drops an encoding it cannot apply
    flow.request.raw_content = content  # as sent (.content would encode it)
    _content_types(flow, kind)
    env.fire(HttpRequestHeadersHook(flow))
    assert flow.response is None and not flow.request.stream  # held, whatever the dlp mode
    env.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 403
    reason = body(flow)["reason"]
    assert said in reason
    assert "DELETE" in reason if said == _READ else "no route for" in reason
    assert GH_SECRET not in flow.response.get_text()  # answered here: nothing went upstream


@pytest.mark.parametrize(
    ("kind", "content", "extra"),
    [
        (_FORM_TYPE, b"a=1&b=%41", {}),
        (_FORM_TYPE, b"payment_method=card&method=x&x_method=y", {}),
        (f"{_FORM_TYPE}; charset=UTF-8", b"a=1&_method=GET", {}),
        (_FORM_TYPE, gzip.compress(b"a=1&payment_method=card"), {"content-encoding": "gzip"}),
        ("application/json", b'{"jsonrpc": "2.0", "method": "eth_call", "p": "a\\u005fb"}', {}),
        ("application/json; charset=utf-8", b'{"a": {"_method": "DELETE"}}', {}),  # not a field
        (
            "multipart/form-data; boundary=----WebKitFormBoundaryAbC9",
            _mp(
                _CD_A,
                b'Content-Disposition: form-data; name="f"; filename="method.txt"\r\n'
                b"Content-Type: text/plain\r\n\r\nthe _method of it\r\n",
                boundary=b"----WebKitFormBoundaryAbC9",
            ),
            {},
        ),
        ("text/plain", b"_method=DELETE", {}),  # no framework reads a field from this
    ],
)
def test_a_body_without_an_override_goes_on(
    env: Env, kind: str, content: bytes, extra: dict[str, str]
) -> None:
    flow = make_flow("POST", "https://api.github.com/repos/o/r", headers=extra)
    flow.request.raw_content = content
    _content_types(flow, kind)
    env.fire(HttpRequestHeadersHook(flow))
    env.fire(HttpRequestHook(flow))
    assert flow.response is None, body(flow)["reason"]
    assert flow.request.headers["Authorization"] == f"Bearer {GH_SECRET}"


@pytest.mark.parametrize(
    ("headers", "query", "allowed"),
    [
        ({}, "?.method=DELETE", False),
        ({}, "?%20method=DELETE", False),
        ({}, "?a=1;_method=DELETE", False),
        ({}, "?_method%00=DELETE", False),
        ({}, "?_method[]=DELETE", False),
        ({}, "?%5f%6d%65%74%68%6f%64=DELETE", False),
        ({"X_HTTP_METHOD_OVERRIDE": "DELETE"}, "", False),
        ({"X-HTTP-Method-Override ": "DELETE"}, "", False),
        ({"x_method_override": "DELETE"}, "", False),
        ({"X_ORIGINAL_URL": "/admin/keys"}, "", False),
        ({}, "?method=DELETE&payment_method=card", True),
        ({"X_HTTP_METHOD_OVERRIDE": "GET"}, "", True),
    ],
)
def test_overrides_are_found_however_a_server_spells_them(
    env: Env, headers: dict[str, str], query: str, allowed: bool
) -> None:
    reason = _override_verdict(env, "POST", query, headers)
    assert (reason is None) == allowed, reason


def _content_types(flow: http.HTTPFlow, kind: str | list[str] | None) -> None:
    flow.request.headers.set_all("content-type", [kind] if isinstance(kind, str) else kind or [])


@pytest.mark.parametrize("host", ["warn-post.example.com", "off-post.example.com"])
@pytest.mark.parametrize(
    ("kind", "content"),
    [
        ("application/x-www-form-urlencoded", b"a=1&_method=DELETE"),
        ("multipart/form-data; boundary=b0", MULTIPART),
        ("application/json", b'{"_method": "PATCH"}'),
        ("application/problem+json", b'{"_method": "PATCH"}'),
        (None, b"_method=DELETE"),
    ],
)
def test_a_route_that_limits_methods_holds_a_form_to_read_its_method_whatever_its_dlp(
    env: Env, host: str, kind: str | None, content: bytes
) -> None:
    """``dlp: warn`` and ``off`` stream bodies: a POST-only route would let a form's
    ``_method=DELETE`` reach a framework that honours it. Such a body is held and read."""
    flow = make_flow("POST", f"https://{host}/x", content=content)
    _content_types(flow, kind)
    env.fire(HttpRequestHeadersHook(flow))
    assert flow.response is None and not flow.request.stream
    env.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert "body field _method" in body(flow)["reason"]
    [line] = env.log_lines()
    assert line["decision"] == "refuse" and line["host"] == host


@pytest.mark.parametrize("host", ["warn-post.example.com", "off-post.example.com"])
def test_a_held_form_without_a_method_field_goes_on_as_its_dlp_says(env: Env, host: str) -> None:
    flow = make_flow("POST", f"https://{host}/x", content=f"a=1&k={EXTRA_SECRET}".encode())
    _content_types(flow, "application/x-www-form-urlencoded")
    env.fire(HttpRequestHeadersHook(flow))
    assert not flow.request.stream
    send(env, flow)
    assert flow.response is not None and flow.response.status_code == 200
    [line] = env.log_lines()
    # warn still scans (and only warns); off reads the field and nothing else.
    assert line["decision"] == ("dlp-warn" if host.startswith("warn") else "allow"), line


@pytest.mark.parametrize(
    ("host", "kind", "method"),
    [
        ("off-post.example.com", "application/octet-stream", "POST"),  # no fields in it
        ("off-post.example.com", None, "PUT"),  # (refused by the route, but not held)
        ("off.example.com", "application/x-www-form-urlencoded", "POST"),  # no method limit
        ("warn.example.com", "application/json", "POST"),
    ],
)
def test_other_bodies_of_warn_and_off_routes_still_stream(
    env: Env, host: str, kind: str | None, method: str
) -> None:
    flow = make_flow(method, f"https://{host}/x", content=b"_method=DELETE")
    _content_types(flow, kind)
    env.fire(HttpRequestHeadersHook(flow))
    assert flow.request.stream or flow.response is not None


def test_a_form_too_long_to_read_on_a_route_that_limits_methods_is_refused_unread(
    env: Env,
) -> None:
    flow = make_flow("POST", "https://off-post.example.com/x")
    _content_types(flow, "application/x-www-form-urlencoded")
    flow.request.headers["Content-Length"] = str(egress_scan.MAX_HELD_BODY + 1)
    env.fire(HttpRequestHeadersHook(flow))
    assert flow.response is not None and flow.response.status_code == 403
    reason = body(flow)["reason"]
    assert "allows only some methods" in reason and "_method" in reason
    assert "dlp" not in body(flow)["error"]


def test_an_unknown_override_method_is_refused_without_echoing_it(env: Env) -> None:
    flow = make_flow(
        "GET",
        "https://api.github.com/repos/o/r",
        headers={"X-HTTP-Method-Override": "PURGE\x1b]0;x\x07"},
    )
    env.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 403
    reason = body(flow)["reason"]
    assert "an unknown method" in reason and "PURGE" not in reason


def test_plain_routes_match_scheme_and_port(env: Env) -> None:
    for url, allowed in [
        ("https://pypi.org/simple/", True),
        ("http://pypi.org/simple/", True),  # no scheme set and no auth: http on 80 too
        ("https://pypi.org:8443/simple/", False),
        ("http://pypi.org:8080/simple/", False),
    ]:
        flow = make_flow("GET", url)
        env.fire(HttpRequestHook(flow))
        assert (flow.response is None) is allowed, url
        if not allowed:
            assert flow.response is not None
            assert f"port {flow.request.port}" in body(flow)["reason"]


# -- DLP -------------------------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@pytest.mark.parametrize("secret", [GH_SECRET, EXTRA_SECRET])
@pytest.mark.parametrize(
    ("where", "place"),
    [
        ("url", lambda s: {"url": f"https://upload.example.com/u?token={s}"}),
        ("url", lambda s: {"url": f"https://upload.example.com/u?token={quote(s, safe='')}"}),
        ("url", lambda s: {"url": f"https://upload.example.com/u/{s}/x"}),
        ("header x-note", lambda s: {"headers": {"X-Note": s}}),
        (
            "header authorization",
            lambda s: {"headers": {"Authorization": "Basic " + b64(f"u:{s}")}},
        ),
        ("body", lambda s: {"content": json.dumps({"k": s}).encode()}),
        ("body", lambda s: {"content": b64(s).encode()}),
        ("body", lambda s: {"content": ("a=" + quote(s, safe="")).encode()}),
    ],
)
def test_known_secret_is_blocked_and_never_echoed(
    env: Env, secret: str, where: str, place: Any
) -> None:
    spec: dict[str, Any] = {"url": "https://upload.example.com/u", **place(secret)}
    flow = make_flow(
        "POST", spec["url"], headers=spec.get("headers"), content=spec.get("content", b"")
    )
    send(env, flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.headers["x-bottle-egress"] == "dlp-block"
    data = body(flow)
    assert data["error"] == "egress_dlp"
    assert data["reason"].startswith("request carries secret:")
    assert where in data["reason"]
    raw = flow.response.get_text() or ""
    log = env.log.read_text()
    for form in (secret, quote(secret, safe=""), b64(secret)[:16]):
        assert form not in raw
        assert form not in log
    (line,) = env.log_lines()
    assert line["decision"] == "dlp-block"
    assert any(where in finding for finding in line["findings"])


def test_the_routes_own_secret_is_a_leak_even_to_its_host(env: Env) -> None:
    flow = make_flow(
        "GET", "https://api.github.com/repos/o/r", headers={"Authorization": f"token {GH_SECRET}"}
    )
    env.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert "secret:GH_TOKEN" in body(flow)["reason"]


@pytest.mark.parametrize(
    ("kind", "token"),
    [
        ("aws-access-key-id", "AK" + "IA" + "Q3EGRIGHTS7W4XMP"),
        ("github-token", "gh" + "p_" + "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xYzaB3"),
        ("private-key", "-----BEGIN " + "EC PRIVATE KEY-----"),
    ],
)
def test_token_shapes_are_blocked(env: Env, kind: str, token: str) -> None:
    flow = make_flow("POST", "https://upload.example.com/u", content=f"x {token} y".encode())
    env.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert body(flow)["reason"] == f"request carries {kind} in body"
    assert token not in (flow.response.get_text() or "")


def test_dlp_warn_lets_through_and_logs(env: Env) -> None:
    flow = make_flow("POST", "https://warn.example.com/x", content=EXTRA_SECRET.encode())
    send(env, flow)
    assert flow.response is not None and flow.response.status_code == 200
    (line,) = env.log_lines()
    assert line["decision"] == "dlp-warn"
    assert "secret:EXTRA_SECRET" in line["reason"]
    assert EXTRA_SECRET not in env.log.read_text()


def test_dlp_off_does_not_scan(env: Env) -> None:
    flow = make_flow("POST", "https://off.example.com/x", content=EXTRA_SECRET.encode())
    send(env, flow)
    assert flow.response is not None and flow.response.status_code == 200
    assert env.log_lines()[-1]["decision"] == "allow"


def test_secret_in_path_of_refused_request_is_redacted(env: Env) -> None:
    flow = make_flow("GET", f"https://unlisted.example.org/leak/{EXTRA_SECRET}")
    send(env, flow)
    raw = flow.response.get_text() if flow.response else ""
    assert EXTRA_SECRET not in (raw or "")
    assert EXTRA_SECRET not in env.log.read_text()
    assert env.log_lines()[-1]["path"] == "/leak/[secret:EXTRA_SECRET]"


def test_websocket_message_with_secret_is_dropped(env: Env) -> None:
    flow = make_flow("GET", "https://pypi.org/socket")
    env.fire(HttpRequestHook(flow))
    assert flow.response is None
    flow.websocket = websocket.WebSocketData()
    clean = websocket.WebSocketMessage(Opcode.TEXT, True, b"hello")
    flow.websocket.messages.append(clean)
    env.fire(WebsocketMessageHook(flow))
    leak = websocket.WebSocketMessage(Opcode.TEXT, True, f"psst {EXTRA_SECRET}".encode())
    flow.websocket.messages.append(leak)
    env.fire(WebsocketMessageHook(flow))
    assert not clean.dropped
    assert leak.dropped
    line = env.log_lines()[-1]
    assert line["decision"] == "dlp-block"
    assert line["method"] == "WEBSOCKET"
    assert EXTRA_SECRET not in env.log.read_text()


@pytest.mark.parametrize("from_client", [True, False])
def test_a_websocket_message_that_cannot_be_scanned_goes_nowhere(
    env: Env, monkeypatch: pytest.MonkeyPatch, from_client: bool
) -> None:
    # Either way: the agent's message unscanned, or upstream's unscrubbed.
    flow = make_flow("GET", "https://pypi.org/socket")
    env.fire(HttpRequestHook(flow))
    flow.websocket = websocket.WebSocketData()

    def broken(*_: object) -> object:
        raise RuntimeError("scanner broke")

    monkeypatch.setattr(egress_scan.dlp, "scan_text", broken)
    monkeypatch.setattr(egress_scan.scrub, "scrub", broken)
    message = websocket.WebSocketMessage(Opcode.TEXT, from_client, f"psst {EXTRA_SECRET}".encode())
    flow.websocket.messages.append(message)
    env.fire(WebsocketMessageHook(flow))
    assert message.dropped
    assert flow.error is not None  # killed: nothing more goes either way
    line = env.log_lines()[-1]
    assert line["method"] == "WEBSOCKET" and line["decision"] == "refuse"
    assert "connection closed" in line["reason"]


# -- robustness ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [b"/\xff\xfe/x?\xc3(=1", b"", b"*", b"/%zz%", b"/" + b"a" * 10000])
def test_malformed_requests_do_not_crash(env: Env, path: bytes) -> None:
    req = http.Request(
        "pypi.org", 443, b"GET", b"https", b"", path, b"HTTP/1.1",
        http.Headers([(b"X-Bin", b"\xff\x00\xfe")]), b"\xff" * 10, None, 0.0, 0.0,
    )  # fmt: skip
    flow = tflow.tflow(req=req)
    send(env, flow)
    assert flow.response is not None
    assert flow.response.status_code in {200, 403}
    assert env.log_lines()[-1]["decision"] in {"allow", "refuse"}


def test_unexpected_failure_refuses_with_500_and_keeps_going(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*_args: object, **_kwargs: object) -> list[object]:
        raise ValueError(f"a message quoting {EXTRA_SECRET}")

    monkeypatch.setattr(egress_scan.dlp, "scan_request", boom)
    flow = make_flow("POST", "https://upload.example.com/u", content=b"hello")
    env.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 500
    assert body(flow)["error"] == "egress_internal_error"
    assert EXTRA_SECRET not in env.log.read_text()
    monkeypatch.undo()
    # The addon still works afterwards.
    again = make_flow("GET", "https://pypi.org/simple/")
    env.fire(HttpRequestHook(again))
    assert again.response is None


def test_upstream_error_is_logged(env: Env) -> None:
    flow = make_flow("GET", "https://pypi.org/simple/")
    env.fire(HttpRequestHook(flow))
    flow.error = tflow.terr("connection refused")
    env.fire(HttpErrorHook(flow))
    (line,) = env.log_lines()
    assert line["decision"] == "allow"
    assert "upstream error" in line["reason"]
    assert line["response_bytes"] is None


# -- routes: load, reload, status ------------------------------------------------------------


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_status_after_start(env: Env) -> None:
    status = env.status_data()
    assert status["generation"] == 1
    assert status["routes_sha256"] == sha(env.routes)
    assert status["routes_yaml"] == env.routes.read_text()
    assert status["error"] is None
    assert status["error_sha256"] is None
    assert status["loaded_at"]
    assert oct(env.status.stat().st_mode & 0o777) == "0o644"


def test_reload_with_valid_file_bumps_generation(env: Env) -> None:
    env.routes.write_text("routes:\n  - host: unlisted.example.org\n")
    assert env.addon.reload() is True
    status = env.status_data()
    assert status["generation"] == 2
    assert status["routes_sha256"] == sha(env.routes)
    flow = make_flow("GET", "https://unlisted.example.org/x")
    env.fire(HttpRequestHook(flow))
    assert flow.response is None
    old = make_flow("GET", "https://pypi.org/simple/")
    env.fire(HttpRequestHook(old))
    assert old.response is not None and old.response.status_code == 403


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("routes:\n  - host: 'not a host!'\n", "routes.0.host"),
        ("routes: [\n", "not valid YAML"),
        ("- just a list\n", "top level must be a mapping"),
        ("routes:\n  - host: a.example\n    surprise: 1\n", "surprise"),
    ],
)
def test_reload_with_invalid_file_keeps_old_routes(env: Env, text: str, message: str) -> None:
    good_sha = sha(env.routes)
    env.routes.write_text(text)
    assert env.addon.reload() is False
    status = env.status_data()
    assert status["generation"] == 1
    assert status["routes_sha256"] == good_sha
    assert message in status["error"]
    # egress's copy of what it runs: the host shows it while the file on disk is bad.
    assert hashlib.sha256(status["routes_yaml"].encode()).hexdigest() == good_sha
    assert status["error_sha256"] == sha(env.routes)
    flow = make_flow("GET", "https://pypi.org/simple/")
    env.fire(HttpRequestHook(flow))
    assert flow.response is None  # the old table is still in force
    # A later good reload clears the error.
    env.routes.write_text(ROUTES)
    assert env.addon.reload() is True
    assert env.status_data()["error"] is None
    assert env.status_data()["generation"] == 2


def test_reload_keeps_flows_in_flight_on_their_table(env: Env) -> None:
    flow = make_flow("GET", "https://api.github.com/repos/o/r")
    env.fire(HttpRequestHook(flow))
    env.routes.write_text("routes: []\n")
    assert env.addon.reload() is True
    flow.response = http.Response.make(200, b"ok")
    env.fire(HttpResponseHook(flow))
    line = env.log_lines()[-1]
    assert line["decision"] == "allow"


def test_missing_routes_file_at_start_means_deny_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status = tmp_path / "status.json"
    monkeypatch.setenv("BOTTLE_EGRESS_ROUTES", str(tmp_path / "nope.yaml"))
    monkeypatch.setenv("BOTTLE_EGRESS_STATUS", str(status))
    monkeypatch.setenv("BOTTLE_EGRESS_LOG", str(tmp_path / "log.jsonl"))
    addon = Egress()
    with taddons.context(addon) as tctx:
        tctx.master.addons.invoke_addon_sync(addon, RunningHook())
        data = json.loads(status.read_text())
        assert data["generation"] == 1
        assert data["routes_sha256"] is None
        assert "cannot read routes file" in data["error"]
        assert data["routes_yaml"] is None  # no file is in force
        flow = make_flow("GET", "https://pypi.org/simple/")
        tctx.master.addons.invoke_addon_sync(addon, HttpRequestHook(flow))
        assert flow.response is not None and flow.response.status_code == 403


def test_sighup_reloads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes:\n  - host: a.example\n")
    status = tmp_path / "status.json"
    addon = Egress(routes_path=routes, status_path=status, log_path=tmp_path / "log.jsonl")

    async def scenario() -> int:
        addon.tables.running()
        # Without the handler, SIGHUP would kill the test run instead of failing this test.
        assert addon.tables._loop is not None
        routes.write_text("routes:\n  - host: b.example\n")
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if addon.current.generation == 2:
                break
        addon.tables.done()
        return addon.current.generation

    assert asyncio.run(scenario()) == 2
    assert addon.current.routes.allows_host("b.example")
    assert json.loads(status.read_text())["generation"] == 2


# -- __main__ --------------------------------------------------------------------------------


def test_prepare_ca_creates_and_publishes_the_certificate(tmp_path: Path) -> None:
    confdir = tmp_path / "ca-private"
    public = tmp_path / "ca"
    cert = egress_main.prepare_ca(confdir, public)
    assert cert == public / "ca.pem"
    assert (confdir / "mitmproxy-ca.pem").exists()
    assert cert.read_bytes() == (confdir / "mitmproxy-ca-cert.pem").read_bytes()
    assert b"PRIVATE KEY" not in cert.read_bytes()
    assert oct(confdir.stat().st_mode & 0o777) == "0o700"
    first = cert.read_bytes()
    egress_main.prepare_ca(confdir, public)  # a restart keeps the same CA
    assert cert.read_bytes() == first


def test_mitmdump_argv(tmp_path: Path) -> None:
    argv = egress_main.mitmdump_argv(tmp_path / "conf", Path("/etc/bottle/host-ca.pem"))
    assert argv[0] == "mitmdump"
    joined = " ".join(argv)
    for option in (
        "listen_host=0.0.0.0",
        "listen_port=8080",
        f"confdir={tmp_path / 'conf'}",
        "ssl_verify_upstream_trusted_ca=/etc/bottle/host-ca.pem",
        "block_global=false",
        "connection_strategy=lazy",
        "rawtcp=false",
    ):
        assert f"--set {option}" in joined
    assert "-s" not in argv  # the addons are registered, not a script watched every second
    assert "ssl_verify_upstream_trusted_ca" not in " ".join(
        egress_main.mitmdump_argv(tmp_path, None)
    )


def test_addon_module_exposes_egress_then_the_connect_guard() -> None:
    from bottle.runtime.egress.connect import ConnectGuard

    assert len(egress_addon.addons) == 2
    first, second = egress_addon.addons
    assert isinstance(first, Egress)
    assert isinstance(second, ConnectGuard)
    assert second.tables is first.tables and second.log is first.log
    names = [type(a).__name__ for a in first.addons]
    assert names == ["Reload", "Guards", "Scan", "Inject", "DecisionLog"]


def test_every_log_line_is_one_log_record_the_host_reads_back(env: Env) -> None:
    from bottle.runtime.egress.records import LogRecord

    send(env, make_flow("GET", "https://pypi.org/simple/"))
    send(env, make_flow("GET", "https://unlisted.example.org/x"))
    send(env, make_flow("GET", f"https://warn.example.com/?k={EXTRA_SECRET}"))
    lines = env.log.read_text().splitlines()
    assert len(lines) == 3
    records = [LogRecord.model_validate_json(line) for line in lines]
    assert [r.decision for r in records] == ["allow", "refuse", "dlp-warn"]
    for line, record in zip(lines, records, strict=True):
        assert set(json.loads(line)) == set(LogRecord.model_fields)
        assert LogRecord.model_validate_json(record.to_line()) == record
    assert records[2].findings and EXTRA_SECRET not in lines[2]


def test_a_log_record_keeps_undecodable_text_as_escapes() -> None:
    from bottle.runtime.egress.records import LogRecord

    record = LogRecord(decision="refuse", path="/\udcff/x")
    assert record.path == "/\\udcff/x"
    assert LogRecord.model_validate_json(record.to_line()) == record


def test_paths_are_mitmproxy_options_defaulting_to_the_environment(
    env: Env, tmp_path: Path
) -> None:
    opts = env.tctx.options
    assert opts.bottle_routes == str(env.routes)
    assert opts.bottle_status == str(env.status)
    assert opts.bottle_log == str(env.log)
    moved = tmp_path / "moved.jsonl"
    env.tctx.configure(env.addon, bottle_log=str(moved))
    send(env, make_flow("GET", "https://pypi.org/simple/"))
    assert moved.exists() and not env.log.exists()
    with pytest.raises(Exception, match="bottle_routes must be an absolute path"):
        env.tctx.configure(env.addon, bottle_routes="relative.yaml")
    assert env.addon.tables.routes_path == env.routes
