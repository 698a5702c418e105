"""The request checks: every request is matched against the routes, after the checks that keep
a route's meaning (Host, SNI and CONNECT agree; no path servers may read differently; no git
push; a credentialed host only over TLS to its port; no method or path override, in a header,
the query or a held body, that a route does not allow; :mod:`.overrides` finds them as the
most lenient server would, and names a body it cannot read).

A miss is a real 403 with a JSON body telling the agent how to ask for more. Passthrough
hosts are tunnelled without TLS interception and logged at CONNECT. Raw TCP and UDP are never
a way out. The matched route's index and DLP mode go into the flow's record for the addons
after this one (:mod:`.scan`, :mod:`.inject`).
"""

from __future__ import annotations

import logging
import traceback
from urllib.parse import unquote, unquote_plus

from mitmproxy import http, tcp, tls, udp

from bottle import urlpaths
from bottle.policy import DEFAULT_PORTS, HTTP_METHODS, Route, Routes
from bottle.runtime.egress import dlp, overrides
from bottle.runtime.egress.log import DecisionLog, call, first_time, flow_record
from bottle.runtime.egress.records import LogRecord
from bottle.runtime.egress.reload import Loaded, Reload

logger = logging.getLogger("bottle.egress")

HOW_TO_ASK = (
    "call the supervise MCP tool `egress-block` with this host, path and method and a "
    "justification (or ask the operator: bottle allow <slug> <host>)"
)
HOW_TO_PUSH = (
    "push to the git remote as configured: it is rewritten to git-gate, which scans the push "
    "and forwards it to the declared remote"
)


def host_of(authority: str) -> str:
    """The host part of a Host header / :authority value (no port, no brackets), lower-case."""
    value = authority.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def is_git_push(path: str) -> bool:
    """A smart-HTTP push: the receive-pack endpoint, or its discovery (?service=...)."""
    bare, _, query = path.partition("?")
    if unquote(bare).rstrip("/").lower().endswith("/git-receive-pack"):
        return True
    parts = query.replace(";", "&").split("&")
    return any(unquote_plus(part).strip().lower() == "service=git-receive-pack" for part in parts)


_OVERRIDE_NAMES = frozenset(name.encode() for name in overrides.METHOD_OVERRIDE_HEADERS)
#: Headers by which servers behind a front end (IIS URL Rewrite, Symfony, Zend, Envoy,
#: nginx setups) take the path from the request instead of its request line.
PATH_OVERRIDE_HEADERS = (
    "x-original-url",
    "x-rewrite-url",
    "x-override-url",
    "x-original-uri",
    "x-forwarded-uri",
    "x-forwarded-path",
    "x-envoy-original-path",
)
_PATH_OVERRIDE_NAMES = frozenset(name.encode() for name in PATH_OVERRIDE_HEADERS)
_QUERY_WHERE = f"query parameter {overrides.METHOD_OVERRIDE_PARAM}"
_BODY_WHERE = f"body field {overrides.METHOD_OVERRIDE_PARAM}"  # never the agent's spelling


def method_overrides(req: http.Request) -> list[tuple[str, str]]:
    """(where, method) for every method override the request's head carries."""
    found = []
    for name, value in req.headers.fields:
        normal = overrides.header_name(name)
        if normal in _OVERRIDE_NAMES:
            found.append((normal.decode(), value.decode("latin-1").strip().upper()))
    found += [(_QUERY_WHERE, v.strip().upper()) for v in overrides.query_claims(req.path)]
    return found


def _header_values(req: http.Request, name: bytes) -> list[str]:
    """The values of every header a CGI-style server files under ``name``: Unicorn (and Puma
    before 6.4.3) read ``Content_Type`` as ``Content-Type`` and join the two with a comma."""
    return [
        value.decode("latin-1")
        for field, value in req.headers.fields
        if overrides.header_name(field) == name
    ]


def _form_kinds(req: http.Request) -> list[tuple[str, str]]:
    return overrides.form_kinds(_header_values(req, b"content-type"), req.method)


