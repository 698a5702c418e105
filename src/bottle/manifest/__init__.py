"""Bottle and agent files: typed models, loading, the trust boundary and ``extends``."""

from bottle.manifest.loader import AgentSource, BottleSource, Manifest, load_manifest, merge
from bottle.manifest.models import (
    AgentOverride,
    AgentProvider,
    AgentSpec,
    BottleSpec,
    Egress,
    Git,
    GitRemote,
)

__all__ = [
    "AgentOverride",
    "AgentProvider",
    "AgentSource",
    "AgentSpec",
    "BottleSource",
    "BottleSpec",
    "Egress",
    "Git",
    "GitRemote",
    "Manifest",
    "load_manifest",
    "merge",
]
