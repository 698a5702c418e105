"""What the unit tests share beyond tests/conftest.py: temporary files in memory, and
what is the same for every test built once (the CLI, the sidecar's sources)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bottle.runtime.egress import lazy_addons

# mitmproxy.addons as the egress sidecar loads it, before a test module imports mitmproxy:
# the real package's __init__ imports every addon mitmproxy ships, and with them Flask,
# Werkzeug, Jinja and ldap3 (0.15 s of imports), which no test here uses.
lazy_addons.install()

MEMORY = Path("/dev/shm")


def memory_dir() -> Path | None:
    """A writable tmpfs that runs programs (the git-gate tests run hooks from their
    temporary directories), or None."""
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return None
    for line in mounts:
        fields = line.split()
        if len(fields) >= 4 and fields[1] == str(MEMORY) and fields[2] == "tmpfs":
            options = fields[3].split(",")
            if "noexec" not in options and "ro" not in options:
                return MEMORY
    return None


@pytest.fixture(scope="session")
def tmp_path_factory(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[pytest.TempPathFactory]:
    """``tmp_path`` and ``tmp_path_factory`` of the unit tests, on a tmpfs when there is one.

    Bottle syncs every state write to disk (``bottle.files.atomic_write``): on a disk that
    costs milliseconds a write, over a thousand times a run; in memory it costs nothing. The
    directory goes when the session ends; ``--basetemp DIR`` keeps pytest's own (on disk,
    kept after the run) for a look at what a test left.
    """
    memory = memory_dir()
    if request.config.option.basetemp is not None or memory is None:
        yield tmp_path_factory
        return
    root = Path(tempfile.mkdtemp(prefix="bottle-unit-", dir=memory))
    try:
        yield pytest.TempPathFactory(
            root,
            retention_count=0,
            retention_policy="all",
            trace=request.config.trace.get("tmpdir"),
            _ispytest=True,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def one_click_command() -> Iterator[None]:
    """``bottle``'s click command, built once for the session.

    ``main`` has typer build it from every command's signature on each call (milliseconds,
    and the unit tests call ``main`` hundreds of times); a process calls it once. What the
    command does with a command line is unchanged: it holds no state between calls. A
    shell's completion request (``COMPLETE_VAR`` set) still gets a command of its own.
    """
    from bottle_cli import app

    build = app.cli
    built = build()

    def cli() -> Any:
        return build() if app.COMPLETE_VAR in os.environ else built

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(app, "cli", cli)
        yield


@pytest.fixture(scope="session", autouse=True)
def one_sidecar_source_walk() -> Iterator[None]:
    """The sidecar's sources read once per session for the package itself.

    Every plan hashes the sidecar image's context, and finding its files walks the imports
    of every runtime module (milliseconds; unit tests resolve plans a few hundred times),
    while the package does not change under a test run. A walk of any other tree (the
    tests that edit a copy) is done afresh each time.
    """
    import bottle
    from bottle import images

    walk = images.runtime_sources
    package = Path(bottle.__file__).parent
    walked = walk(package)

    def runtime_sources(root: Path, *, cache: Path | None = None) -> dict[str, bytes]:
        return dict(walked) if root == package else walk(root, cache=cache)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(images, "runtime_sources", runtime_sources)
        yield
