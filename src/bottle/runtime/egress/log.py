"""The decision log and the refusals: one :class:`LogRecord` JSON line per decision.

Each flow carries what the addons decided about it in ``flow.metadata`` (a :class:`FlowRecord`)
until it is logged, once: at the refusal, at the response, at an upstream error, or (for a
passthrough tunnel) at CONNECT. A refusal is a real HTTP response with a JSON body that tells
the agent why and how to ask for more. No headers, no query, no secrets are logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NotRequired, TextIO, TypedDict, cast

from mitmproxy import http

from bottle.files import now
from bottle.runtime.egress import dlp, records
from bottle.runtime.egress.records import Decision, LogRecord
from bottle.runtime.egress.reload import Reload, absolute_option

logger = logging.getLogger("bottle.egress")

LOG_OPTION = "bottle_log"
_META = "bottle_egress"  # flow.metadata key: the decision record of this flow

#: The most request body egress reads whole: to scan it, or to refuse a request whose body is
#: still coming (mitmproxy reads a body to its end before it answers). A body that is longer
#: (or whose length is not declared) is streamed when its route needs no scan, and otherwise
#: never read: its flow is closed, with the reason in the decision log.
MAX_HELD_BODY = 32 << 20


class FlowRecord(TypedDict):
    """What the addons decided about one flow; kept in ``flow.metadata`` until it is logged.

    Plain JSON-friendly values only, so mitmproxy can copy or save the flow as usual.
    """

    decision: Decision
    reason: str
    route: int | None  # index into the route table in force
    dlp: str  # the matched route's dlp mode
    findings: list[str]  # "kind in where", never the matched text
    scrubbed: list[str]  # "secret:NAME in where": removed from the response
    host: str  # redacted for logs
    path: str  # no query, redacted for logs
    logged: bool
    done: list[str]  # the stages run on this flow (each runs once, at requestheaders or later)
    #: Held only to read a ``_method`` field (the route limits methods; its DLP mode streams).
    held_for_method: NotRequired[bool]


def flow_record(flow: http.HTTPFlow) -> FlowRecord:
    record = flow.metadata.get(_META)
    if not isinstance(record, dict):
        record = FlowRecord(
            decision="allow",
            reason="",
            route=None,
            dlp="off",
            findings=[],
            scrubbed=[],
            host="",
            path="",
            logged=False,
            done=[],
        )
        flow.metadata[_META] = record
    return cast(FlowRecord, record)


def first_time(flow: http.HTTPFlow, stage: str) -> bool:
    """True once per flow and stage: a stage runs at ``requestheaders`` (where mitmproxy
    decides whether the body streams) and is not run again at ``request``."""
    done = flow_record(flow).setdefault("done", [])
    if stage in done:
        return False
    done.append(stage)
    return True


def declared_length(req: http.Request) -> int | None:
    """The body length the request declares: 0 for none, None when it is not known before the
    body ends (HTTP/1 chunked). Over HTTP/2 and 3 without a length, 0: the body ends with the
    stream (a held one is bounded all the same, by :mod:`.holdback`)."""
    length = req.headers.get("content-length", "").strip()
    if length:
        return int(length) if length.isdigit() else None
    if "chunked" in req.headers.get("transfer-encoding", "").lower():
        return None
    return 0


def unbounded(req: http.Request) -> bool:
    """True while the body is unread and longer than egress reads whole (or of unknown length)."""
    if req.raw_content is not None:
        return False  # read already (mitmproxy fills it at the request hook)
    length = declared_length(req)
    return length is None or length > MAX_HELD_BODY


def call(method: Callable[[], object]) -> None:
    """Call a mitmproxy method that is untyped in some versions (``kill``, ``drop``)."""
    method()


class DecisionLog:
    """The addon that writes the log (``response`` and ``error`` hooks) and refuses flows."""

    def __init__(self, tables: Reload, log_path: Path) -> None:
        self.tables = tables
        self.log_path = log_path
        self.max_bytes = records.MAX_FILE_BYTES
        self._fh: TextIO | None = None
        self._fh_path: Path | None = None
        self._size = 0  # of the open file, in bytes
        self._down_since: str | None = None  # when the log last could not be written
        self._lost = 0  # records not written since then
        #: While the log is down, how long before it is tried again, in seconds: a try may
        #: read a whole file to count a drop, and the agent sets the pace of requests.
        self.retry_s = 1.0
        self._retry_at = 0.0  # time.monotonic() of the next try
        self._note = ""  # the drop note a rotation owes the new file, until it is written

    def load(self, loader: Any) -> None:
        loader.add_option(LOG_OPTION, str, str(self.log_path), "the decision log (JSON lines)")

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        if LOG_OPTION in updated:
            self.log_path = absolute_option(ctx.options, LOG_OPTION)

    def response(self, flow: http.HTTPFlow) -> None:
        try:
            self.log_flow(flow)
        except Exception as exc:
            logger.error("egress: response hook failed: %s", type(exc).__name__)

    def error(self, flow: http.HTTPFlow) -> None:
        try:
            record = flow_record(flow)
            if record["decision"] in {"allow", "dlp-warn"} and not record["logged"]:
                before = record["reason"]
                record["reason"] = f"{before}; upstream error" if before else "upstream error"
            self.log_flow(flow)
        except Exception as exc:
            logger.error("egress: error hook failed: %s", type(exc).__name__)

    def safe_host(self, host: str) -> str:
        return dlp.redact(host.lower(), self.tables.current.secrets)

    def refuse(
        self,
        flow: http.HTTPFlow,
        status: int,
        error: str,
        reason: str,
        how: str,
        *,
        decision: Decision = "refuse",
    ) -> None:
        record = flow_record(flow)
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
        if unbounded(flow.request):
            # Answered before any of it is read (see holdback); the rest is read and dropped.
            length = declared_length(flow.request)
            size = "of undeclared length" if length is None else f"of {length} bytes"
            record["reason"] = f"{reason}; the request body ({size}) was not read"
        flow.request.stream = False  # answered at once by holdback, the body never kept
        # No "100 Continue" for an answer that is already final: the client keeps its body.
        flow.request.headers.pop("expect", None)
        self.log_flow(flow)

    def refuse_unlogged(self, flow: http.HTTPFlow) -> None:
        """Refuse a flow because the decision log cannot be written (see :meth:`ready`)."""
        self.refuse(
            flow,
            503,
            "egress_log_unavailable",
            "egress cannot write its decision log, so it sends nothing until it can",
            "retry later; tell the operator (the egress container's log says why)",
        )

    def crash(self, flow: http.HTTPFlow, exc: Exception, hook: str) -> None:
        """An unexpected failure: refuse this flow with a 500, log, never propagate."""
        # The type and the frames only: an exception message may quote request data.
        logger.error(
            "egress: %s hook failed on a flow (%s); refused with 500\n%s",
            hook,
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)),
        )
        try:
            record = flow_record(flow)
            record["logged"] = False
            if not record["host"]:
                record["host"] = self.safe_host(flow.request.host)
            self.refuse(
                flow,
                500,
                "egress_internal_error",
                f"the egress proxy failed on this request ({type(exc).__name__}); it was not sent",
                "retry; if it keeps failing, tell the operator (egress log)",
            )
        except Exception as inner:
            logger.error("egress: could not refuse the flow: %s", type(inner).__name__)
            call(flow.kill)

    def log_flow(self, flow: http.HTTPFlow) -> None:
        record = flow_record(flow)
        if record["logged"]:
            return
        record["logged"] = True
        response = flow.response
        self.write(
            LogRecord(
                method=flow.request.method.upper(),
                host=record["host"] or self.safe_host(flow.request.host),
                path=record["path"],
                route=record["route"],
                decision=record["decision"],
                reason=record["reason"],
                findings=tuple(record["findings"]) or None,
                scrubbed=tuple(record.get("scrubbed", ())) or None,
                request_bytes=len(flow.request.raw_content or b""),
                response_bytes=(len(response.raw_content or b"") if response is not None else None),
                status=response.status_code if response is not None else None,
            )
        )

    def ready(self) -> bool:
        """Whether the log takes records. While it cannot be written (or rotated), each
        request is refused before it leaves: what the agent sends is never unlogged but for
        the flows already upstream when the log failed. It is tried again at most once per
        :attr:`retry_s`."""
        return self._down_since is None or self._recover()

    def write(self, record: LogRecord) -> None:
        stamped = record.model_copy(
            update={
                "time": now().isoformat(timespec="milliseconds"),
                "generation": self.tables.current.generation,
            }
        )
        if self._down_since is not None and not self._recover():
            self._lost += 1
            return
        error = self._append(stamped.to_line())
        if error is not None:
            self._lost += 1
            self._down_since = stamped.time
            self._retry_at = time.monotonic() + self.retry_s
            # Once per outage: the count of what it cost is in the note that ends it.
            logger.error(
                "egress: cannot write the decision log %s (%s); refusing requests until it can",
                self.log_path,
                error,
            )

    def _recover(self) -> bool:
        """Write the note that ends an outage; True when it could be (the log works again)."""
        if time.monotonic() < self._retry_at:
            return False
        note = records.Note(
            time=now().isoformat(timespec="milliseconds"),
            generation=self.tables.current.generation,
            method="LOG",
            reason=f"the decision log could not be written from {self._down_since} on: "
            f"{self._lost} records were lost, and egress refused every request meanwhile",
            unwritten=self._lost,
        )
        if self._append(note.to_line()) is not None:
            self._retry_at = time.monotonic() + self.retry_s
            return False
        logger.warning("egress: the decision log is written again (%d records lost)", self._lost)
        self._down_since, self._lost = None, 0
        return True

    def _append(self, data: str) -> OSError | None:
        """Append one line, rotating first when it would not fit; the error when it failed."""
        size = len(data.encode("utf-8", "surrogateescape"))
        failed: OSError | None = None
        for _attempt in (1, 2):  # a second time on a fresh handle (a file moved or cut)
            try:
                # One handle kept open (line-buffered: each line is written whole at once);
                # opening the file for every request cost more than the rest of the log.
                if self._fh is None or self._fh_path != self.log_path:
                    self._open()
                assert self._fh is not None
                if self._size and self._size + size > self.max_bytes:
                    self._rotate()
                    assert self._fh is not None
                if self._note:  # before anything else in the file, even on a second try
                    self._fh.write(self._note)
                    self._size += len(self._note.encode())
                    self._note = ""
                self._fh.write(data)
                self._size += size
                return None
            except OSError as exc:
                self._close()
                failed = exc
        return failed

    def _open(self) -> None:
        self._close()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.log_path.open("a", encoding="utf-8", buffering=1)
        self._fh_path = self.log_path
        self._size = self._fh.tell()

    def _rotate(self) -> None:
        """A full file moves aside and a new one starts (the host's disk is bounded by the
        files kept, whatever the agent sends); a note opens it when records were dropped,
        counting them. The run's first file is never dropped (:func:`records.rotate`)."""
        self._close()
        dropped = records.rotate(self.log_path)
        if dropped is not None:
            # Owed to the new file: should this write fail, the next that works puts it first.
            self._note = (
                dropped.note(self.log_path, self.max_bytes)
                .model_copy(
                    update={
                        "time": now().isoformat(timespec="milliseconds"),
                        "generation": self.tables.current.generation,
                    }
                )
                .to_line()
            )
        self._open()

    def _close(self) -> None:
        fh, self._fh = self._fh, None
        if fh is not None:
            with contextlib.suppress(OSError):
                fh.close()

    def done(self) -> None:
        self._close()
