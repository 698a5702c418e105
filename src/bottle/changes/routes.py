"""``instance.routes``: the egress routes in force, and live changes to them.

Validate with the one parser (``bottle.policy``) → write atomically → reload egress in
place → confirm the new table is live; if egress does not take it, the previous file goes
back, so what is on disk is always what is in force.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from bottle import layout
from bottle.changes.transaction import transaction
from bottle.errors import ApplyError, StateError
from bottle.files import atomic_write
from bottle.policy import Route, Routes, RoutesFileError, parse_routes_file

if TYPE_CHECKING:
    from bottle.instance import Instance
    from bottle.runtime.egress import EgressStatus

#: The sidecar whose live-config holds the routes.
EGRESS = "egress"


def parse_routes(data: bytes, *, source: str) -> Routes:
    """The shared parser, its failure an ApplyError the CLI shows as bad input."""
    try:
        return parse_routes_file(data, source)
    except RoutesFileError as exc:
        raise ApplyError(
            f"invalid routes: {exc}",
            hint="Fix the file (docs/manifest.md lists a route's fields); the routes in force "
            "are unchanged.",
        ) from None


class RoutesControl:
    """The routes of one instance: read them, replace them, widen them, reload them."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    @property
    def path(self) -> Path:
        return self.instance.state.live_config(EGRESS) / layout.ROUTES_FILE

    def raw(self) -> bytes:
        """The live routes file as it is on disk; ``ApplyError`` when it cannot be read."""
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise StateError(
                f"cannot read the live routes {self.path}: {exc.strerror}",
                hint="The instance's state directory is damaged or was not made by "
                "'bottle start'; see 'bottle ls'.",
            ) from exc

    def current(self) -> Routes:
        """The routes in force (as written in live-config), validated with the proxy's parser."""
        return parse_routes(self.raw(), source=str(self.path))

    def reload(self, *, timeout: float = 10.0) -> EgressStatus:
        """Have egress load the file on disk (after a hand edit); the sidecar's reload
        validates it with the same parser first, so it is not parsed twice here."""
        from bottle.sidecars.egress import EGRESS

        return EGRESS.reload(self.instance, timeout=timeout)

    def allow(self, route: Route, *, by: str | None = None, reason: str = "") -> Routes:
        """Add ``route`` to the live routes (operator-initiated) and audit it."""
        with transaction(self.instance) as change:
            before = self.current()
            after = before.with_route(route)
            self.write_live(after)
            change.record(who=by, action="allow", before=before, after=after, reason=reason)
        return after

    def apply(
        self,
        routes: Routes,
        *,
        by: str | None = None,
        reason: str = "",
        based_on: bytes | None = None,
    ) -> None:
        """Replace the live routes (``bottle routes edit``) and audit the diff.

        ``based_on``: the routes file the edit started from. If the file changed since (an
        approval or ``allow`` while the editor was open), nothing is applied: writing the
        edit would silently drop that change.
        """
        with transaction(self.instance) as change:
            if based_on is not None and self.raw() != based_on:
                raise ApplyError(
                    "the live routes changed while you were editing (an approval or allow)",
                    hint="Nothing changed; run the edit again to start from the routes in force.",
                )
            before = self.current()
            self.write_live(routes)
            change.record(who=by, action="edit-routes", before=before, after=routes, reason=reason)

    def write_live(self, routes: Routes, *, timeout: float = 10.0) -> EgressStatus:
        """Write ``routes`` and wait until egress runs them; the caller holds the transaction."""
        from bottle.sidecars.egress import EGRESS

        previous = self.path.read_bytes() if self.path.exists() else None
        atomic_write(self.path, routes.to_yaml())
        try:
            return EGRESS.reload(self.instance, timeout=timeout)
        except BaseException:
            if previous is not None:
                atomic_write(self.path, previous)
            raise
