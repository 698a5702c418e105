"""Outbound DLP: what the agent sends is scanned (:mod:`.dlp`) before a credential goes in.

Runs after :mod:`.guards` matched the request's route (its ``dlp`` mode is in the flow's
record): ``block`` refuses, ``warn`` lets through and logs, ``off`` does not scan. WebSocket
messages from the agent are scanned with the mode of their handshake's route.
"""

from __future__ import annotations

import logging

from mitmproxy import http

from bottle.runtime.egress import dlp
from bottle.runtime.egress.guards import header_pairs
from bottle.runtime.egress.log import DecisionLog, call, flow_record
from bottle.runtime.egress.records import LogRecord
from bottle.runtime.egress.reload import Reload

logger = logging.getLogger("bottle.egress")

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
        findings = dlp.scan_request(
            req.url,
            header_pairs(req.headers, req.trailers),
            req.get_content(strict=False),
            self.tables.current.secrets,
        )
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

    def websocket_message(self, flow: http.HTTPFlow) -> None:
        """DLP for WebSocket messages the agent sends, with the route's mode from the handshake."""
        try:
            record = flow_record(flow)
            if flow.websocket is None or not flow.websocket.messages or record["dlp"] == "off":
                return
            message = flow.websocket.messages[-1]
            if not message.from_client:
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
