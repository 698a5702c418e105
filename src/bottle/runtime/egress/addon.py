"""The egress sidecar's mitmproxy addon: the agent's only way out over HTTP(S).

Loaded by ``mitmdump -s`` (see ``__main__``), so this module uses absolute imports only.

- Routes come from ``live-config/egress/routes.yaml``, parsed by the same :mod:`bottle.policy`
  models the host validated them with. The table in force is one frozen :class:`Loaded`
  reference; hooks read it once per flow and never block.
- SIGHUP re-reads the file. A bad file is logged and the old table stays; either way the
  status file (``status/egress.json``) says what is in force, which is how the host confirms
  a reload. Open connections are never closed by a reload.
- Every request is matched; a miss is a real 403 with a JSON body telling the agent how to
  ask for more. git pushes are always refused (they go through git-gate). Routes with ``auth``
  get their credential injected here, from this container's environment, after the agent's
  own credential headers are stripped. DLP scans what leaves before the credential goes in.
- One JSON line per request goes to ``logs/egress.jsonl``: no headers, no query, no secrets.
- A hook that fails refuses its flow with a 500; it never takes the proxy down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple, TypedDict, cast
from urllib.parse import unquote, unquote_plus

from mitmproxy import http, tcp, tls, udp

from bottle.policy import Route, Routes, RoutesFileError, parse_routes_file
from bottle.runtime import egress as paths
from bottle.runtime.egress import dlp
from bottle.runtime.egress.connect import ConnectGuard
from bottle.runtime.egress.records import Decision, LogRecord
from bottle.state import atomic_write, now

logger = logging.getLogger("bottle.egress")
#: mitmproxy's ALERT level (INFO + 1): shown by ``termlog_verbosity=alert``, which hides the
#: per-connection info lines. Reload outcomes and startup use it.
NOTICE = logging.INFO + 1

HOW_TO_ASK = (
    "call the supervise MCP tool `egress-block` with this host, path and method and a "
    "justification (or ask the operator: bottle allow <slug> <host>)"
)
HOW_TO_PUSH = (
    "push to the git remote as configured: it is rewritten to git-gate, which scans the push "
    "and forwards it to the declared remote"
)
HOW_TO_FIX_DLP = (
    "remove the secret from the request; you should never hold one. If this is a false "
    "positive, ask the operator (the route's dlp setting can be warn or off)"
)

_META = "bottle_egress"  # flow.metadata key: the decision record of this flow


class Loaded(NamedTuple):
    """The route table in force, with what DLP needs to know about it. Swapped whole.

    (A NamedTuple, not a dataclass: mitmproxy runs this file as a script that is not in
    ``sys.modules``, where dataclasses cannot resolve their annotations.)
    """

    routes: Routes
    generation: int
    routes_sha256: str | None
    loaded_at: str
    secrets: tuple[dlp.KnownSecret, ...] = ()


class _Record(TypedDict):
    """What the addon decided about one flow; kept in ``flow.metadata`` until it is logged.

    Plain JSON-friendly values only, so mitmproxy can copy or save the flow as usual.
    """

    decision: Decision
    reason: str
    route: int | None  # index into the route table in force
    dlp: str  # the matched route's dlp mode
    findings: list[str]  # "kind in where", never the matched text
    host: str  # redacted for logs
    path: str  # no query, redacted for logs
    logged: bool


def _host_of(authority: str) -> str:
    """The host part of a Host header / :authority value (no port, no brackets), lower-case."""
    value = authority.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _is_git_push(path: str) -> bool:
    """A smart-HTTP push: the receive-pack endpoint, or its discovery (?service=...)."""
    bare, _, query = path.partition("?")
    if unquote(bare).rstrip("/").lower().endswith("/git-receive-pack"):
        return True
    parts = query.replace(";", "&").split("&")
    return any(unquote_plus(part).strip().lower() == "service=git-receive-pack" for part in parts)


def _call(method: Callable[[], object]) -> None:
    """Call a mitmproxy method that is untyped in some versions (``kill``, ``drop``)."""
    method()


def _header_pairs(*blocks: http.Headers | None) -> list[tuple[str, str]]:
    """Every (name, value) of the given header blocks, repeated headers included."""
    return [
        (name.decode("utf-8", "replace"), value.decode("utf-8", "replace"))
        for block in blocks
        if block is not None
        for name, value in block.fields
    ]


def _has_dot_segments(path: str) -> bool:
    """``.`` or ``..`` segments (raw or %-encoded) would let a server resolve a path that a
    prefix rule did not see, e.g. ``/allowed/../admin``."""
    bare = unquote(path.split("?", 1)[0]).replace("\\", "/")
    return any(segment in {".", ".."} for segment in bare.split("/"))


class Egress:
    """The mitmproxy addon. One instance per process; see the module docstring."""

    def __init__(
        self,
        routes_path: Path | None = None,
        status_path: Path | None = None,
        log_path: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.environ: Mapping[str, str] = env
        self.routes_path = routes_path or paths.routes_path(env)
        self.status_path = status_path or paths.status_path(env)
        self.log_path = log_path or paths.log_path(env)
        # Deny everything until running() has loaded the file.
        self.current = Loaded(
            routes=Routes(),
            generation=0,
            routes_sha256=None,
            loaded_at=now().isoformat(timespec="milliseconds"),
        )
        self.last_error: str | None = None
        self.last_error_sha256: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # ------------------------------------------------------------------ lifecycle

    def running(self) -> None:
        """mitmproxy is listening: load the routes, publish the status, listen for SIGHUP."""
        if self.current.generation == 0:
            self.reload()
        else:
            self.write_status()
        try:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            self._loop = loop
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            logger.warning("egress: no SIGHUP reload (%s)", exc)

    def done(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_signal_handler(signal.SIGHUP)
        self._loop = None

    def _on_sighup(self) -> None:
        try:
            self.reload()
        except Exception as exc:  # never let a reload take the proxy down
            logger.error("egress: reload failed unexpectedly: %s", type(exc).__name__)

    def reload(self) -> bool:
        """Re-read the routes file. On success swap the table and bump the generation; on
        failure keep the table in force and record the error. Always rewrite the status file.
        Returns whether the new file is now in force."""
        data: bytes | None = None
        try:
            data = self.routes_path.read_bytes()
            routes = parse_routes_file(data, str(self.routes_path))
        except (OSError, RoutesFileError) as exc:
            if isinstance(exc, OSError):
                message = f"cannot read routes file {self.routes_path}: {exc.strerror or exc}"
            else:
                message = str(exc)
            self.last_error = message
            self.last_error_sha256 = paths.routes_digest(data) if data is not None else None
            if self.current.generation == 0:
                # First load: nothing was in force, so "no routes" (deny all) is.
                self.current = Loaded(
                    routes=Routes(),
                    generation=1,
                    routes_sha256=None,
                    loaded_at=now().isoformat(timespec="milliseconds"),
                    secrets=self._secrets(Routes()),
                )
                logger.error("egress: %s; no routes are in force (all egress refused)", message)
            else:
                logger.error(
                    "egress: reload rejected, generation %d stays in force: %s",
                    self.current.generation,
                    message,
                )
            self.write_status()
            return False
        self.current = Loaded(
            routes=routes,
            generation=self.current.generation + 1,
            routes_sha256=paths.routes_digest(data),
            loaded_at=now().isoformat(timespec="milliseconds"),
            secrets=self._secrets(routes),
        )
        self.last_error = None
        self.last_error_sha256 = None
        logger.log(
            NOTICE,
            "egress: routes generation %d in force (%d routes)",
            self.current.generation,
            len(routes.routes),
        )
        self.write_status()
        return True

    def _secrets(self, routes: Routes) -> tuple[dlp.KnownSecret, ...]:
        names = dlp.secret_names(routes.token_refs, self.environ)
        return dlp.known_secrets(names, self.environ)

    def status(self) -> paths.EgressStatus:
        current = self.current
        return paths.EgressStatus(
            generation=current.generation,
            routes_sha256=current.routes_sha256,
            routes=len(current.routes.routes),
            loaded_at=current.loaded_at,
            error=self.last_error,
            error_sha256=self.last_error_sha256,
        )

    def write_status(self) -> None:
        body = self.status().model_dump_json(indent=2) + "\n"
        try:
            atomic_write(self.status_path, body)
        except OSError as exc:
            logger.error("egress: cannot write status file %s: %s", self.status_path, exc)

    # ------------------------------------------------------------------ hooks

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """CONNECT: note the route; passthrough tunnels are logged here, never seen again."""
        try:
            self._http_connect(flow)
        except Exception as exc:
            self._crash(flow, exc, "http_connect")

    def tls_clienthello(self, data: tls.ClientHelloData) -> None:
        """Tunnel TLS untouched for passthrough hosts; intercept everything else."""
        try:
            address = data.context.server.address
            host = (address[0] if address else data.client_hello.sni) or ""
            routes = self.current.routes
            if host and routes.passthrough_for(host):
                sni = data.client_hello.sni
                # A different SNI inside the tunnel must itself be passthrough, or we look in.
                if sni is None or _host_of(sni) == _host_of(host) or routes.passthrough_for(sni):
                    data.ignore_connection = True
        except Exception as exc:  # intercepting is the safe default: requests get matched
            logger.error(
                "egress: tls_clienthello failed (%s); intercepting\n%s",
                type(exc).__name__,
                "".join(traceback.format_tb(exc.__traceback__)),
            )

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        # stream_large_bodies streams responses; a request body is always held whole so
        # that DLP sees it before anything leaves.
        flow.request.stream = False

    def request(self, flow: http.HTTPFlow) -> None:
        try:
            self._request(flow)
        except Exception as exc:
            self._crash(flow, exc, "request")

    def response(self, flow: http.HTTPFlow) -> None:
        try:
            self._log_flow(flow)
        except Exception as exc:
            logger.error("egress: response hook failed: %s", type(exc).__name__)

    def error(self, flow: http.HTTPFlow) -> None:
        try:
            record = self._record(flow)
            if record["decision"] in {"allow", "dlp-warn"} and not record["logged"]:
                before = record["reason"]
                record["reason"] = f"{before}; upstream error" if before else "upstream error"
            self._log_flow(flow)
        except Exception as exc:
            logger.error("egress: error hook failed: %s", type(exc).__name__)

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """DLP for WebSocket messages the agent sends, with the route's mode from the handshake."""
        try:
            record = self._record(flow)
            if flow.websocket is None or not flow.websocket.messages or record["dlp"] == "off":
                return
            message = flow.websocket.messages[-1]
            if not message.from_client:
                return
            text = dlp.decode_body(message.content)
            findings = dlp.scan_text(text, "websocket message", self.current.secrets)
            if not findings:
                return
            decision = "dlp-block" if record["dlp"] == "block" else "dlp-warn"
            if decision == "dlp-block":
                _call(message.drop)
            self._write_log(
                LogRecord(
                    method="WEBSOCKET",
                    host=record["host"],
                    path=record["path"],
                    route=record["route"],
                    decision=decision,
                    reason=f"message carries {findings[0]}",
                    findings=tuple(str(f) for f in findings),
                    request_bytes=len(message.content),
                )
            )
        except Exception as exc:
            logger.error("egress: websocket_message hook failed: %s", type(exc).__name__)

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        """Raw TCP is never a way out (non-HTTP inside a CONNECT tunnel, e.g. ssh)."""
        self._kill_raw(flow, "raw TCP")

    def udp_start(self, flow: udp.UDPFlow) -> None:
        self._kill_raw(flow, "raw UDP")

    # ------------------------------------------------------------------ internals

    def _kill_raw(self, flow: tcp.TCPFlow | udp.UDPFlow, what: str) -> None:
        try:
            address = flow.server_conn.address
            host = self._safe_host(address[0] if address else "")
            _call(flow.kill)
            self._write_log(
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

    @staticmethod
    def _record(flow: http.HTTPFlow) -> _Record:
        record = flow.metadata.get(_META)
        if not isinstance(record, dict):
            record = _Record(
                decision="allow",
                reason="",
                route=None,
                dlp="off",
                findings=[],
                host="",
                path="",
                logged=False,
            )
            flow.metadata[_META] = record
        return cast(_Record, record)

    def _safe_host(self, host: str) -> str:
        return dlp.redact(host.lower(), self.current.secrets)

    def _http_connect(self, flow: http.HTTPFlow) -> None:
        current = self.current
        host = flow.request.host.lower().rstrip(".")
        record = self._record(flow)
        record["host"] = self._safe_host(host)
        record["path"] = ""
        # A host no route names is not refused here but inside the intercepted TLS, so
        # the agent reads the JSON refusal body (a CONNECT 403's body is never shown).
        for index, route in enumerate(current.routes.routes):
            if route.matches_host(host):
                record["route"] = index
                break
        if current.routes.passthrough_for(host):
            record["reason"] = "passthrough tunnel (TLS not intercepted)"
            # The tunnel's bytes are never seen again: log the decision now.
            self._log_flow(flow)

    def _request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return
        current = self.current  # one read: a reload mid-request cannot mix two tables
        req = flow.request
        host = req.host.lower().rstrip(".")
        method = req.method.upper()
        path = req.path
        record = self._record(flow)
        shown_host = record["host"] = self._safe_host(host)
        shown_path = record["path"] = dlp.redact(path.split("?", 1)[0], current.secrets)

        host_header = req.host_header
        if host_header is not None and _host_of(host_header) != host:
            self._refuse(
                flow,
                403,
                "egress_refused",
                f"the Host header names {self._safe_host(_host_of(host_header))} but the "
                f"request goes to {shown_host}; they must agree",
                HOW_TO_ASK,
            )
            return

        # Intercepted TLS: mitmproxy reuses the agent's SNI upstream, so it must agree too
        # (otherwise a shared front end could route the request by SNI to another site).
        sni = flow.client_conn.sni if flow.client_conn.tls else None
        if sni and _host_of(sni) != host:
            self._refuse(
                flow,
                403,
                "egress_refused",
                f"the TLS server name (SNI) names {self._safe_host(_host_of(sni))} but the "
                f"request goes to {shown_host}; they must agree",
                HOW_TO_ASK,
            )
            return

        if _has_dot_segments(path):
            self._refuse(
                flow,
                403,
                "egress_refused",
                "the path has dot segments (/./ or /../, maybe %-encoded); send the "
                "normalized path",
                HOW_TO_ASK,
            )
            return

        if _is_git_push(path):
            self._refuse(
                flow,
                403,
                "egress_refused",
                "git push over HTTP(S) is refused: pushes go through git-gate",
                HOW_TO_PUSH,
            )
            return

        headers: dict[str, str] = {}
        for name, value in _header_pairs(req.headers):  # repeated headers joined, like mitmproxy
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        route = current.routes.match(method, host, path, headers)
        if route is None:
            if current.routes.allows_host(host):
                reason = f"no route for {shown_host} allows {method} {shown_path}"
            else:
                reason = f"no route names host {shown_host}"
            self._refuse(flow, 403, "egress_refused", reason, HOW_TO_ASK)
            return
        # By identity: equal routes may repeat, and == on models is slow on this path.
        record["route"] = next(i for i, r in enumerate(current.routes.routes) if r is route)
        record["dlp"] = route.dlp

        if route.dlp != "off":
            findings = dlp.scan_request(
                req.url,
                _header_pairs(req.headers, req.trailers),
                req.get_content(strict=False),
                current.secrets,
            )
            if findings:
                record["findings"] = [str(f) for f in findings]
                reason = f"request carries {findings[0]}"
                if route.dlp == "block":
                    self._refuse(
                        flow, 403, "egress_dlp", reason, HOW_TO_FIX_DLP, decision="dlp-block"
                    )
                    return
                record["decision"] = "dlp-warn"
                record["reason"] = reason
                logger.warning("egress: dlp-warn %s %s: %s", method, shown_host, reason)

        if not self._inject(flow, route):
            return
        req.headers.pop("Proxy-Authorization", None)

    def _inject(self, flow: http.HTTPFlow, route: Route) -> bool:
        """Put the route's credential in; False (and a 502 refusal) if it is not configured."""
        auth = route.auth
        if auth is None:
            return True
        secret = self.environ.get(auth.token_ref, "").strip()
        if not secret:
            self._refuse(
                flow,
                502,
                "egress_credential_missing",
                f"the route for {route.host} injects a credential from ${auth.token_ref}, "
                "which is not set in the egress container",
                "ask the operator to set "
                f"{auth.token_ref} in the environment bottle is started from, then restart "
                "the bottle",
            )
            return False
        headers = flow.request.headers
        for name in {"Authorization", "Proxy-Authorization", auth.header}:
            headers.pop(name, None)
        headers[auth.header] = auth.header_value(secret)
        return True

    def _refuse(
        self,
        flow: http.HTTPFlow,
        status: int,
        error: str,
        reason: str,
        how: str,
        *,
        decision: Decision = "refuse",
    ) -> None:
        record = self._record(flow)
        record["decision"] = decision
        record["reason"] = reason
        body: dict[str, Any] = {
            "error": error,
            "reason": reason,
            "host": record["host"],
            "method": flow.request.method.upper(),
            "path": record["path"],
        }
        if error == "egress_refused":
            body["how_to_ask"] = how
        else:
            body["how_to_fix"] = how
        if record["findings"]:
            body["findings"] = record["findings"]
        flow.response = http.Response.make(
            status,
            json.dumps(body, indent=2) + "\n",
            {
                "content-type": "application/json",
                "x-bottle-egress": "refused" if decision == "refuse" else decision,
            },
        )
        self._log_flow(flow)

    def _crash(self, flow: http.HTTPFlow, exc: Exception, hook: str) -> None:
        """An unexpected failure: refuse this flow with a 500, log, never propagate."""
        # The type and the frames only: an exception message may quote request data.
        logger.error(
            "egress: %s hook failed on a flow (%s); refused with 500\n%s",
            hook,
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        try:
            record = self._record(flow)
            record["logged"] = False
            if not record["host"]:
                record["host"] = self._safe_host(flow.request.host)
            self._refuse(
                flow,
                500,
                "egress_internal_error",
                f"the egress proxy failed on this request ({type(exc).__name__}); it was not sent",
                "retry; if it keeps failing, tell the operator (egress log)",
            )
        except Exception as inner:
            logger.error("egress: could not refuse the flow: %s", type(inner).__name__)
            _call(flow.kill)

    def _log_flow(self, flow: http.HTTPFlow) -> None:
        record = self._record(flow)
        if record["logged"]:
            return
        record["logged"] = True
        response = flow.response
        request_bytes = len(flow.request.raw_content or b"")
        self._write_log(
            LogRecord(
                method=flow.request.method.upper(),
                host=record["host"] or self._safe_host(flow.request.host),
                path=record["path"],
                route=record["route"],
                decision=record["decision"],
                reason=record["reason"],
                findings=tuple(record["findings"]) or None,
                request_bytes=request_bytes,
                response_bytes=(len(response.raw_content or b"") if response is not None else None),
                status=response.status_code if response is not None else None,
            )
        )

    def _write_log(self, record: LogRecord) -> None:
        stamped = record.model_copy(
            update={
                "time": now().isoformat(timespec="milliseconds"),
                "generation": self.current.generation,
            }
        )
        data = stamped.to_line()
        try:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.log_path.open("a", encoding="utf-8") as fh:
                fh.write(data)
        except OSError as exc:
            logger.error("egress: cannot append to %s: %s", self.log_path, exc)


def make_addons() -> list[object]:
    """The addons in the order mitmproxy runs their hooks: route decisions first, then the
    connect-time guard for what they allowed."""
    egress = Egress()
    return [egress, ConnectGuard(egress)]


addons = make_addons()
