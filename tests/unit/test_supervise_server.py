"""The supervise MCP server, run as its own process and driven with the MCP SDK's client.

The test plays the operator by deciding proposals through ``ProposalQueue.decide``, the same
call the host uses.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from bottle.proposals import Proposal, ProposalQueue
from tests.conftest import wait_for

WAIT_S = 2.0
AGENT_IMAGE = "bottle-agent:test"


@dataclass
class Server:
    url: str
    queue: ProposalQueue
    routes_file: Path
    status_file: Path
    proc: subprocess.Popen[bytes]


@contextmanager
def serving(root: Path, **extra_env: str) -> Iterator[Server]:
    """A supervise server process on loopback, its files under ``root``."""
    status_dir = root / "status"
    status_dir.mkdir()
    status_file = status_dir / "supervise.json"
    status_file.write_text('{"stale": true}')  # from an "earlier run": must not count
    env = {
        **os.environ,
        "BOTTLE_SUPERVISE_HOST": "127.0.0.1",
        "BOTTLE_SUPERVISE_PORT": "0",
        "BOTTLE_SUPERVISE_WAIT": str(WAIT_S),
        "BOTTLE_AGENT_IMAGE": AGENT_IMAGE,
        "BOTTLE_PROPOSALS_DIR": str(root / "proposals"),
        "BOTTLE_ROUTES_FILE": str(root / "live-config" / "egress" / "routes.yaml"),
        "BOTTLE_STATUS_DIR": str(status_dir),
        **extra_env,
    }
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bottle.runtime.supervise"], env=env, stdout=log, stderr=log
    )
    try:

        def ready() -> dict[str, Any] | None:
            if proc.poll() is not None:
                raise AssertionError(
                    f"supervise exited {proc.returncode}:\n{(root / 'server.log').read_text()}"
                )
            try:
                data = json.loads(status_file.read_text())
            except (OSError, ValueError):
                return None
            return data if data.get("pid") == proc.pid else None

        status = wait_for(ready, 30, "supervise.json from the new server")
        assert status["port"] > 0 and status["path"] == "/mcp"
        yield Server(
            url=f"http://127.0.0.1:{status['port']}/mcp",
            queue=ProposalQueue(root / "proposals"),
            routes_file=root / "live-config" / "egress" / "routes.yaml",
            status_file=status_file,
            proc=proc,
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover
            proc.kill()
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # This module files many proposals fast; the bounds have tests of their own.
    with serving(
        tmp_path_factory.mktemp("supervise"),
        BOTTLE_SUPERVISE_MAX_PENDING="1000",
        BOTTLE_SUPERVISE_PER_MINUTE="600",
        BOTTLE_SUPERVISE_BURST="100",
    ) as running:
        yield running


def call(server: Server, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    async def run() -> CallToolResult:
        with anyio.fail_after(30):
            async with (
                streamable_http_client(server.url) as (read, write, _),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                return await session.call_tool(tool, arguments)

    return anyio.run(run)


def text(result: CallToolResult) -> str:
    assert result.content and isinstance(result.content[0], TextContent)
    return result.content[0].text


@contextmanager
def operator(
    queue: ProposalQueue, match: Callable[[Proposal], bool], **decision: Any
) -> Iterator[list[Proposal]]:
    """Decide the first pending proposal that ``match``es, from another thread."""
    decided: list[Proposal] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:

            def find() -> Proposal | None:
                for p in queue.list(status="pending").proposals:
                    if match(p):
                        return p
                return None

            proposal = wait_for(find, 15, "the proposal to be filed")
            decided.append(queue.decide(proposal.id, **decision))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield decided
    finally:
        thread.join(timeout=20)
        assert not thread.is_alive(), "operator thread did not finish"
        if errors:
            raise errors[0]


def for_host(host: str) -> Callable[[Proposal], bool]:
    return lambda p: getattr(p.payload, "host", None) == host


def _count(queue: ProposalQueue) -> int:
    return len(queue.list().proposals)


def test_ready_file_and_tools(server: Server) -> None:
    status = json.loads(server.status_file.read_text())
    assert status["service"] == "supervise" and status["pid"] == server.proc.pid

    async def names() -> list[str]:
        with anyio.fail_after(30):
            async with (
                streamable_http_client(server.url) as (read, write, _),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                return [t.name for t in (await session.list_tools()).tools]

    assert sorted(anyio.run(names)) == [
        "capability-block",
        "egress-block",
        "git-push-allow",
        "list-egress-routes",
        "pipelock-block",
        "proposal-status",
    ]


def test_egress_block_approved_round_trip(server: Server) -> None:
    with operator(
        server.queue, for_host("api.approved.test"), approved=True, by="alice", applied=True
    ) as decided:
        result = call(
            server,
            "egress-block",
            {
                "host": "api.approved.test",
                "paths": ["/v1/"],
                "methods": ["get"],
                "justification": "the tests need the API",
                # The agent has no say in credentials: this is dropped.
                "auth": {"scheme": "bearer", "token_ref": "GITHUB_TOKEN"},
            },
        )
    assert not result.isError, text(result)
    assert text(result).startswith(f"approved and applied, id {decided[0].id}, by alice")
    assert "api.approved.test (GET; /v1/)" in text(result)
    raw = server.queue.path(decided[0].id).read_text()
    assert "auth" not in json.loads(raw)["payload"]
    assert "GITHUB_TOKEN" not in raw


def test_egress_block_rejected(server: Server) -> None:
    with operator(
        server.queue, for_host("rejected.test"), approved=False, by="bob", reason="use the mirror"
    ):
        result = call(
            server, "egress-block", {"host": "rejected.test", "justification": "downloads"}
        )
    assert not result.isError
    assert text(result).startswith("rejected, id")
    assert "by bob" in text(result) and "use the mirror" in text(result)


def test_timeout_answers_pending_then_status_gives_the_decision(server: Server) -> None:
    start = time.monotonic()
    result = call(server, "egress-block", {"host": "slow.test", "justification": "later"})
    elapsed = time.monotonic() - start
    assert not result.isError
    assert WAIT_S - 0.5 <= elapsed < WAIT_S + 10
    pending = [p for p in server.queue.list(status="pending").proposals if for_host("slow.test")(p)]
    assert len(pending) == 1
    pid = pending[0].id
    assert text(result).startswith(f"pending, id {pid}")
    assert "proposal-status" in text(result)

    status = call(server, "proposal-status", {"id": pid})
    assert text(status).startswith(f"pending, id {pid}")
    server.queue.decide(pid, approved=True, by="carol", applied=True, reason="ok now")
    status = call(server, "proposal-status", {"id": pid})
    assert not status.isError
    assert text(status).startswith(f"approved and applied, id {pid}, by carol")
    assert "ok now" in text(status)


def test_proposal_status_of_an_unknown_id(server: Server) -> None:
    result = call(server, "proposal-status", {"id": 99999})
    assert result.isError and "no proposal 99999" in text(result)


@pytest.mark.parametrize(
    ("arguments", "word"),
    [
        ({"host": "not a host", "justification": "j"}, "not a host name"),
        ({"host": "https://x.test/path", "justification": "j"}, "no scheme, port or path"),
        ({"host": "ok.test", "paths": ["nope"], "justification": "j"}, "payload.paths.0"),
        ({"host": "ok.test", "justification": "  "}, "justification is empty"),
    ],
)
def test_invalid_egress_block_is_refused_and_nothing_queued(
    server: Server, arguments: dict[str, Any], word: str
) -> None:
    before = _count(server.queue)
    result = call(server, "egress-block", arguments)
    assert result.isError
    assert word in text(result)
    assert "othing was queued" in text(result)
    assert _count(server.queue) == before


@pytest.mark.parametrize(
    ("dockerfile", "word"),
    [
        ('FROM ${BOTTLE_AGENT_IMAGE}\nENTRYPOINT ["/bin/sh"]\n', "ENTRYPOINT is not allowed"),
        ("FROM ${BOTTLE_AGENT_IMAGE}\nRUN true\nFROM alpine\n", "second FROM"),
        ("FROM ubuntu:24.04\nRUN true\n", "not the agent image"),
    ],
)
def test_bad_capability_block_is_refused(server: Server, dockerfile: str, word: str) -> None:
    before = _count(server.queue)
    result = call(server, "capability-block", {"dockerfile": dockerfile, "justification": "jq"})
    assert result.isError and word in text(result)
    assert _count(server.queue) == before


def test_capability_block_on_the_exact_agent_image(server: Server) -> None:
    dockerfile = f"FROM {AGENT_IMAGE}\nRUN apt-get update && apt-get install -y jq\n"
    with operator(
        server.queue,
        lambda p: getattr(p.payload, "dockerfile", None) == dockerfile,
        approved=True,
        by="op",
        applied=False,
        reason="will rebuild tonight",
    ):
        result = call(server, "capability-block", {"dockerfile": dockerfile, "justification": "jq"})
    assert not result.isError
    assert "approved, id" in text(result) and "not applied" in text(result)


def test_pipelock_block_approved(server: Server) -> None:
    with operator(
        server.queue, for_host("files.pipelock.test"), approved=True, by="op", applied=True
    ) as decided:
        result = call(
            server,
            "pipelock-block",
            {"url": "https://files.pipelock.test/pkg.whl", "justification": "wheels"},
        )
    assert not result.isError
    assert "files.pipelock.test (any method; any path)" in text(result)
    assert decided[0].tool == "pipelock-block"


def test_list_egress_routes_shows_auth_by_name_only(server: Server) -> None:
    server.routes_file.parent.mkdir(parents=True, exist_ok=True)
    server.routes_file.write_text(
        "routes:\n"
        "  - host: pypi.org\n"
        "  - host: api.github.com\n"
        "    methods: [GET]\n"
        "    auth: {scheme: bearer, token_ref: GITHUB_TOKEN}\n"
    )
    result = call(server, "list-egress-routes", {})
    assert not result.isError
    data = json.loads(text(result))
    assert data["routes"][0] == {"host": "pypi.org"}
    assert data["routes"][1]["auth"] == {"scheme": "bearer", "token_ref": "GITHUB_TOKEN"}
    assert data["routes"][1]["methods"] == ["GET"]

    server.routes_file.write_text("routes:\n  - host: 'bad host'\n")
    result = call(server, "list-egress-routes", {})
    assert result.isError and "invalid" in text(result)

    server.routes_file.unlink()
    result = call(server, "list-egress-routes", {})
    assert json.loads(text(result))["routes"] == []


def test_unknown_tool_is_an_error(server: Server) -> None:
    result = call(server, "sudo", {})
    assert result.isError and "Unknown tool" in text(result)


def test_status_file_goes_away_on_stop(tmp_path: Path) -> None:
    status_dir = tmp_path / "status"
    env = {
        **os.environ,
        "BOTTLE_SUPERVISE_HOST": "127.0.0.1",
        "BOTTLE_SUPERVISE_PORT": "0",
        "BOTTLE_PROPOSALS_DIR": str(tmp_path / "proposals"),
        "BOTTLE_STATUS_DIR": str(status_dir),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bottle.runtime.supervise"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for((status_dir / "supervise.json").exists, 30, "supervise.json")
        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down cleanly
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
        assert not (status_dir / "supervise.json").exists()
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.wait(timeout=10)


def test_over_a_bound_the_tool_says_so_and_writes_nothing(tmp_path: Path) -> None:
    """The bounds as the agent meets them: through MCP, from a server with small ones."""
    (tmp_path / "proposals").mkdir()
    # Filed before this server started: its index is rebuilt at start, and it counts.
    ProposalQueue(tmp_path / "proposals").create("egress-block", {"host": "old.test"}, "j")
    (tmp_path / "proposals" / "pending").joinpath(".complete").unlink()
    with serving(tmp_path, BOTTLE_SUPERVISE_WAIT="0", BOTTLE_SUPERVISE_MAX_PENDING="2") as small:
        first = call(small, "egress-block", {"host": "a.test", "justification": "j"})
        assert not first.isError and text(first).startswith("pending, id 2")
        files = sorted(p.name for p in small.queue.directory.rglob("*") if p.is_file())
        over = call(small, "egress-block", {"host": "b.test", "justification": "j"})
        assert over.isError
        assert "you have 2 proposals waiting for the operator" in text(over)
        assert "max_pending 2" in text(over) and "proposal-status" in text(over)
        assert sorted(p.name for p in small.queue.directory.rglob("*") if p.is_file()) == files


def test_after_a_capability_swap_supervise_names_the_image_in_force(tmp_path: Path) -> None:
    """The host rewrites ``proposals/agent-image`` when a capability replaces the agent;
    supervise, still the same process, checks and answers against that image."""
    new = "bottle-capability:0123456789ab"
    with serving(tmp_path) as server:
        refused = call(
            server, "capability-block", {"dockerfile": f"FROM {new}\n", "justification": "x"}
        )
        assert refused.isError and f"FROM {AGENT_IMAGE}" in text(refused)

        first = "FROM ${BOTTLE_AGENT_IMAGE}\nRUN echo jq\n"

        def swap(p: Proposal) -> bool:
            if getattr(p.payload, "dockerfile", None) != first:
                return False
            # What the host's capability apply does once the new agent runs.
            (tmp_path / "proposals" / "agent-image").write_text(new + "\n")
            return True

        with operator(server.queue, swap, approved=True, by="op", applied=True, image=new):
            answer = call(server, "capability-block", {"dockerfile": first, "justification": "x"})
        assert not answer.isError
        assert "approved and applied, id" in text(answer)
        assert f"your container now runs {new}." in text(answer)
        applied_id = next(p.id for p in server.queue.list().proposals if p.status == "approved")
        status = call(server, "proposal-status", {"id": applied_id})
        assert f"your container now runs {new}." in text(status)

        # The start's image is no longer the one a Dockerfile may name; the new one is.
        old = call(
            server,
            "capability-block",
            {"dockerfile": f"FROM {AGENT_IMAGE}\n", "justification": "x"},
        )
        assert (
            old.isError and f"FROM {new}" in text(old) and f"or FROM {AGENT_IMAGE}" not in text(old)
        )
        ok = call(server, "capability-block", {"dockerfile": f"FROM {new}\n", "justification": "x"})
        assert not ok.isError and "pending, id" in text(ok)

        # A file that is not an image reference (or not a file) is not believed.
        image_file = tmp_path / "proposals" / "agent-image"
        for spoil in ("not an image\n\x1b[2J", None):
            image_file.unlink()
            if spoil is None:
                image_file.symlink_to(tmp_path / "server.log")
            else:
                image_file.write_text(spoil)
            back = call(
                server, "capability-block", {"dockerfile": f"FROM {new}\n", "justification": "x"}
            )
            assert back.isError and f"FROM {AGENT_IMAGE}" in text(back)
