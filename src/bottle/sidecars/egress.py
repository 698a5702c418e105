"""egress: the agent's only way out over HTTP(S).

A mitmproxy addon (``bottle.runtime.egress``) on both networks: default-deny routes,
credential injection (the real token lives only in this container), outbound DLP and
a decision log. Its routes live in ``live-config/egress/routes.yaml``; a change is
validated with the same ``bottle.policy`` models, written atomically, then SIGHUP makes
the addon swap them in without dropping connections.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ruamel.yaml import YAML

from bottle import layout
from bottle.plan import BottlePlan
from bottle.policy import Routes
from bottle.sidecars._common import bind, sidecar_base

#: What the agent sees for a variable whose real value egress injects.
PLACEHOLDER = "bottle-egress-injects-this"


def routes_yaml(routes: Routes) -> bytes:
    import io

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
    out = io.StringIO()
    yaml.dump(routes.to_data() or {"routes": []}, out)
    return out.getvalue().encode()


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
