"""egress: the agent's only way out over HTTP(S).

A mitmproxy addon (``bottle.runtime.egress``) on both networks: default-deny routes,
credential injection (the real token lives only in this container), outbound DLP and
a decision log. Its routes live in ``live-config/egress/routes.yaml``; a change is
validated with the same ``bottle.policy`` models, written atomically, then SIGHUP makes
the addon swap them in without dropping connections.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from bottle import layout, safefs
from bottle.errors import ApplyError
from bottle.plan import BottlePlan
from bottle.policy import Routes
from bottle.runtime.egress import EgressStatus, routes_digest
from bottle.sidecars._common import bind, sidecar_base

if TYPE_CHECKING:
    from bottle.instance import Instance

#: What the agent sees for a variable whose real value egress injects.
PLACEHOLDER = "bottle-egress-injects-this"


def routes_yaml(routes: Routes) -> bytes:
    return routes.to_yaml()


class _Egress:
    name = "egress"

    def enabled(self, plan: BottlePlan) -> bool:
        return True  # the agent has no other way out; there is no bottle without it

    def files(self, plan: BottlePlan) -> Mapping[str, bytes]:
        return {layout.ROUTES_FILE: routes_yaml(plan.egress.routes)}

    def compose_service(self, plan: BottlePlan) -> dict[str, Any]:
        state = plan.state_dir
        service = sidecar_base(plan, self.name, "bottle.runtime.egress")
        env = [f"BOTTLE_DLP_SECRETS={','.join(plan.egress.secret_refs)}"]
        env += list(plan.egress.secret_refs)  # bare names: compose passes the host's values
        service |= {
            "environment": env,
            "volumes": [
                bind(
                    state / "live-config" / "egress", layout.LIVE_CONFIG / "egress", read_only=True
                ),
                bind(state / "ca", layout.CA_PUBLIC),
                bind(state / "ca-private", layout.CA_PRIVATE),
                bind(state / "logs", layout.LOGS),
                bind(state / "status", layout.STATUS),
            ],
            "networks": ["internal", "egress"],
        }
        return service

    def agent_env(self, plan: BottlePlan) -> dict[str, str]:
        """How the agent finds egress and trusts (only) its CA."""
        proxy = f"http://egress:{layout.EGRESS_PORT}"
        ca = str(layout.CA_PUBLIC / layout.CA_CERT)
        no_proxy = ",".join(["localhost", "127.0.0.1", "supervise", "git-gate"])
        env = {
            "HTTP_PROXY": proxy,
            "HTTPS_PROXY": proxy,
            "http_proxy": proxy,
            "https_proxy": proxy,
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
            "SSL_CERT_FILE": ca,
            "REQUESTS_CA_BUNDLE": ca,
            "CURL_CA_BUNDLE": ca,
            "NODE_EXTRA_CA_CERTS": ca,
            "GIT_SSL_CAINFO": ca,
            "PIP_CERT": ca,
        }
        for ref in plan.egress.routes.token_refs:
            env[ref] = PLACEHOLDER
        return env


EGRESS = _Egress()


# -- reload ---------------------------------------------------------------------------------
# How egress takes a new routes file in place. The transaction around a change (lock,
# validate, write, audit) is ``bottle.changes``; this is only the sidecar's half.


def read_status(instance: Instance) -> EgressStatus:
    path = instance.state.status_file(EGRESS.name)
    try:
        return EgressStatus.model_validate_json(safefs.read_regular(path, max_bytes=1 << 20))
    except (OSError, ValueError):
        return EgressStatus()


def reload(instance: Instance, *, timeout: float = 10.0) -> EgressStatus:
    """SIGHUP egress and wait (bounded) for it to report the file now on disk as live."""
    from bottle.changes.routes import RoutesControl, parse_routes

    routes = RoutesControl(instance)
    data = routes.raw()
    parse_routes(data, source=str(routes.path))
    want = routes_digest(data)
    before = read_status(instance)
    if before.routes_sha256 == want and before.error is None:
        return before
    instance.compose.kill(EGRESS.name, "SIGHUP")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status(instance)
        if status.generation > before.generation and status.routes_sha256 == want:
            return status
        if status.error_sha256 == want and status.error:
            raise ApplyError(
                f"egress refused the new routes: {status.error}",
                hint="The routes in force are unchanged; fix the file and reload again.",
            )
        time.sleep(0.02)
    raise ApplyError(
        f"egress did not confirm the new routes within {timeout:.0f}s",
        hint=f"Look at 'bottle logs {instance.slug} --service egress'.",
    )
