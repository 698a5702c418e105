"""Arguments and options more than one command module takes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from bottle.instance import Instance

JsonOpt = Annotated[bool, typer.Option("--json", help="print plain JSON on stdout")]
SlugArg = Annotated[str, typer.Argument(help="instance slug (or a unique prefix; see 'bottle ls')")]


def open_instance(slug: str) -> Instance:
    """The instance a slug (or a unique prefix of one) names; ``InstanceNotFound`` if none."""
    from bottle.instances import resolve

    return resolve(slug)
