"""The egress sidecar: a mitmproxy addon (``addon.py``), its DLP (``dlp.py``) and the entry
point that prepares the CA and execs ``mitmdump`` (``python -m bottle.runtime.egress``).

This module holds only the paths both of them use; importing it imports neither mitmproxy
nor the addon.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from bottle import layout

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
