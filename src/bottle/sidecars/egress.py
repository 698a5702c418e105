"""egress: the agent's only way out over HTTP(S).

A mitmproxy addon (``bottle.runtime.egress``) on both networks: default-deny routes,
credential injection (the real token lives only in this container), outbound DLP and
a decision log. Its routes live in ``live-config/egress/routes.yaml``; a change is
validated with the same ``bottle.policy`` models, written atomically, then SIGHUP makes
the addon swap them in without dropping connections.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, ValidationError

from bottle import layout, safefs
from bottle.errors import ApplyError, ApplyFailed, ManifestError
from bottle.manifest.models import Strict
from bottle.policy import (
    PLACEHOLDER,
    EnvName,
    Route,
    Routes,
    RoutesFileError,
    parse_routes_file,
)
from bottle.runtime.egress import EgressStatus, routes_digest
from bottle.sidecars._common import bind, sidecar_base
from bottle.sidecars.base import AgentAddon, PlanContext, SidecarBase, SidecarHost

if TYPE_CHECKING:
    from bottle.plan import BottlePlan


class Egress(Strict):
    """``egress:`` of a bottle file."""

    routes: tuple[Route, ...] = ()
    dlp_secrets: tuple[EnvName, ...] = Field(
        (), description="more host variables whose values must never leave, beside token_refs"
    )


class EgressPlan(Strict):
    routes: Routes
    dlp_secrets: tuple[str, ...] = ()

    @property
    def secret_refs(self) -> tuple[str, ...]:
        """Every host variable whose value egress holds: credentials, then DLP-only ones."""
        return tuple(dict.fromkeys((*self.routes.token_refs, *self.dlp_secrets)))


class _Egress(SidecarBase[Egress, EgressPlan]):
    name = "egress"
    section = "egress"
    section_model = Egress
    plan_model = EgressPlan
    status_model = EgressStatus

    def merge(self, base: Egress | None, child: Egress | None) -> Egress | None:
        """Child routes are matched first; DLP names add up."""
        routes = (child.routes if child else ()) + (base.routes if base else ())
        secrets = tuple(
            dict.fromkeys((base.dlp_secrets if base else ()) + (child.dlp_secrets if child else ()))
        )
        return Egress(routes=routes, dlp_secrets=secrets) if routes or secrets else None

    def plan(self, section: Egress | None, ctx: PlanContext) -> EgressPlan:
        # Always enabled: the agent has no other way out; there is no bottle without it.
        try:
            routes = Routes(routes=section.routes if section else ())
        except ValidationError as exc:
            raise ManifestError(
                exc.errors()[0]["msg"].removeprefix("Value error, "),
                path=ctx.path,
                field="egress.routes",
                hint="Give each host one credential.",
            ) from None
        return EgressPlan(routes=routes, dlp_secrets=section.dlp_secrets if section else ())

    def secret_refs(self, sub: EgressPlan) -> tuple[str, ...]:
        return sub.secret_refs

    def files(self, sub: EgressPlan) -> Mapping[str, bytes]:
        return {layout.ROUTES_FILE: sub.routes.to_yaml()}

    def summary(self, section: Egress | None) -> dict[str, int | bool]:
        return {"routes": len(section.routes) if section else 0}

    def compose_service(self, sub: EgressPlan, plan: BottlePlan) -> dict[str, Any]:
        state = plan.state_dir
        service = sidecar_base(plan, self.name, "bottle.runtime.egress")
        env = [f"BOTTLE_DLP_SECRETS={','.join(sub.secret_refs)}"]
        # The host's own addresses, filled in by compose from the start's environment (machine
        # state, never written into the file): egress refuses to connect to any of them.
        env += ["BOTTLE_HOST_ADDRESSES=${BOTTLE_HOST_ADDRESSES:-}"]
        # Bare names: compose passes the host's values (a ChatGPT login's, read at up).
        env += list(dict.fromkeys((*sub.secret_refs, *sub.routes.secret_vars)))
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

    def agent(self, sub: EgressPlan, *, direct: Sequence[str]) -> AgentAddon:
        """How the agent finds egress and trusts (only) its CA; direct sidecars bypass it."""
        proxy = f"http://egress:{layout.EGRESS_PORT}"
        ca = str(layout.CA_PUBLIC / layout.CA_CERT)
        no_proxy = ",".join(["localhost", "127.0.0.1", *direct])
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
        for ref in sub.routes.token_refs:
            env[ref] = PLACEHOLDER
        return AgentAddon(env=env)

    def status(self, host: SidecarHost) -> EgressStatus:
        path = host.state.status_file(self.name)
        try:
            # A sidecar-written file: no link followed, bounded.
            return EgressStatus.model_validate_json(safefs.read_regular(path, max_bytes=1 << 20))
        except (OSError, ValueError):
            return EgressStatus(ready=False)

    def reload(self, host: SidecarHost, *, timeout: float = 10.0) -> EgressStatus:
        """SIGHUP egress and wait (bounded) for it to report the file now on disk as live."""
        path = host.state.live_config(self.name) / layout.ROUTES_FILE
        data = _read_routes(path)
        try:
            parse_routes_file(data, str(path))
        except RoutesFileError as exc:
            raise ApplyError(
                f"invalid routes: {exc}",
                hint="Fix the file (docs/manifest.md lists a route's fields); the routes in "
                "force are unchanged.",
            ) from None
        want = routes_digest(data)
        before = self.status(host)
        if before.routes_sha256 == want and before.error is None:
            return before
        host.compose.kill(self.name, "SIGHUP")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status(host)
            if status.generation > before.generation and status.routes_sha256 == want:
                return status
            if status.error_sha256 == want and status.error:
                raise ApplyError(
                    f"egress refused the new routes: {status.error}",
                    hint="The routes in force are unchanged; fix the file and reload again.",
                )
            time.sleep(0.02)
        raise ApplyFailed(
            f"egress did not confirm the new routes within {timeout:.0f}s",
            hint=f"Look at 'bottle logs {host.slug} --service egress'.",
        )


def _read_routes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ApplyFailed(
            f"cannot read the live routes {path}: {exc.strerror}",
            hint="The state directory is damaged or was not made by 'bottle start'; "
            "see 'bottle ls'.",
        ) from None


SIDECAR = EGRESS = _Egress()
