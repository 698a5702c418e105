"""``status/<name>.json``: the one status format every sidecar publishes.

Written inside the sidecar containers, read on the host; kept free of heavy imports because
both sides load it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class SidecarStatus(BaseModel):
    """What a sidecar says about itself once it serves (a subclass may add fields).

    A sidecar writes its file only once it is up, so a file that parses means ``ready``; a
    reader that finds no file (or an unreadable one) reports ``ready=False``.
    ``generation`` counts the configurations it has taken (0: it has no reload), ``error``
    is the last configuration it refused (the previous one stays in force).
    """

    model_config = ConfigDict(extra="ignore")

    ready: bool = True
    generation: int = 0
    loaded_at: str | None = None
    error: str | None = None
