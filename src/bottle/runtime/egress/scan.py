"""DLP both ways: what the agent sends is scanned (:mod:`.dlp`) before a credential goes in,
and what comes back is scrubbed (:mod:`.scrub`) of every secret egress holds.

Requests: runs after :mod:`.guards` matched the request's route (its ``dlp`` mode is in the
flow's record): ``block`` refuses, ``warn`` lets through and logs, ``off`` does not scan. The
URL (path and query), every header name and value, and the whole body are scanned, the body
also decoded as its Content-Encoding says (a declared encoding that does not decode is refused
on a route that injects a credential) and under compression it does not declare. WebSocket
messages from the agent are scanned with the mode of their handshake's route.

Responses: whatever the route's ``dlp`` mode, header names and values are scrubbed and the
body is streamed through a :class:`~.scrub.StreamScrubber` (decoded first when compressed, and
sent on as identity); the log record of the flow says which secrets were removed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from mitmproxy import http, websocket

from bottle.runtime.egress import decoding, dlp, scrub
from bottle.runtime.egress.guards import header_pairs
from bottle.runtime.egress.log import DecisionLog, FlowRecord, call, flow_record
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

    def request(self, flow: http.HTTPFlow) -> None:
        try:
            self._request(flow)
        except Exception as exc:
            self.log.crash(flow, exc, "request")

    def _request(self, flow: http.HTTPFlow) -> None:
        record = flow_record(flow)
        if flow.response is not None or flow.error is not None or record["route"] is None:
            return
        if record["dlp"] == "off":
            return
        req = flow.request
        secrets = self.tables.current.secrets
        findings = dlp.scan_request(req.url, header_pairs(req.headers, req.trailers), None, secrets)
        body, problem = dlp.scan_body(
            req.raw_content or b"", req.headers.get("content-encoding", ""), secrets
        )
        findings.extend(body)
        if problem:
            route = self.tables.current.routes.routes[record["route"]]
            if route.auth is not None:
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
        if not findings:
            return
        record["findings"] = [str(f) for f in findings]
        reason = f"request carries {findings[0]}"
        if record["dlp"] == "block":
            self.log.refuse(flow, 403, "egress_dlp", reason, HOW_TO_FIX_DLP, decision="dlp-block")
            return
        record["decision"] = "dlp-warn"
        record["reason"] = reason
        logger.warning("egress: dlp-warn %s %s: %s", req.method.upper(), record["host"], reason)

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
        """A small body, held whole: decoded if compressed, scrubbed, and sent on as identity
        only if something was removed (else as it came)."""
        response = flow.response
        if response is None or response.stream or not response.raw_content:
            return
        found = scrub.needles(self.tables.current.secrets)
        if not found:
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
        clean, names = scrub.scrub(plain, found)
        if not names:
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
            logger.error("egress: websocket_message hook failed: %s", type(exc).__name__)

    def _scrub_message(self, record: FlowRecord, message: websocket.WebSocketMessage) -> None:
        found = scrub.needles(self.tables.current.secrets)
        if not found:
            return
        content, names = scrub.scrub(message.content, found)
        if not names:
            return
        message.content = content
        self.log.write(
            LogRecord(
                method="WEBSOCKET",
                host=record["host"],
                path=record["path"],
                route=record["route"],
                decision="allow",
                reason="message from upstream scrubbed",
                scrubbed=tuple(f"secret:{name} in websocket message" for name in sorted(names)),
                response_bytes=len(content),
            )
        )


def _joined(before: str, more: str) -> str:
    return f"{before}; {more}" if before else more


def _note(record: FlowRecord, names: set[str], where: str) -> None:
    for name in sorted(names):
        entry = f"secret:{name} in {where}"
        if entry not in record["scrubbed"]:
            record["scrubbed"].append(entry)


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
