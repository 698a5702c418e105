"""Bottle and agent files: typed models, loading, the trust boundary and ``extends``.

The sections a sidecar owns (``egress:``, ``git:``, ``supervise:``) are modelled in that
sidecar's module (``bottle.sidecars.<name>``); ``bottle_file_model()`` composes them.
"""

from bottle.manifest.bottlefile import bottle_file_model
from bottle.manifest.loader import AgentSource, BottleSource, Manifest, load_manifest, merge
from bottle.manifest.models import (
    AgentOverride,
    AgentProvider,
    AgentSpec,
    BottleSpec,
)

__all__ = [
    "AgentOverride",
    "AgentProvider",
    "AgentSource",
    "AgentSpec",
    "BottleSource",
    "BottleSpec",
    "Manifest",
    "bottle_file_model",
    "load_manifest",
    "merge",
]
