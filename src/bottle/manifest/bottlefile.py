"""The model of a whole bottle file: :class:`BottleSpec` plus each sidecar's own section.

Apart from the base models so that the sidecars, which build on those, sit between the two:
``manifest.models`` < ``sidecars`` < this module < the loader.
"""

from __future__ import annotations

import functools
from typing import Any

from pydantic import Field, create_model

from bottle.manifest.models import BottleSpec


@functools.cache
def bottle_file_model() -> type[BottleSpec]:
    """``BottleSpec`` with one field per registered sidecar's section (unknown keys rejected)."""
    from bottle.sidecars import registry

    fields: dict[str, Any] = {}
    for sidecar in registry():
        default = sidecar.default_section()
        if default is None:
            fields[sidecar.section] = (sidecar.section_model | None, None)
        else:
            fields[sidecar.section] = (sidecar.section_model, Field(default_factory=type(default)))
    model: type[BottleSpec] = create_model(
        "BottleFile", __base__=BottleSpec, __module__=__name__, **fields
    )
    return model
