"""Pieces every sidecar's service stanza shares."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from bottle import hardening
from bottle.settings import home_id

if TYPE_CHECKING:
    from bottle.plan import BottlePlan


def escape(value: str) -> str:
    """Compose interpolates ``$`` everywhere; a literal one is written ``$$``."""
    return value.replace("$", "$$")


def bind(source: Path, target: PurePosixPath, *, read_only: bool = False) -> dict[str, Any]:
    """A bind mount of a directory (never a single file: a rename would not be seen)."""
    return {
        "type": "bind",
        "source": escape(str(source)),
        "target": str(target),
        "read_only": read_only,
    }


def labels(plan: BottlePlan, role: str | None = None) -> dict[str, str]:
    """What marks an object as this instance's: cleanup finds orphans by these, per home."""
    found = {
        "bottle.slug": plan.slug,
        "bottle.home": home_id(plan.state_dir.parent),
        "bottle.version": plan.version,
    }
    if role is not None:
        found["bottle.role"] = role
    return found


def sidecar_base(plan: BottlePlan, name: str, module: str) -> dict[str, Any]:
    """The stanza every sidecar starts from: our image, tini as PID 1, fast stop.

    The one place for keys every sidecar service shares. No healthcheck: it would exec a
    process in the sidecar every second for its whole life; the host reads readiness from
    the status file instead (``bottle.readiness``).
    """
    return {
        "image": plan.images.sidecar,
        "init": True,
        "command": ["python", "-m", module],
        "labels": labels(plan, name),
        "stop_grace_period": "3s",
        **hardening.sidecar_keys(plan),
    }