def body_may_claim_a_method(route: Route, req: http.Request) -> bool:
    """Whether this body must be held to check its ``_method``, whatever the route's DLP
    mode: the route limits methods and the body is of a type frameworks read fields from.
    (Streamed, it would be upstream before egress could read the field.)"""
    return bool(route.methods) and bool(_form_kinds(req))


def body_method_overrides(req: http.Request) -> tuple[list[tuple[str, str]], str]:
    """(where, method) for every ``_method`` field of a held form, multipart or JSON body,
    and why egress cannot read the body ("" when it can): :mod:`.overrides`."""
    body = req.raw_content
    if not body:
        return [], ""
    encoding = ", ".join(_header_values(req, b"content-encoding"))
    try:
        found = overrides.body_claims(
            _header_values(req, b"content-type"), req.method, body, encoding
        )
    except overrides.Unreadable as exc:
        return [(_BODY_WHERE, "")], str(exc)
    return [(_BODY_WHERE, value.strip().upper()) for value in found], ""


def path_overrides(req: http.Request) -> list[tuple[str, str]]:
    """(header, path) for every path override header the request carries."""
    return [
        (overrides.header_name(name).decode(), value.decode("latin-1").strip())
        for name, value in req.headers.fields
        if overrides.header_name(name) in _PATH_OVERRIDE_NAMES
    ]


def wire_refusal(
    routes: Routes, host: str, scheme: str, port: int, shown: str | None = None
) -> str | None:
    """Why a request to a credentialed host may not go this way (None: it may); ``shown``
    is the host as the reason may show it.

    The host's credential goes only over TLS to the route's port; anything else to that host
    is refused, whatever other route names it, so the token is never in the clear or elsewhere.
    """
    wires = routes.credential_wires(host)
    if not wires or (scheme, port) in wires:
        return None
    ports = sorted(wire_port for _, wire_port in wires)
    host = shown or host
    how = "plain HTTP" if scheme != "https" else f"port {port}"
    where = " or ".join(str(p) for p in ports)
    first = ports[0]
    return (
        f"{host} gets a credential, which egress sends only over https to port {where}; "
        f"this request uses {how} ({scheme}, port {port}), so it is refused: use "
        f"https://{host}{'' if first == 443 else f':{first}'}/"
    )


