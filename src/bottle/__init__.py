"""bottle: run an AI coding agent in a container whose only way out is through sidecars.

The public API; everything else is internal. Names load lazily so that ``bottle --help``
and the sidecar runtimes (which import ``bottle.policy`` inside containers) stay light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bottle.bottle import Bottle as Bottle
    from bottle.bottle import resume as resume
    from bottle.engine.compose import ExecResult as ExecResult
    from bottle.errors import (
        ApplyError as ApplyError,
    )
    from bottle.errors import (
        BottleError as BottleError,
    )
    from bottle.errors import (
        DockerUnavailable as DockerUnavailable,
    )
    from bottle.errors import (
        EngineError as EngineError,
    )
    from bottle.errors import (
        ImageBuildError as ImageBuildError,
    )
    from bottle.errors import (
        InstanceNotFound as InstanceNotFound,
    )
    from bottle.errors import (
        ManifestError as ManifestError,
    )
    from bottle.errors import (
        PlanError as PlanError,
    )
    from bottle.errors import (
        StartTimeout as StartTimeout,
    )
    from bottle.errors import (
        StateError as StateError,
    )
    from bottle.instance import Instance as Instance
    from bottle.instances import InstanceInfo as InstanceInfo
    from bottle.instances import instances as instances
    from bottle.manifest import Manifest as Manifest
    from bottle.manifest import load_manifest as load_manifest
    from bottle.plan import BottlePlan as BottlePlan
    from bottle.policy import Route as Route
    from bottle.policy import Routes as Routes
    from bottle.settings import Settings as Settings
    from bottle.state import InstanceStatus as InstanceStatus

_EXPORTS = {
    "ApplyError": "bottle.errors",
    "Bottle": "bottle.bottle",
    "BottleError": "bottle.errors",
    "BottlePlan": "bottle.plan",
    "DockerUnavailable": "bottle.errors",
    "EngineError": "bottle.errors",
    "ExecResult": "bottle.engine.compose",
    "ImageBuildError": "bottle.errors",
    "Instance": "bottle.instance",
    "InstanceInfo": "bottle.instances",
    "InstanceNotFound": "bottle.errors",
    "InstanceStatus": "bottle.state",
    "Manifest": "bottle.manifest",
    "ManifestError": "bottle.errors",
    "PlanError": "bottle.errors",
    "Route": "bottle.policy",
    "Routes": "bottle.policy",
    "Settings": "bottle.settings",
    "StartTimeout": "bottle.errors",
    "StateError": "bottle.errors",
    "instances": "bottle.instances",
    "load_manifest": "bottle.manifest",
    "resume": "bottle.bottle",
}

__all__ = [
    "ApplyError",
    "Bottle",
    "BottleError",
    "BottlePlan",
    "DockerUnavailable",
    "EngineError",
    "ExecResult",
    "ImageBuildError",
    "Instance",
    "InstanceInfo",
    "InstanceNotFound",
    "InstanceStatus",
    "Manifest",
    "ManifestError",
    "PlanError",
    "Route",
    "Routes",
    "Settings",
    "StartTimeout",
    "StateError",
    "instances",
    "load_manifest",
    "resume",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bottle' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
