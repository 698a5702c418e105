"""Shared fixtures of the escape suite: a real bottle to break out of, and things to reach.

Every fixture here is generic so other attack files can use it:

- ``escape_home``: a BOTTLE_HOME (module scope) with the examples and the ``escape`` bottle
  (supervise on, one route to ``upstream.test`` whose credential egress injects).
- ``escaped``: an ``Instance`` of that bottle started through the library, workspace owned by
  a non-root user, with ``upstream.test`` answering on its egress network (module scope).
- ``host_listener``: a TCP server on the host's ``0.0.0.0`` that records who connected.
- ``host_addresses``: this machine's own addresses (loopback excepted).
- ``decoy_network``: another bridge network with a host-side address, standing in for
  another bottle's network.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bottle import Bottle, Instance, Settings
from bottle.checks import host_addresses as _host_addresses
from tests.conftest import EXAMPLES, write
from tests.integration.conftest import WORKSPACE_OWNER, labelled, upstream

#: The credential egress injects for upstream.test: it must never be seen in the agent.
SECRET = "esc-4b1d9e77c0a3f25e8d16"
SECRET_VAR = "ESCAPE_UPSTREAM_TOKEN"

ESCAPE_BOTTLE = f"""---
description: the escape suite's bottle
agent: {{provider: shell}}
supervise: true
egress:
  routes:
    - host: upstream.test
      paths: [/allowed/]
      methods: [GET]
      auth: {{scheme: bearer, token_ref: {SECRET_VAR}}}
      private: true   # upstream.test is a container on the bottle's egress network
---
"""


@pytest.fixture(scope="module")
def escape_home(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Path:
    home = tmp_path_factory.mktemp("escape-home")
    shutil.copytree(EXAMPLES / "bottles", home / "bottles")
    shutil.copytree(EXAMPLES / "agents", home / "agents")
    write(home / "bottles" / "escape.md", ESCAPE_BOTTLE)
    write(home / "agents" / "escape.md", "---\nbottle: escape\n---\n")
    return home


def user_workspace(path: Path) -> Path:
    """``path``, made and owned by a non-root user (the agent runs as the workspace owner)."""
    path.mkdir(parents=True, exist_ok=True)
    if os.getuid() == 0:
        os.chown(path, *WORKSPACE_OWNER)
    return path


@contextlib.contextmanager
def started(home: Path, workdir: Path, agent: str = "escape") -> Iterator[Instance]:
    """``agent`` started through the library with upstream.test; fails on leftovers."""
    settings = Settings.from_env({"BOTTLE_HOME": str(home)})
    environ = {**os.environ, SECRET_VAR: SECRET}
    instance = Bottle(agent, cwd=workdir, settings=settings, environ=environ).start()
    slug = instance.slug
    try:
        with instance:
            meta = instance.metadata
            with upstream(meta.compose_project, image=meta.images["sidecar"]):
                yield instance
    finally:
        left = labelled("container", slug) + labelled("network", slug)
        assert not left, f"left behind by {slug}: {left}"


@pytest.fixture(scope="module")
def escaped(escape_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    workdir = user_workspace(tmp_path_factory.mktemp("escape-work") / "work")
    with started(escape_home, workdir) as instance:
        yield instance


@dataclass
class Listener:
    port: int
    peers: list[str] = field(default_factory=list)


@contextlib.contextmanager
def serving() -> Iterator[Listener]:
    """A real server on the host's 0.0.0.0 (a random port); it records every peer address."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", 0))  # the point: a host service on every address
    server.listen(64)
    server.settimeout(0.1)
    listener = Listener(server.getsockname()[1])
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except OSError:
                continue
            listener.peers.append(peer[0])
            with contextlib.suppress(OSError):
                conn.sendall(b"HTTP/1.0 200 OK\r\ncontent-length: 5\r\n\r\nhost!")
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.fixture(scope="module")
def host_listener() -> Iterator[Listener]:
    with serving() as listener:
        yield listener


@pytest.fixture(scope="module")
def host_addresses() -> list[str]:
    found = _host_addresses()
    assert found, "the host has no non-loopback address to probe"
    return found


@pytest.fixture(scope="module")
def decoy_network(docker_engine: None) -> Iterator[tuple[str, str]]:
    """(name, gateway) of a plain bridge network: what another bottle's egress network is."""
    name = f"bottle-escape-decoy-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "network", "create", name], check=True, capture_output=True)
    try:
        gateway = subprocess.run(
            ["docker", "network", "inspect", name, "-f", "{{(index .IPAM.Config 0).Gateway}}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        yield name, gateway
    finally:
        subprocess.run(["docker", "network", "rm", name], capture_output=True, check=False)
