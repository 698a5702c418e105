"""The supervise sidecar: an MCP server that files the agent's proposals (runs in a container).

``python -m bottle.runtime.supervise`` starts it; see :mod:`bottle.runtime.supervise.server`.
"""

from __future__ import annotations

from bottle.runtime.supervise.server import Config, build_app, main, serve

__all__ = ["Config", "build_app", "main", "serve"]
