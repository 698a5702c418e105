"""Credential injection: a route with ``auth`` gets its credential put in here, from this
container's environment, after the agent's own credential headers are stripped.

Runs after :mod:`.scan` (DLP never sees the credential) in the same synchronous pass over the
addons, so the route it reads is the one :mod:`.guards` matched, in the same table.
"""

from __future__ import annotations

from collections.abc import Mapping

from mitmproxy import http

from bottle.runtime.egress.log import DecisionLog, flow_record
from bottle.runtime.egress.reload import Reload


class Inject:
    """The addon; see the module docstring."""

    def __init__(self, tables: Reload, log: DecisionLog, environ: Mapping[str, str]) -> None:
        self.tables = tables
        self.log = log
        self.environ = environ

    def request(self, flow: http.HTTPFlow) -> None:
        try:
            self._request(flow)
        except Exception as exc:
            self.log.crash(flow, exc, "request")

    def _request(self, flow: http.HTTPFlow) -> None:
        record = flow_record(flow)
        if flow.response is not None or flow.error is not None or record["route"] is None:
            return
        route = self.tables.current.routes.routes[record["route"]]
        headers = flow.request.headers
        auth = route.auth
        if auth is not None:
            secret = self.environ.get(auth.token_ref, "").strip()
            if not secret:
                self.log.refuse(
                    flow,
                    502,
                    "egress_credential_missing",
                    f"the route for {route.host} injects a credential from ${auth.token_ref}, "
                    "which is not set in the egress container",
                    "ask the operator to set "
                    f"{auth.token_ref} in the environment bottle is started from, then restart "
                    "the bottle",
                )
                return
            for name in {"Authorization", "Proxy-Authorization", auth.header}:
                headers.pop(name, None)
            headers[auth.header] = auth.header_value(secret)
        headers.pop("Proxy-Authorization", None)
