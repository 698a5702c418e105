"""The egress sidecar: a mitmproxy addon (``addon.py``), its DLP (``dlp.py``) and the entry
point that prepares the CA and execs ``mitmdump`` (``python -m bottle.runtime.egress``).

This module holds what the addon and the host share (the paths, and the status file's
format the host waits on after a SIGHUP); importing it imports neither mitmproxy nor the
addon.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

from bottle import layout
from bottle.runtime.status import SidecarStatus

#: Environment overrides of the container paths (tests point them at temporary files).
ROUTES_ENV = "BOTTLE_EGRESS_ROUTES"
STATUS_ENV = "BOTTLE_EGRESS_STATUS"
LOG_ENV = "BOTTLE_EGRESS_LOG"

DEFAULT_ROUTES = Path(layout.LIVE_CONFIG / "egress" / layout.ROUTES_FILE)
DEFAULT_STATUS = Path(layout.STATUS / "egress.json")
DEFAULT_LOG = Path(layout.LOGS / layout.EGRESS_LOG)


def routes_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(ROUTES_ENV) or DEFAULT_ROUTES)


def status_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(STATUS_ENV) or DEFAULT_STATUS)


def log_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(LOG_ENV) or DEFAULT_LOG)


class EgressStatus(SidecarStatus):
    """``status/egress.json``: what the addon loaded, written at start and after every SIGHUP.

    The host compares ``routes_sha256`` (or ``error_sha256``) with :func:`routes_digest` of
    the file it wrote, to know that egress took (or refused) exactly that file.
    """

    routes_sha256: str | None = None
    routes: int = 0
    error_sha256: str | None = None
    #: The routes file in force as egress read it (names, never a secret value), so the
    #: host can show what runs when the file on disk was since spoiled by a hand edit.
    routes_yaml: str | None = None


def routes_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
