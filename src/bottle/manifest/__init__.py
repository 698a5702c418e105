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
    Supervise,
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
    "Supervise",
    "load_manifest",
    "merge",
]
