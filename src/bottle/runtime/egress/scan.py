"""DLP both ways: what the agent sends is scanned (:mod:`.dlp`) before a credential goes in,
and what comes back is scrubbed (:mod:`.scrub`) of every secret egress holds.

Requests: runs after :mod:`.guards` matched the request's route (its ``dlp`` mode is in the
flow's record): ``block`` refuses, ``warn`` lets through and logs, ``off`` does not scan. The
URL (path and query) and every header name and value are scanned at ``requestheaders``, where
the body's way is chosen too (mitmproxy sends a streamed body before the ``request`` hook):
``off`` streams it, ``warn`` streams it through a scanner, ``block`` holds it whole (at most
:data:`~.log.MAX_HELD_BODY`, enforced by :mod:`.holdback` also when no length is declared;
longer, it is refused with nothing of it sent upstream) and scans it
at ``request``, also decoded as its Content-Encoding says (one that does not decode is refused)
and under compression it does not declare. WebSocket messages from the agent are scanned with
the mode of their handshake's route.

Responses: whatever the route's ``dlp`` mode, header names and values, the reason phrase and
the trailers are scrubbed, and the body is streamed through a :class:`~.scrub.StreamScrubber`
(decoded first when compressed, and sent on as identity; checked on the side when compressed
undeclared) or, up to :data:`STREAM_ABOVE`, held and scrubbed whole
(:func:`~.scrub.scrub_whole`); the log record of the flow says which secrets were removed,
and why a body was cut or withheld.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from mitmproxy import http, websocket

from bottle.runtime.egress import decoding, dlp, scrub
from bottle.runtime.egress.guards import body_may_claim_a_method, header_pairs
from bottle.runtime.egress.log import (
    MAX_HELD_BODY,
    DecisionLog,
    FlowRecord,
    call,
    declared_length,
    first_time,
    flow_record,
)
from bottle.runtime.egress.records import LogRecord
from bottle.runtime.egress.reload import Reload

logger = logging.getLogger("bottle.egress")

#: Without secrets to scrub, responses longer than this are streamed rather than held whole.
STREAM_ABOVE = 1 << 20

HOW_TO_FIX_DLP = (
    "remove the secret from the request; you should never hold one. If this is a false "
    "positive, ask the operator (the route's dlp setting can be warn or off)"
)


class Scan:
    """The addon; see the module docstring."""

    def __init__(self, tables: Reload, log: DecisionLog) -> None:
        self.tables = tables
        self.log = log

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """The URL and headers are scanned before the credential goes in (:mod:`.inject` runs
        next), and the body's way is chosen: see :meth:`_choose_body`."""
        self._head(flow)
        try:
            if flow.response is None and flow.error is None:
                self._choose_body(flow)
        except Exception as exc:
            self.log.crash(flow, exc, "requestheaders")

    def request(self, flow: http.HTTPFlow) -> None:
        self._head(flow)  # when requestheaders did not run (a replayed or injected flow)
        if not first_time(flow, "scan-body"):
            return
        try:
            self._body(flow)
        except Exception as exc:
            self.log.crash(flow, exc, "request")

    def _head(self, flow: http.HTTPFlow) -> None:
        if not first_time(flow, "scan-head"):
            return
        try:
            record = flow_record(flow)
            if flow.response is not None or flow.error is not None or record["route"] is None:
                return
            if record["dlp"] == "off":
                return
            req = flow.request
            # The URL's text as DLP needs it (host, port, path and query), without building
            # mitmproxy's url, which re-encodes the host and costs more than the scan.
            url = f"{req.scheme}://{req.host}:{req.port}{req.path}"
            found = dlp.scan_request(url, header_pairs(req.headers), None, self._secrets())
            self._found(flow, found)
        except Exception as exc:
            self.log.crash(flow, exc, "requestheaders")

    def _secrets(self) -> tuple[dlp.KnownSecret, ...]:
        return self.tables.current.secrets

    def _choose_body(self, flow: http.HTTPFlow) -> None:
        """A route with ``dlp: off`` streams its body untouched; ``warn`` streams it through a
        scanner (findings logged, nothing held); ``block`` holds it whole to scan it before any
        of it leaves, up to :data:`~.log.MAX_HELD_BODY` (declared longer: refused at once and
        never read; undeclared and growing longer: refused by :mod:`.holdback` as it does).
        A form or JSON body on a route that limits methods is held under any mode, bounded
        the same way: its ``_method`` field could ask the server for another method."""
        record = flow_record(flow)
        if record["route"] is None:
            return
        req = flow.request
        length = declared_length(req)
        # HTTP/2 and 3 declare no body: mitmproxy streams one only if the headers did not end
        # the stream, so streaming costs nothing when there is none.
        body = length != 0 or req.is_http2 or req.is_http3
        route = self.tables.current.routes.routes[record["route"]]
        if body and record["dlp"] != "block" and body_may_claim_a_method(route, req):
            # Held whatever the DLP mode (still scanned only as the mode says): the guards
            # read its _method before any of it leaves.
            record["held_for_method"] = True
        elif record["dlp"] == "off":
            req.stream = body
            return
        elif record["dlp"] == "warn":
            if body:
                encodings = decoding.parse(req.headers.get("content-encoding", ""))
                req.stream = _Watched(self, flow, encodings)
            return
        if length is not None and length > MAX_HELD_BODY:
            self._too_long(flow, f"of {length} bytes")

    def too_long(self, flow: http.HTTPFlow) -> None:
        """A held body of undeclared length grew past the bound (:mod:`.holdback` calls this):
        refused, and nothing of it was sent."""
        self._too_long(flow, "of undeclared length")

    def _too_long(self, flow: http.HTTPFlow, size: str) -> None:
        if flow_record(flow).get("held_for_method"):
            self.log.refuse(
                flow,
                403,
                "egress_refused",
                f"the request body {size} cannot be checked before it is sent: this route "
                "allows only some methods, so egress reads a form or JSON body's _method "
                f"field first, and holds at most {MAX_HELD_BODY >> 20} MiB to read",
                "send a smaller body, or one of a type no server reads fields from "
                "(application/octet-stream)",
            )
            return
        self.log.refuse(
            flow,
            403,
            "egress_dlp",
            f"the request body {size} cannot be scanned before it is sent: egress holds "
            f"at most {MAX_HELD_BODY >> 20} MiB to scan",
            "send a smaller body, or ask the operator for dlp: warn (scanned as it streams) "
            "or off on this route",
            decision="dlp-block",
        )

    def _body(self, flow: http.HTTPFlow) -> None:
        record = flow_record(flow)
        if flow.response is not None or flow.error is not None or record["route"] is None:
            return
        if record["dlp"] == "off":
            return
        req = flow.request
        secrets = self._secrets()
        findings = dlp.scan_request("", header_pairs(req.trailers), None, secrets)
        if req.stream:
            # Streamed (dlp: warn): its body was scanned on the way; only trailers are left.
            self._found(flow, findings)
            return
        body, problem = dlp.scan_body(
            req.raw_content or b"", req.headers.get("content-encoding", ""), secrets
        )
        findings.extend(body)
        if problem and record["dlp"] == "block":
            # Bytes DLP cannot read are bytes it cannot vouch for, whatever the route.
            self.log.refuse(
                flow,
                403,
                "egress_dlp",
                f"the request body cannot be scanned whole: {problem}",
                "send the body uncompressed, or with a Content-Encoding it really has "
                "(gzip, deflate, br, zstd)",
                decision="dlp-block",
            )
            return
        if problem:
            record["reason"] = _joined(record["reason"], f"body not scanned whole: {problem}")
        self._found(flow, findings)

    def _found(self, flow: http.HTTPFlow, findings: list[dlp.Finding]) -> None:
        if not findings:
            return
        record = flow_record(flow)
        for finding in findings:
            if str(finding) not in record["findings"]:
                record["findings"].append(str(finding))
        reason = f"request carries {findings[0]}"
        if record["dlp"] == "block":
            self.log.refuse(flow, 403, "egress_dlp", reason, HOW_TO_FIX_DLP, decision="dlp-block")
            return
        if record["decision"] != "dlp-warn":
            record["decision"] = "dlp-warn"
            record["reason"] = _joined(record["reason"], reason)
            logger.warning(
                "egress: dlp-warn %s %s: %s", flow.request.method.upper(), record["host"], reason
            )

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        try:
            self._responseheaders(flow)
        except Exception as exc:
            logger.error("egress: responseheaders hook failed: %s", type(exc).__name__)
            call(flow.kill)  # a response egress could not scrub must not reach the agent

    def _responseheaders(self, flow: http.HTTPFlow) -> None:
        response = flow.response
        if response is None:
            return
        found = scrub.needles(self.tables.current.secrets)
        if not found:
            # Nothing to scrub: big or unknown-length bodies are streamed, not held whole.
            length = response.headers.get("content-length", "")
            response.stream = not (length.isdigit() and int(length) <= STREAM_ABOVE)
            return
        record = flow_record(flow)
        fields, names = scrub.scrub_fields(response.headers.fields, found)
        if names:
            response.headers.fields = fields
            _note(record, names, "headers")
        # HTTP/1's reason phrase is upstream's text too: "403 Bad token ghp_…" echoes it.
        reason, names = scrub.scrub(response.data.reason, found)
        if names:
            response.data.reason = reason
            _note(record, names, "reason phrase")
        no_body = response.status_code < 200 or response.status_code in {204, 304}
        if no_body or flow.request.method.upper() == "HEAD":
            return  # no body to scrub (101 switches to WebSocket, whose messages are scrubbed)
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) <= STREAM_ABOVE:
            return  # held whole and scrubbed at the response hook: one write, no tail held
        encodings = decoding.parse(response.headers.get("content-encoding", ""))
        known = len(encodings) <= decoding.MAX_LAYERS and all(
            e in decoding.KNOWN for e in encodings
        )
        scrubber = scrub.StreamScrubber(found, encodings if known else ())
        if not known:
            # Bytes egress cannot decode cannot be scrubbed: the body is withheld.
            scrubber.done = True
            record["reason"] = _joined(
                record["reason"], "response body withheld (content-encoding egress cannot decode)"
            )
        response.headers.pop("content-encoding", None)
        # Scrubbing changes the length: the body goes out chunked (HTTP/2 frames it itself).
        response.headers.pop("content-length", None)
        if not (flow.request.is_http2 or flow.request.is_http3):
            response.headers["transfer-encoding"] = "chunked"
        response.stream = _Recorded(scrubber, record)

    def response(self, flow: http.HTTPFlow) -> None:
        try:
            self._response(flow)
        except Exception as exc:
            logger.error("egress: response hook failed: %s", type(exc).__name__)
            call(flow.kill)  # a response egress could not scrub must not reach the agent

    def _response(self, flow: http.HTTPFlow) -> None:
        """Trailers, which mitmproxy sends after this hook whether the body was streamed or
        held; then a small body, held whole: decoded if compressed, scrubbed, and sent on as
        identity only if something was removed (else as it came)."""
        response = flow.response
        if response is None:
            return
        found = scrub.needles(self.tables.current.secrets)
        if not found:
            return
        if response.trailers:
            fields, names = scrub.scrub_fields(response.trailers.fields, found)
            if names:
                response.trailers.fields = fields
                _note(flow_record(flow), names, "trailers")
        if response.stream or not response.raw_content:
            return
        record = flow_record(flow)
        header = response.headers.get("content-encoding", "")
        encodings = decoding.parse(header)
        try:
            plain = b"".join(
                decoding.decode_stream([response.raw_content], encodings, scrub.MAX_SMALL_DECODED)
            )
        except decoding.DecodeError as exc:
            note = f"[bottle: this response was withheld: {exc}]\n".encode()
            response.headers.pop("content-encoding", None)
            response.raw_content = note
            response.headers["content-length"] = str(len(note))
            record["reason"] = _joined(record["reason"], f"response body withheld: {exc}")
            return
        # Forms, decoded views and compression no header declares, as a stream would be.
        clean, names, problem = scrub.scrub_whole(plain, found)
        if problem:
            record["reason"] = _joined(record["reason"], f"response body withheld: {problem}")
        elif not names:
            return
        _note(record, names, "body")
        response.headers.pop("content-encoding", None)
        response.raw_content = clean
        response.headers["content-length"] = str(len(clean))

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """DLP for WebSocket messages the agent sends, with the route's mode from the handshake;
        messages from upstream are scrubbed of secrets."""
        try:
            record = flow_record(flow)
            if flow.websocket is None or not flow.websocket.messages:
                return
            message = flow.websocket.messages[-1]
            if not message.from_client:
                self._scrub_message(record, message)
                return
            if record["dlp"] == "off":
                return
            text = dlp.decode_body(message.content)
            findings = dlp.scan_text(text, "websocket message", self.tables.current.secrets)
            if not findings:
                return
            decision = "dlp-block" if record["dlp"] == "block" else "dlp-warn"
            if decision == "dlp-block":
                call(message.drop)
            self.log.write(
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
            # A message egress could not scan or scrub goes nowhere, and nor does the rest of
            # the connection: as for an HTTP response it could not scrub.
            logger.error(
                "egress: websocket_message hook failed: %s; connection closed",
                type(exc).__name__,
            )
            self._fail_closed(flow)

    def _fail_closed(self, flow: http.HTTPFlow) -> None:
        try:
            if flow.websocket is not None and flow.websocket.messages:
                call(flow.websocket.messages[-1].drop)
        finally:
            call(flow.kill)
        with contextlib.suppress(Exception):  # the record is a courtesy; the kill is not
            self._log_message(
                flow_record(flow),
                decision="refuse",
                reason="a message could not be scanned: dropped, and the connection closed",
            )

    def _scrub_message(self, record: FlowRecord, message: websocket.WebSocketMessage) -> None:
        found = scrub.needles(self.tables.current.secrets)
        if not found:
            return
        content, names = scrub.scrub(message.content, found)
        if not names:
            return
        message.content = content
        self._log_message(
            record,
            decision="allow",
            reason="message from upstream scrubbed",
            scrubbed=tuple(f"secret:{name} in websocket message" for name in sorted(names)),
            response_bytes=len(content),
        )

    def _log_message(self, record: FlowRecord, **fields: Any) -> None:
        """One decision-log line about a WebSocket message of the flow ``record`` names."""
        self.log.write(
            LogRecord(
                method="WEBSOCKET",
                host=record["host"],
                path=record["path"],
                route=record["route"],
                **fields,
            )
        )


def _joined(before: str, more: str) -> str:
    return f"{before}; {more}" if before else more


def _note(record: FlowRecord, names: set[str], where: str) -> None:
    for name in sorted(names):
        entry = f"secret:{name} in {where}"
        if entry not in record["scrubbed"]:
            record["scrubbed"].append(entry)


class _Watched:
    """A ``flow.request.stream`` callable for ``dlp: warn``: every piece goes on at once and
    is scanned on the way (also decoded as its Content-Encoding says); findings are noted in
    the flow's record, logged when the response comes."""

    def __init__(self, scan: Scan, flow: http.HTTPFlow, encodings: list[str]) -> None:
        self.scan = scan
        self.flow = flow
        secrets = scan._secrets()
        self.raw = dlp.BodyScanner("body", secrets)
        self.decoded = dlp.BodyScanner("body", secrets) if encodings else None
        self.decoder: decoding.Decoder | None = None
        self.problem = ""
        if encodings:
            try:
                self.decoder = decoding.Decoder(encodings)
            except decoding.DecodeError as exc:
                self.problem = str(exc)

    def __call__(self, data: bytes) -> bytes:
        try:
            self._feed(data)
        except Exception as exc:  # the body is on its way: a scan failure is only logged
            logger.error("egress: warn scan failed: %s", type(exc).__name__)
            self.problem = self.problem or "scan failed"
        return data

    def _feed(self, data: bytes) -> None:
        self.raw.feed(data)
        if self.decoder is not None and self.decoded is not None and not self.problem:
            try:
                for piece in self.decoder.feed(data) if data else self.decoder.flush():
                    self.decoded.feed(piece)
            except decoding.DecodeError as exc:
                self.problem = str(exc)
        if data:
            return
        findings = self.raw.close()
        if self.decoded is not None:
            findings += [
                f for f in self.decoded.close() if f.kind not in {x.kind for x in findings}
            ]
        record = flow_record(self.flow)
        if self.problem:
            record["reason"] = _joined(record["reason"], f"body not scanned whole: {self.problem}")
        self.scan._found(self.flow, findings)


class _Recorded:
    """The scrubber as mitmproxy calls it, noting in the flow's record what it removed (the
    record is logged at the ``response`` hook, after the last piece went through)."""

    def __init__(self, scrubber: scrub.StreamScrubber, record: FlowRecord) -> None:
        self.scrubber = scrubber
        self.record = record

    def __call__(self, data: bytes) -> Iterator[bytes]:
        yield from self.scrubber(data)
        if self.scrubber.found:
            _note(self.record, self.scrubber.found, "body")
        if self.scrubber.problem and "withheld" not in self.record["reason"]:
            self.record["reason"] = _joined(
                self.record["reason"], f"response body cut short: {self.scrubber.problem}"
            )
