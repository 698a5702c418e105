"""Real Docker: instances started through the library and the CLI.

Every test gets its own BOTTLE_HOME and working directory; afterwards the fixture checks
that no container or network of the test's instances is left behind.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import run_cli, wait_for, write

UPSTREAM_HOST = "upstream.test"

IT_BOTTLE = """---
description: integration tests' bottle
agent: {provider: shell}
supervise: false
egress:
  routes:
    # upstream.test is a container on the bottle's egress network: a private address.
    - {host: upstream.test, paths: [/allowed/], methods: [GET], private: true}
---
"""


@pytest.fixture
def bottle_home(examples_home: Path, docker_engine: None) -> Iterator[Path]:
    home = examples_home
    write(home / "bottles" / "it.md", IT_BOTTLE)
    write(home / "agents" / "it.md", "---\nbottle: it\n---\n")
    yield home
    leftovers = _leftovers(home)
    if leftovers:
        # Clean up for the next test, then fail this one: a leak is a bug.
        subprocess.run(["docker", "rm", "-f", *leftovers[0]], capture_output=True, check=False)
        subprocess.run(["docker", "network", "rm", *leftovers[1]], capture_output=True, check=False)
        pytest.fail(f"containers/networks left behind: {leftovers}")


def _slugs(home: Path) -> list[str]:
    state = home / "state"
    return sorted(p.name for p in state.iterdir()) if state.is_dir() else []


def _leftovers(home: Path) -> tuple[list[str], list[str]] | None:
    containers: list[str] = []
    networks: list[str] = []
    for slug in _slugs(home):
        containers += labelled("container", slug)
        networks += labelled("network", slug)
    return (containers, networks) if containers or networks else None


def labelled(kind: str, slug: str) -> list[str]:
    args = ["docker", kind, "ls", "-q", "--filter", f"label=bottle.slug={slug}"]
    if kind == "container":
        args.insert(3, "-a")
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return out.split()


#: Owner of the integration tests' workspaces: the agent runs as the workspace's owner and
#: bottle refuses a root-owned one, while the tests themselves often run as root.
WORKSPACE_OWNER = (1000, 1000)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    import os

    path = tmp_path / "work"
    path.mkdir()
    if os.getuid() == 0:
        os.chown(path, *WORKSPACE_OWNER)
    return path


def cli(
    *args: str, cwd: Path, env_extra: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, env=env_extra, timeout=timeout)


@contextlib.contextmanager
def upstream(project: str, *, image: str) -> Iterator[str]:
    """A small HTTP server on the instance's egress network, answering as upstream.test."""
    name = f"bottle-it-upstream-{uuid.uuid4().hex[:8]}"
    script = (
        "import http.server as h\n"
        "class H(h.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = ('hello from upstream ' + self.path + ' auth=' + str(self.headers.get('Authorization'))).encode()\n"
        "        self.send_response(200); self.send_header('content-length', str(len(body))); self.end_headers(); self.wfile.write(body)\n"
        "    do_POST = do_GET\n"
        "h.ThreadingHTTPServer(('', 80), H).serve_forever()\n"
    )
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--network",
            f"{project}_egress",
            "--network-alias",
            UPSTREAM_HOST,
            "--label",
            "bottle.test=upstream",
            image,
            "python",
            "-c",
            script,
        ],
        check=True,
        capture_output=True,
    )
    # Answering before the first test request, which would otherwise race python's start.
    probe = "import urllib.request as u; u.urlopen('http://127.0.0.1/ready', timeout=2)"
    wait_for(
        lambda: (
            subprocess.run(
                ["docker", "exec", name, "python", "-c", probe], capture_output=True, check=False
            ).returncode
            == 0
            or None
        ),
        60,
        "the upstream to listen",
        poll=0.2,
    )
    try:
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


@contextlib.contextmanager
def running(home: Path, workdir: Path, name: str, bottle_text: str, **start: Any) -> Iterator[Any]:
    """Agent ``name`` in a bottle of its own, started through the library, with upstream.test."""
    from bottle import Bottle

    write(home / "bottles" / f"{name}.md", bottle_text)
    write(home / "agents" / f"{name}.md", f"---\nbottle: {name}\n---\n")
    with Bottle(name, cwd=workdir).start(**start) as instance:
        meta = instance.metadata
        with upstream(meta.compose_project, image=meta.images["sidecar"]):
            yield instance


# A minimal MCP client (streamable HTTP, JSON-RPC) for the agent: the shell image has
# python3 but no MCP SDK, as an agent's own tools would not.
MCP_CLIENT = r"""
import json, sys, urllib.request
URL = "http://supervise:8765/mcp"
def rpc(method, params, ident=1):
    body = json.dumps({"jsonrpc": "2.0", "id": ident, "method": method, "params": params}).encode()
    req = urllib.request.Request(URL, body, {"content-type": "application/json",
        "accept": "application/json, text/event-stream"})
    text = urllib.request.urlopen(req, timeout=60).read().decode()
    for line in text.splitlines():
        if line.startswith("data:"):
            text = line[5:]
    return json.loads(text)
rpc("initialize", {"protocolVersion": "2025-03-26", "capabilities": {},
    "clientInfo": {"name": "probe", "version": "1"}})
name, args = sys.argv[1], json.loads(sys.argv[2])
out = rpc("tools/call", {"name": name, "arguments": args}, 2)
print(json.dumps(out))
"""


def curl(instance, url: str) -> str:
    return instance.exec(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", url], capture=True
    ).stdout


def mcp(instance, tool: str, args: dict) -> str:
    result = instance.exec(["python3", "-c", MCP_CLIENT, tool, json.dumps(args)], capture=True)
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    return " ".join(c.get("text", "") for c in data["result"]["content"])


def mcp_started(instance, tool: str, args: dict) -> subprocess.Popen[str]:
    """The same call as :func:`mcp`, left running: the test decides while the agent waits."""
    return subprocess.Popen(
        [
            "docker",
            "compose",
            "-f",
            str(instance.state.compose_file),
            "-p",
            instance.metadata.compose_project,
            "exec",
            "-T",
            "agent",
            "python3",
            "-c",
            MCP_CLIENT,
            tool,
            json.dumps(args),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def readline(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The next line ``proc`` prints; fails after ``timeout`` instead of hanging the run."""
    import threading

    assert proc.stdout is not None
    stdout = proc.stdout
    lines: list[str] = []
    # A thread, not select(): the pipe's reader buffers, so data may be read but not yet seen.
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not lines:
        raise AssertionError(f"no output from {proc.args[:4]} within {timeout}s")
    return lines[0]
