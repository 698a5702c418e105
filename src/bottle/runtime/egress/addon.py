"""The egress sidecar's mitmproxy addons, composed in order: the agent's only way out over HTTP(S).

Loaded by ``mitmdump -s`` (see ``__main__``), so this module uses absolute imports only.
Like mitmproxy's own ``default_addons()``, each job is a small addon and the order of
:data:`addons` is the order their hooks run in:

1. :mod:`.reload`: the route table in force (SIGHUP swaps it; ``status/egress.json``).
2. :mod:`.guards`: every request is matched against the routes, after the Host / SNI /
   CONNECT, dot-segment and git-push checks; passthrough tunnels; no raw TCP or UDP.
3. :mod:`.scan`: DLP, before any credential goes in; responses scrubbed of secrets.
4. :mod:`.inject`: the route's credential, after the agent's own are stripped.
5. :mod:`.log`: the decision log (one :class:`~.records.LogRecord` line per decision) and the
   refusals (a real HTTP response with a JSON body the agent reads); last, so its response
   hook logs what scan scrubbed.
6. :mod:`.connect`: the name is resolved and the connection pinned to a public address
   (or a private one, for a route that says ``private: true``).

2-5 are children of :class:`Egress`, whose request hooks run in one synchronous pass (so they
see one route table); the connect guard's hooks are async (it resolves the name). Every
decision is taken at ``requestheaders``, before any of the body is read, because a streamed
body leaves before the ``request`` hook; each stage runs once per flow (``request`` runs
what ``requestheaders`` did not, and the body scan of a held body).
A hook that fails refuses its flow with a 500; it never takes the proxy down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from bottle.runtime import egress as paths
from bottle.runtime.egress import holdback
from bottle.runtime.egress.connect import ConnectGuard
from bottle.runtime.egress.guards import HOW_TO_ASK, HOW_TO_PUSH, Guards
from bottle.runtime.egress.inject import Inject
from bottle.runtime.egress.log import DecisionLog
from bottle.runtime.egress.reload import Loaded, Reload
from bottle.runtime.egress.scan import HOW_TO_FIX_DLP, Scan

__all__ = ["HOW_TO_ASK", "HOW_TO_FIX_DLP", "HOW_TO_PUSH", "Egress", "make_addons"]


class Egress:
    """The route, log, guard, DLP and credential addons, as children in hook order."""

    def __init__(
        self,
        routes_path: Path | None = None,
        status_path: Path | None = None,
        log_path: Path | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self.tables = Reload(
            routes_path or paths.routes_path(env), status_path or paths.status_path(env), env
        )
        self.log = DecisionLog(self.tables, log_path or paths.log_path(env))
        self.scan = Scan(self.tables, self.log)
        self.addons = [
            self.tables,
            Guards(self.tables, self.log),
            self.scan,
            Inject(self.tables, self.log, env),
            self.log,  # last: its response hook logs what scan's scrubbed
        ]

    @property
    def current(self) -> Loaded:
        return self.tables.current

    def reload(self) -> bool:
        return self.tables.reload()


def make_addons() -> list[object]:
    """The addons in the order mitmproxy runs their hooks (see the module docstring)."""
    egress = Egress()
    holdback.install(egress.scan.too_long)
    return [egress, ConnectGuard(egress.tables, egress.log)]


addons = make_addons()
