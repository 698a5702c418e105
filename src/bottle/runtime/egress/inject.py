"""Credential injection: a route with ``auth`` gets its credential put in here, from this
container's environment, after the agent's own credential headers are stripped.

Only on TLS to the route's port (:mod:`.guards` refused anything else to the host already;
this is checked again here, where the secret is added), and only while mitmproxy verifies
the upstream's certificate: with ``ssl_insecure`` on, a credentialed request is refused.

Runs after :mod:`.scan` (DLP never sees the credential) in the same synchronous pass over the
addons, so the route it reads is the one :mod:`.guards` matched, in the same table.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from mitmproxy import http

from bottle.chatgpt_login import expiry
from bottle.policy import CHATGPT_ACCESS_VAR
from bottle.runtime.egress.log import DecisionLog, first_time, flow_record
from bottle.runtime.egress.reload import Reload


class Inject:
    """The addon; see the module docstring."""

    def __init__(self, tables: Reload, log: DecisionLog, environ: Mapping[str, str]) -> None:
        self.tables = tables
        self.log = log
        self.environ = environ

    def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Headers only: the credential is in place before a streamed body starts to go out."""
        self.request(flow)

    def request(self, flow: http.HTTPFlow) -> None:
        if not first_time(flow, "inject"):
            return
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
            req = flow.request
            wire = (req.scheme.lower(), req.port)
            allowed = route.credential_wire()
            if wire != allowed:
                self.log.refuse(
                    flow,
                    403,
                    "egress_refused",
                    f"the credential for {route.host} goes only over https to port "
                    f"{allowed[1] if allowed else 443}, not {wire[0]} to port {wire[1]}",
                    f"use https://{route.host}/",
                )
                return
            if _upstream_unverified():
                self.log.refuse(
                    flow,
                    502,
                    "egress_upstream_unverified",
                    "egress does not verify upstream certificates (ssl_insecure is on), so "
                    f"it sends no credential to {route.host}",
                    "ask the operator: the egress sidecar must run with ssl_insecure off",
                )
                return
            wanted = auth.headers(self.environ)
            if wanted is None:
                if auth.token_ref:
                    source = f"${auth.token_ref}"
                    fix = f"set {auth.token_ref} in the environment bottle is started from"
                else:  # a chatgpt route added live: the login is read at start only
                    source = f"the ChatGPT login {auth.file_ref}"
                    fix = f"restart the bottle so egress gets the login from {auth.file_ref}"
                self.log.refuse(
                    flow,
                    502,
                    "egress_credential_missing",
                    f"the route for {route.host} injects a credential from {source}, "
                    "which is not set in the egress container",
                    f"ask the operator to {fix}"
                    + (", then restart the bottle" if auth.token_ref else ""),
                )
                return
            if auth.scheme == "chatgpt" and _expired(self.environ.get(CHATGPT_ACCESS_VAR, "")):
                # Codex would try to refresh, with a placeholder: that ends at auth.openai.com,
                # refused. Say what is wrong where the real token would have been sent.
                self.log.refuse(
                    flow,
                    401,
                    "egress_credential_expired",
                    f"the ChatGPT login egress holds for {route.host} has expired; bottle "
                    "never refreshes it inside the bottle",
                    f"ask the operator to refresh it on the host (run codex there, or codex "
                    f"login; {auth.file_ref}), then restart the bottle",
                )
                return
            for name in {"Authorization", "Proxy-Authorization", auth.header, *wanted}:
                headers.pop(name, None)
            headers.update(wanted)
        headers.pop("Proxy-Authorization", None)


def _expired(token: str) -> bool:
    """True when the JWT ``token``'s ``exp`` claim is past (read, not verified: the upstream
    verifies it; this only saves a request bound to fail)."""
    when = expiry(token)
    return when is not None and when <= time.time()


def _upstream_unverified() -> bool:
    """True unless mitmproxy is known to verify upstream certificates."""
    from mitmproxy import ctx

    try:
        return bool(ctx.options.ssl_insecure)
    except AttributeError:  # no options loaded: nothing says upstream is verified
        return True
