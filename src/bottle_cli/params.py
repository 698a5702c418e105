"""Arguments and options more than one command module takes, and the run's options."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from bottle.instance import Instance
    from bottle.settings import Settings


def _check_slug(value: str) -> str:
    """Refuse (exit 2) what cannot be a slug before any command turns it into a path."""
    from bottle.state import check_slug

    return check_slug(value)


def _check_slugs(values: list[str] | None) -> list[str] | None:
    for value in values or []:
        _check_slug(value)
    return values


JsonOpt = Annotated[bool, typer.Option("--json", help="print plain JSON on stdout")]
SlugArg = Annotated[
    str,
    typer.Argument(
        help="instance slug (or a unique prefix; see 'bottle ls')", callback=_check_slug
    ),
]
SlugsArg = Annotated[
    list[str] | None,
    typer.Argument(help="instance slugs (or unique prefixes)", callback=_check_slugs),
]


@dataclass
class RunOptions:
    """What one ``bottle`` run was given globally (``main`` sets it for the run).

    Settings are read from the environment once per run, on first use, so ``bottle --help``
    stays free of the library.
    """

    debug: bool = False
    _settings: Settings | None = field(default=None, repr=False)

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            from bottle.settings import Settings

            self._settings = Settings.from_env()
        return self._settings


# A context variable, not a module global: two runs in one process (tests) never share one.
_current: ContextVar[RunOptions | None] = ContextVar("bottle_run_options", default=None)


@contextlib.contextmanager
def running(options: RunOptions) -> Iterator[RunOptions]:
    token = _current.set(options)
    try:
        yield options
    finally:
        _current.reset(token)


def run_options() -> RunOptions:
    """This run's options (a fresh default set outside ``main``, e.g. under a test runner)."""
    options = _current.get()
    if options is None:
        options = RunOptions()
        _current.set(options)
    return options


def settings() -> Settings:
    return run_options().settings


def open_instance(slug: str) -> Instance:
    """The instance a slug (or a unique prefix of one) names; ``InstanceNotFound`` if none."""
    from bottle.instances import resolve

    return resolve(slug, settings())
