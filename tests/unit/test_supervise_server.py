"""The supervise MCP server in this process, driven with the MCP SDK's client.

The server is the app the sidecar runs (``build_app``, after the start's ``prepare``), served
over streamable HTTP through httpx's ASGI transport: the same routes, transport and tools as
the process, with no interpreter or socket to start. The process itself (environment,
listening socket, status file, SIGTERM) is tests/integration/test_supervise_process.py.

The test plays the operator by deciding proposals through ``ProposalQueue.decide``, the same
call the host uses.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from bottle.proposals import Proposal, ProposalQueue
from bottle.proposals.limits import Limits
from tests.conftest import wait_for

# A filing tool's wait for a decision: the operator thread decides well within it. The
# timeout test has a server of its own that waits far less.
WAIT_S = 10.0
AGENT_IMAGE = "bottle-agent:test"
# The name and port the agent uses: the app must not refuse it as a rebinding attack.
URL = "http://supervise:8765/mcp"

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal
    from mcp.types import CallToolResult


@dataclass
class Server:
    queue: ProposalQueue
    routes_file: Path
    portal: BlockingPortal
    app: Any  # the ASGI app of the streamable HTTP transport


@contextmanager
def serving(
    root: Path, *, wait_s: float = WAIT_S, limits: Limits | None = None
) -> Iterator[Server]:
    """The supervise app, started as the sidecar starts it, its files under ``root``; its
    event loop runs in a thread of its own, as uvicorn's would."""
    from anyio.from_thread import start_blocking_portal

    from bottle.runtime.supervise.server import Config, build_app, prepare

    config = Config(
        host="127.0.0.1",
        port=0,
        wait_s=wait_s,
        poll_s=0.005,  # a filing's answer waits at most this after the operator's decision
        agent_image=AGENT_IMAGE,
        limits=limits or Limits(),
        proposals_dir=root / "proposals",
        routes_file=root / "live-config" / "egress" / "routes.yaml",
        status_dir=root / "status",
    )
    # A uvicorn exit signal sets this process-wide flag (sse_starlette ends every stream at
    # once after it): a process has one server, this process has had others (the signal
    # tests of test_supervise_idle.py).
    from sse_starlette.sse import AppStatus

    AppStatus.should_exit = False
    prepare(config)
    mcp_app = build_app(config)
    asgi = mcp_app.streamable_http_app()
    with (
        start_blocking_portal() as portal,
        portal.wrap_async_context_manager(mcp_app.session_manager.run()),
    ):
        yield Server(
            queue=ProposalQueue(config.proposals_dir),
            routes_file=config.routes_file,
            portal=portal,
            app=asgi,
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # This module files many proposals fast; the bounds have tests of their own.
    limits = Limits(max_pending=1000, per_minute=600, burst=100)
    with serving(tmp_path_factory.mktemp("supervise"), limits=limits) as running:
        yield running


def session_call(server: Server, use: Callable[[Any], Any]) -> Any:
    """``use(session)`` in an initialized MCP client session over the app's HTTP transport."""
    import anyio
    import httpx
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    async def run() -> Any:
        with anyio.fail_after(30):
            async with (
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=server.app), trust_env=False
                ) as http,
                streamable_http_client(URL, http_client=http) as (read, write, _),
                ClientSession(read, write) as session,
            ):
                await session.initialize()
                return await use(session)

    return server.portal.call(run)


def call(server: Server, tool: str, arguments: dict[str, Any]) -> CallToolResult:
    return session_call(server, lambda session: session.call_tool(tool, arguments))


def text(result: CallToolResult) -> str:
    from mcp.types import TextContent

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

            proposal = wait_for(find, 15, "the proposal to be filed", poll=0.005)
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


def test_the_start_drops_a_stale_status_file_and_serves_the_six_tools(tmp_path: Path) -> None:
    (tmp_path / "status").mkdir()
    stale = tmp_path / "status" / "supervise.json"
    stale.write_text('{"stale": true}')  # from an "earlier run": must not look ready
    with serving(tmp_path) as running:
        assert not stale.exists()

        async def names(session: Any) -> list[str]:
            return [t.name for t in (await session.list_tools()).tools]

        assert sorted(session_call(running, names)) == [
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


def test_timeout_answers_pending_then_status_gives_the_decision(tmp_path: Path) -> None:
    wait_s = 0.05
    with serving(tmp_path, wait_s=wait_s) as server:
        start = time.monotonic()
        result = call(server, "egress-block", {"host": "slow.test", "justification": "later"})
        elapsed = time.monotonic() - start
        assert not result.isError
        assert wait_s <= elapsed < wait_s + 10
        pending = server.queue.list(status="pending").proposals
        assert len(pending) == 1 and for_host("slow.test")(pending[0])
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


def test_over_a_bound_the_tool_says_so_and_writes_nothing(tmp_path: Path) -> None:
    """The bounds as the agent meets them: through MCP, from a server with small ones."""
    (tmp_path / "proposals").mkdir()
    # Filed before this server started: its index is rebuilt at start, and it counts.
    ProposalQueue(tmp_path / "proposals").create("egress-block", {"host": "old.test"}, "j")
    (tmp_path / "proposals" / "pending").joinpath(".complete").unlink()
    with serving(tmp_path, wait_s=0, limits=Limits(max_pending=2)) as small:
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
    with serving(tmp_path, wait_s=2.0) as server:
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
        # Accepted and queued: an operator finds it pending and decides it (a wait for the
        # timeout's "pending" would cost the whole wait).
        on_new = f"FROM {new}\n"
        with operator(
            server.queue, lambda p: getattr(p.payload, "dockerfile", None) == on_new,
            approved=False, by="op", reason="not now",
        ):  # fmt: skip
            ok = call(server, "capability-block", {"dockerfile": on_new, "justification": "x"})
        assert not ok.isError and text(ok).startswith("rejected, id")

        # A file that is not an image reference (or not a file) is not believed.
        image_file = tmp_path / "proposals" / "agent-image"
        for spoil in ("not an image\n\x1b[2J", None):
            image_file.unlink()
            if spoil is None:
                # A link to a file that names an image: still not believed.
                (tmp_path / "elsewhere").write_text("bottle-capability:fedcba987654\n")
                image_file.symlink_to(tmp_path / "elsewhere")
            else:
                image_file.write_text(spoil)
            back = call(
                server, "capability-block", {"dockerfile": f"FROM {new}\n", "justification": "x"}
            )
            assert back.isError and f"FROM {AGENT_IMAGE}" in text(back)