def header_pairs(*blocks: http.Headers | None) -> list[tuple[str, str]]:
    """Every (name, value) of the given header blocks, repeated headers included."""
    return [
        (name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
        for block in blocks
        if block is not None
        for name, value in block.fields
    ]


def joined_headers(headers: http.Headers) -> dict[str, str]:
    """The request's headers by lower-case name, repeated ones joined as mitmproxy joins them:
    what route header rules match against."""
    joined: dict[str, str] = {}
    for name, value in header_pairs(headers):
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


class Guards:
    """The addon; see the module docstring."""

    def __init__(self, tables: Reload, log: DecisionLog) -> None:
        self.tables = tables
        self.log = log

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """CONNECT: note the route; passthrough tunnels are logged here, never seen again."""
        try:
            self._http_connect(flow)
        except Exception as exc:
            self.log.crash(flow, exc, "http_connect")

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """Tunnel TLS untouched for passthrough hosts; intercept everything else."""
        try:
            address = data.context.server.address
            host = (address[0] if address else data.client_hello.sni) or ""
            port = int(address[1]) if address else 443
            routes = self.tables.current.routes
            if host and routes.passthrough_for(host, port):
                sni = data.client_hello.sni
                # Domain fronting: a shared front end routes by the SNI, and by the Host header
                # inside the tunnel, which egress never sees. The SNI it can check: only the
                # route's own host is tunnelled; no SNI or another one (even another
                # passthrough host) is intercepted, so its requests meet the Host/SNI checks.
                if sni is not None and host_of(sni) == host_of(host):
                    data.ignore_connection = True
                else:
                    logger.warning(
                        "egress: passthrough to %s intercepted: the TLS server name is %s",
                        self.log.safe_host(host),
                        "missing" if sni is None else "another host",
                    )
        except Exception as exc:  # intercepting is the safe default: requests get matched
            logger.error(
                "egress: tls_clienthello failed (%s); intercepting\n%s",
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """The route is matched on the headers, before any of the body is read: whether the
        body streams depends on it (:mod:`.scan` decides)."""
        flow.request.stream = False  # held unless scan says otherwise
        self._head(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        """The head (when requestheaders did not run), then a held body's ``_method``."""
        self._head(flow)
        if not first_time(flow, "guards-body"):
            return
        try:
            self._body(flow)
        except Exception as exc:
            self.log.crash(flow, exc, "request")

    def _head(self, flow: http.HTTPFlow) -> None:
        if not first_time(flow, "guards"):
            return
        try:
            self._request(flow)
        except Exception as exc:
            self.log.crash(flow, exc, "request")

    def _body(self, flow: http.HTTPFlow) -> None:
        """A form or JSON body's ``_method``, when egress holds the body: nothing of it has
        left yet. It holds every body under ``dlp: block`` (the default), and under ``warn``
        or ``off`` those :func:`body_may_claim_a_method` names; only a body no route's
        method limit is at stake in streams unread (docs/dlp.md)."""
        req = flow.request
        if flow.response is not None or flow.error is not None or req.stream:
            return
        if flow_record(flow)["route"] is None:
            return
        claims, unreadable = body_method_overrides(req)
        if not claims:
            return
        current = self.tables.current
        refused = self._override_refusal(
            current,
            req,
            claims,
            path_overrides(req),
            joined_headers(req.headers),
            unreadable=unreadable,
        )
        if refused is not None:
            self.log.refuse(flow, 403, "egress_refused", refused, HOW_TO_ASK)

    def _override_refusal(
        self,
        current: Loaded,
        req: http.Request,
        methods: list[tuple[str, str]],
        paths: list[tuple[str, str]],
        headers: dict[str, str],
        *,
        unreadable: str = "",
    ) -> str | None:
        """Why a method or path the request claims besides its own is refused (None: every
        combination of them is one a route allows, so the override gains nothing).
        ``unreadable`` says why the body's claim is unknown (its method is "")."""
        host = req.host.lower().rstrip(".")
        scheme = req.scheme.lower()
        port = req.port or DEFAULT_PORTS.get(scheme, 0)
        shown_host = self.log.safe_host(host)
        routes = current.routes
        shown_path = dlp.redact(req.path.split("?", 1)[0], current.secrets)
        for where, claimed in paths:
            if claimed == req.path:
                continue
            # An absolute URL, a relative path or an ambiguous one: not a path a route names.
            if not claimed.startswith("/") or urlpaths.ambiguity(claimed) is not None:
                return (
                    f"the {where} header asks the server for another path than the request's, "
                    "which egress cannot match to a route; send the real path"
                )
            if is_git_push(claimed):
                return f"the {where} header asks the server for a git push: {HOW_TO_PUSH}"
        wanted = [(req.method.upper(), "")] + [(m, where) for where, m in methods]
        for claimed_method, method_where in wanted:
            for path_where, claimed_path in [("", req.path), *paths]:
                if claimed_method == wanted[0][0] and claimed_path == req.path:
                    continue  # the request as it is: its route matched already
                allowed = routes.match(
                    claimed_method, host, claimed_path, headers, scheme=scheme, port=port
                )
                if allowed is not None:
                    continue
                if method_where and unreadable and not claimed_method:
                    return (
                        f"egress cannot read the request body to check its "
                        f"{overrides.METHOD_OVERRIDE_PARAM} field: {unreadable}; a server could "
                        f"read a method there that no route for {shown_host} allows on "
                        f"{shown_path}. Send a plain UTF-8 form, JSON or multipart body, or a "
                        "type no server reads fields from (application/octet-stream)"
                    )
                if method_where:
                    named = (
                        claimed_method if claimed_method in HTTP_METHODS else "an unknown method"
                    )
                    return (
                        f"the {method_where} asks the server for {named}, which no "
                        f"route for {shown_host} allows on {shown_path}; send the real method"
                    )
                return (
                    f"the {path_where} header asks the server for a path no route for "
                    f"{shown_host} allows {req.method.upper()} on; send the real path"
                )
        return None

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        """Raw TCP is never a way out (non-HTTP inside a CONNECT tunnel, e.g. ssh)."""
        self._kill_raw(flow, "raw TCP")

    def udp_start(self, flow: udp.UDPFlow) -> None:
        self._kill_raw(flow, "raw UDP")

    def _kill_raw(self, flow: tcp.TCPFlow | udp.UDPFlow, what: str) -> None:
        try:
            address = flow.server_conn.address
            host = self.log.safe_host(address[0] if address else "")
            call(flow.kill)
            self.log.write(
                LogRecord(
                    method=what.removeprefix("raw "),
                    host=host,
                    decision="refuse",
                    reason=f"{what} is not allowed through egress",
                    request_bytes=0,
                )
            )
        except Exception as exc:
            logger.error("egress: %s hook failed: %s", what, type(exc).__name__)

    def _http_connect(self, flow: http.HTTPFlow) -> None:
        current = self.tables.current
        host = flow.request.host.lower().rstrip(".")
        record = flow_record(flow)
        record["host"] = self.log.safe_host(host)
        record["path"] = ""
        # A host no route names is not refused here but inside the intercepted TLS, so
        # the agent reads the JSON refusal body (a CONNECT 403's body is never shown).
        for index, route in enumerate(current.routes.routes):
            if route.matches_host(host):
                record["route"] = index
                break
        if current.routes.passthrough_for(host, flow.request.port):
            if not self.log.ready():
                return self.log.refuse_unlogged(flow)
            record["reason"] = "passthrough tunnel (TLS not intercepted)"
            # The tunnel's bytes are never seen again: log the decision now.
            self.log.log_flow(flow)

    def _request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        current = self.tables.current  # one read: a reload mid-request cannot mix two tables
        req = flow.request
        host = req.host.lower().rstrip(".")
        method = req.method.upper()
        path = req.path
        record = flow_record(flow)
        shown_host = record["host"] = self.log.safe_host(host)
        shown_path = record["path"] = dlp.redact(path.split("?", 1)[0], current.secrets)
        if not self.log.ready():  # fail closed: nothing leaves that the log cannot show
            return self.log.refuse_unlogged(flow)

        def refuse(reason: str, how: str = HOW_TO_ASK) -> None:
            self.log.refuse(flow, 403, "egress_refused", reason, how)

        host_header = req.host_header
        if host_header is not None and host_of(host_header) != host:
            return refuse(
                f"the Host header names {self.log.safe_host(host_of(host_header))} but the "
                f"request goes to {shown_host}; they must agree"
            )
        # Intercepted TLS: mitmproxy reuses the agent's SNI upstream, so it must agree too
        # (otherwise a shared front end could route the request by SNI to another site).
        sni = flow.client_conn.sni if flow.client_conn.tls else None
        if sni and host_of(sni) != host:
            return refuse(
                f"the TLS server name (SNI) names {self.log.safe_host(host_of(sni))} but the "
                f"request goes to {shown_host}; they must agree"
            )
        ambiguous = urlpaths.ambiguity(path)
        if ambiguous is not None:  # dot segments, ..;, %2f, %252e, backslashes
            return refuse(ambiguous)
        if is_git_push(path):
            return refuse(
                "git push over HTTP(S) is refused: pushes go through git-gate", HOW_TO_PUSH
            )

        scheme = req.scheme.lower()
        port = req.port or DEFAULT_PORTS.get(scheme, 0)
        wrong_wire = wire_refusal(current.routes, host, scheme, port, shown_host)
        if wrong_wire is not None:
            return refuse(wrong_wire)

        headers = joined_headers(req.headers)
        route = current.routes.match(method, host, path, headers, scheme=scheme, port=port)
        if route is None:
            if current.routes.allows_host(host):
                return refuse(
                    f"no route for {shown_host} allows {method} {shown_path} "
                    f"(over {scheme}, port {port})"
                )
            return refuse(f"no route names host {shown_host}")
        overridden = self._override_refusal(
            current, req, method_overrides(req), path_overrides(req), headers
        )
        if overridden is not None:
            return refuse(overridden)
        # By identity: equal routes may repeat, and == on models is slow on this path.
        record["route"] = next(i for i, r in enumerate(current.routes.routes) if r is route)
        record["dlp"] = route.dlp
        return None
