"""``instance.routes``: the egress routes in force, and live changes to them.

Validate with the one parser (``bottle.policy``) → write atomically → reload egress in
place → confirm the new table is live; if egress does not take it, the previous file goes
back, so what is on disk is always what is in force.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

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


@dataclass(frozen=True)
class InForce:
    """The routes egress runs, and how the live file on disk stands beside them."""

    routes: Routes
    #: egress's generation and the digest of the file it loaded (None: none loaded).
    generation: int
    routes_sha256: str | None
    #: ``file``: the file on disk is what runs; ``egress``: egress's own copy of what it
    #: loaded (the file on disk is not it).
    source: Literal["file", "egress"]
    file: Path
    #: Why the file on disk would not load (it is not in force), or None.
    file_error: str | None = None
    #: The file on disk is valid but not what egress loaded: a hand edit not reloaded.
    file_pending: bool = False


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

    def in_force(self) -> InForce:
        """The routes egress runs now, even when the file on disk was spoiled since.

        egress publishes the digest and a copy of the file it loaded (``status/egress.json``,
        a sidecar-written file: read bounded, its copy believed only when it matches the
        digest, and parsed with the one parser). Without a usable status, the file on disk
        is taken for what runs (as before egress kept a copy); if it does not parse either,
        ``ApplyError``.
        """
        from bottle.sidecars.egress import EGRESS as SIDECAR

        raw: bytes | None = None
        on_disk: Routes | None = None
        try:
            raw = self.raw()
            on_disk = parse_routes_file(raw, str(self.path))
            file_error = None
        except StateError as exc:
            file_error = exc.message
        except RoutesFileError as exc:
            file_error = str(exc)
        status = SIDECAR.status(self.instance)
        live = status.ready and status.generation > 0
        loaded = status.routes_sha256 if live else None
        same = raw is not None and live and routes_digest(raw) == loaded
        copy = _egress_copy(status.routes_yaml, loaded) if live and not same else None
        if on_disk is not None and (same or copy is None):
            # What runs, or (no copy from egress to show) the best there is.
            return InForce(
                on_disk,
                generation=status.generation,
                routes_sha256=loaded,
                source="file",
                file=self.path,
                file_pending=live and not same,
            )
        if copy is not None:
            return InForce(
                copy,
                generation=status.generation,
                routes_sha256=loaded,
                source="egress",
                file=self.path,
                file_error=file_error,
                file_pending=on_disk is not None,
            )
        raise ApplyError(
            f"invalid routes in {self.path}: {file_error}",
            hint="egress keeps the routes it loaded last, but says nothing of them (an "
            "older egress): fix the file, then 'bottle egress reload'.",
        )

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


def routes_digest(data: bytes) -> str:
    """The digest egress publishes of the file it loaded (its ``routes_sha256``)."""
    return hashlib.sha256(data).hexdigest()


def _egress_copy(text: str | None, digest: str | None) -> Routes | None:
    """egress's copy of the file it runs, if it is the one its digest names (None: no
    routes file was ever loaded, so none is in force: deny all)."""
    if digest is None:
        return Routes() if text is None else None
    if text is None or routes_digest(text.encode()) != digest:
        return None
    try:
        return parse_routes_file(text.encode(), "egress's copy of the routes in force")
    except RoutesFileError:
        return None
