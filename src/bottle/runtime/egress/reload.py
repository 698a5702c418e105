"""The route table in force: loaded at start, swapped whole on SIGHUP, published as status.

Routes come from ``live-config/egress/routes.yaml``, parsed by the same :mod:`bottle.policy`
models the host validated them with. The table in force is one frozen :class:`Loaded`
reference; the other addons read it once per flow and never block. A bad file is logged and
the old table stays; either way ``status/egress.json`` says what is in force, which is how the
host confirms a reload. Open connections are never closed by a reload.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from mitmproxy import exceptions

from bottle.files import atomic_write, now
from bottle.policy import Routes, RoutesFileError, parse_routes_file
from bottle.runtime import egress as paths
from bottle.runtime.egress import dlp

logger = logging.getLogger("bottle.egress")
#: mitmproxy's ALERT level (INFO + 1): shown by ``termlog_verbosity=alert``, which hides the
#: per-connection info lines. Reload outcomes and startup use it.
NOTICE = logging.INFO + 1


ROUTES_OPTION = "bottle_routes"
STATUS_OPTION = "bottle_status"


def absolute_option(options: Any, name: str) -> Path:
    """A path option's value; it must be absolute (mitmproxy's cwd is not ours to guess)."""
    path = Path(getattr(options, name))
    if not path.is_absolute():
        message = f"{name} must be an absolute path, not {str(path)!r}"
        raise exceptions.OptionsError(message)  # type: ignore[no-untyped-call]
    return path


class Loaded(NamedTuple):
    """The route table in force, with what DLP needs to know about it. Swapped whole.

    (A NamedTuple, not a dataclass: mitmproxy runs the addon file as a script that is not in
    ``sys.modules``, where dataclasses cannot resolve their annotations.)
    """

    routes: Routes
    generation: int
    routes_sha256: str | None
    loaded_at: str
    secrets: tuple[dlp.KnownSecret, ...] = ()
    text: str | None = None  # the file as loaded, for the status (None: no file is)


class Reload:
    """The addon that owns :attr:`current`; see the module docstring."""

    def __init__(self, routes_path: Path, status_path: Path, environ: Mapping[str, str]) -> None:
        self.routes_path = routes_path
        self.status_path = status_path
        self.environ = environ
        # Deny everything until running() has loaded the file.
        self.current = Loaded(
            routes=Routes(),
            generation=0,
            routes_sha256=None,
            loaded_at=now().isoformat(timespec="milliseconds"),
        )
        self.last_error: str | None = None
        self.last_error_sha256: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def load(self, loader: Any) -> None:
        # Defaults come from the environment (BOTTLE_EGRESS_ROUTES / _STATUS, see __main__).
        loader.add_option(ROUTES_OPTION, str, str(self.routes_path), "the routes file")
        loader.add_option(STATUS_OPTION, str, str(self.status_path), "the status file")

    def configure(self, updated: set[str]) -> None:
        from mitmproxy import ctx

        if ROUTES_OPTION in updated:
            self.routes_path = absolute_option(ctx.options, ROUTES_OPTION)
        if STATUS_OPTION in updated:
            self.status_path = absolute_option(ctx.options, STATUS_OPTION)

    def running(self) -> None:
        """mitmproxy is listening: load the routes, publish the status, listen for SIGHUP."""
        if self.current.generation == 0:
            self.reload()
        else:
            self.write_status()
        try:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            self._loop = loop
        except (RuntimeError, NotImplementedError, ValueError) as exc:
            logger.warning("egress: no SIGHUP reload (%s)", exc)

    def done(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_signal_handler(signal.SIGHUP)
        self._loop = None

    def _on_sighup(self) -> None:
        try:
            self.reload()
        except Exception as exc:  # never let a reload take the proxy down
            logger.error("egress: reload failed unexpectedly: %s", type(exc).__name__)

    def reload(self) -> bool:
        """Re-read the routes file. On success swap the table and bump the generation; on
        failure keep the table in force and record the error. Always rewrite the status file.
        Returns whether the new file is now in force."""
        data: bytes | None = None
        try:
            data = self.routes_path.read_bytes()
            routes = parse_routes_file(data, str(self.routes_path))
        except (OSError, RoutesFileError) as exc:
            if isinstance(exc, OSError):
                message = f"cannot read routes file {self.routes_path}: {exc.strerror or exc}"
            else:
                message = str(exc)
            self.last_error = message
            self.last_error_sha256 = paths.routes_digest(data) if data is not None else None
            if self.current.generation == 0:
                # First load: nothing was in force, so "no routes" (deny all) is.
                self.current = Loaded(
                    routes=Routes(),
                    generation=1,
                    routes_sha256=None,
                    loaded_at=now().isoformat(timespec="milliseconds"),
                    secrets=self._secrets(Routes()),
                )
                logger.error("egress: %s; no routes are in force (all egress refused)", message)
            else:
                logger.error(
                    "egress: reload rejected, generation %d stays in force: %s",
                    self.current.generation,
                    message,
                )
            self.write_status()
            return False
        self.current = Loaded(
            routes=routes,
            generation=self.current.generation + 1,
            routes_sha256=paths.routes_digest(data),
            loaded_at=now().isoformat(timespec="milliseconds"),
            secrets=self._secrets(routes),
            text=data.decode("utf-8", "replace"),
        )
        self.last_error = None
        self.last_error_sha256 = None
        logger.log(
            NOTICE,
            "egress: routes generation %d in force (%d routes)",
            self.current.generation,
            len(routes.routes),
        )
        self.write_status()
        return True

    def _secrets(self, routes: Routes) -> tuple[dlp.KnownSecret, ...]:
        names = dlp.secret_names(routes.secret_vars, self.environ)
        return dlp.known_secrets(names, self.environ)

    def status(self) -> paths.EgressStatus:
        current = self.current
        return paths.EgressStatus(
            generation=current.generation,
            routes_sha256=current.routes_sha256,
            routes=len(current.routes.routes),
            loaded_at=current.loaded_at,
            error=self.last_error,
            error_sha256=self.last_error_sha256,
            routes_yaml=current.text,
        )

    def write_status(self) -> None:
        body = self.status().model_dump_json(indent=2) + "\n"
        try:
            atomic_write(self.status_path, body)
        except OSError as exc:
            logger.error("egress: cannot write status file %s: %s", self.status_path, exc)
