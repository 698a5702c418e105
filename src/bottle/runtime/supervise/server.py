"""The supervise MCP server: the agent's only way to ask the operator for more.

It runs inside the ``supervise`` sidecar, on the internal network only, and speaks MCP over
streamable HTTP at ``http://supervise:<SUPERVISE_PORT>/mcp``. There is no token: the only
client that can reach it is the agent, and the agent is the one it serves. It has no
network path to the host; it shares two bind-mounted directories with it:

* the proposals directory (read-write): a filing tool validates the request, writes a
  pending proposal there (:class:`bottle.proposals.ProposalQueue`), and waits a bounded time
  for the operator to rewrite it as approved or rejected;
* ``live-config/egress/`` (read-only): ``list-egress-routes`` shows the routes in force.

The queue is bounded (:mod:`bottle.proposals.limits`): over a bound the tool answers with
which one and when to try again, and writes nothing. At start it rebuilds the queue's index
of pending proposals, so the operator's listing never has to read decided ones.

Once the socket is listening it writes ``<status dir>/supervise.json``; the host waits
for that file before it starts the agent (``bottle.readiness``).

Environment (each has a default that fits the container):

``BOTTLE_SUPERVISE_HOST``   address to bind (``0.0.0.0``)
``BOTTLE_SUPERVISE_PORT``   port (``layout.SUPERVISE_PORT``); ``0`` picks a free one, which
                            the status file names
``BOTTLE_SUPERVISE_WAIT``   seconds a filing tool waits for a decision (``30``)
``BOTTLE_SUPERVISE_MAX_PENDING``  proposals that may wait for a decision at once (``20``)
``BOTTLE_SUPERVISE_PER_MINUTE``   proposals filed per minute, on average (``10``)
``BOTTLE_SUPERVISE_BURST``        proposals filed at once after a quiet spell (``5``)
``BOTTLE_AGENT_IMAGE``      the agent image ref a capability Dockerfile may name after FROM,
                            until the host writes ``<proposals>/agent-image`` (a capability
                            replaced the agent): that file, read at each request, wins
``BOTTLE_PROPOSALS_DIR``    proposals directory (``layout.PROPOSALS``)
``BOTTLE_ROUTES_FILE``      live routes (``layout.LIVE_CONFIG/egress/routes.yaml``)
``BOTTLE_STATUS_DIR``       where ``supervise.json`` goes (``layout.STATUS``)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import uvicorn
from mcp.server.fastmcp import FastMCP
from mcp.server.fastmcp.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import Field

from bottle import layout, safefs
from bottle.errors import ApplyError
from bottle.files import atomic_write
from bottle.policy import RoutesFileError, parse_routes_file
from bottle.proposals.limits import Limits, TokenBucket
from bottle.proposals.models import Proposal, describe
from bottle.proposals.queue import ProposalQueue

log = logging.getLogger("bottle.supervise")

STATUS_NAME = "supervise.json"
_POLL_S = 0.2
_IMAGE_MAX_BYTES = 512
#: An image reference as bottle writes them (``repo:tag``, maybe a registry and digest).
_IMAGE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,299}")


@dataclass(frozen=True, kw_only=True)
class Config:
    """Everything the server reads from its environment, read once."""

    host: str = "0.0.0.0"  # noqa: S104 - the sidecar sits on an internal-only network
    port: int = layout.SUPERVISE_PORT
    wait_s: float = 30.0
    poll_s: float = _POLL_S
    agent_image: str | None = None
    limits: Limits = field(default_factory=Limits)
    proposals_dir: Path = Path(str(layout.PROPOSALS))
    routes_file: Path = Path(str(layout.LIVE_CONFIG / "egress" / layout.ROUTES_FILE))
    status_dir: Path = Path(str(layout.STATUS))

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        defaults = cls()

        def number(name: str, default: float) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = float(raw)
            except ValueError:
                raise SystemExit(f"supervise: {name}={raw!r} is not a number") from None
            if value < 0:
                raise SystemExit(f"supervise: {name} must not be negative")
            return value

        def count(name: str, default: int) -> int:
            value = number(name, default)
            if value < 1 or value != int(value):
                raise SystemExit(f"supervise: {name} must be a whole number of at least 1")
            return int(value)

        limits = Limits(
            max_pending=count("BOTTLE_SUPERVISE_MAX_PENDING", defaults.limits.max_pending),
            per_minute=count("BOTTLE_SUPERVISE_PER_MINUTE", defaults.limits.per_minute),
            burst=count("BOTTLE_SUPERVISE_BURST", defaults.limits.burst),
        )
        return cls(
            host=env.get("BOTTLE_SUPERVISE_HOST") or defaults.host,
            limits=limits,
            port=int(number("BOTTLE_SUPERVISE_PORT", defaults.port)),
            wait_s=number("BOTTLE_SUPERVISE_WAIT", defaults.wait_s),
            agent_image=env.get("BOTTLE_AGENT_IMAGE") or None,
            proposals_dir=Path(env.get("BOTTLE_PROPOSALS_DIR") or defaults.proposals_dir),
            routes_file=Path(env.get("BOTTLE_ROUTES_FILE") or defaults.routes_file),
            status_dir=Path(env.get("BOTTLE_STATUS_DIR") or defaults.status_dir),
        )

    @property
    def status_file(self) -> Path:
        return self.status_dir / STATUS_NAME


_JUSTIFICATION = Field(
    description="Why you need this, in a sentence or two: the operator reads it to decide."
)


class Supervise:
    """The tools, bound to one proposals directory and routes file."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.queue = ProposalQueue(config.proposals_dir)
        self.rate = TokenBucket(config.limits.per_minute, config.limits.burst)

    async def _wait(self, proposal_id: int) -> Proposal:
        # In a worker thread: the queue's polling (and its file reads) never block the loop.
        return await anyio.to_thread.run_sync(
            self.queue.wait, proposal_id, self.config.wait_s, self.config.poll_s
        )

    async def file(self, tool: str, payload: dict[str, Any], justification: str) -> str:
        """Validate, queue, wait a bounded time, and say what became of the proposal."""
        try:
            self.rate.check()
            # In the loop's thread, no await in between: two calls cannot both pass a bound.
            proposal = self.queue.create(
                tool,
                payload,
                justification,
                base_ref=self.agent_image(),
                max_pending=self.config.limits.max_pending,
            )
        except ApplyError as exc:
            log.info("refused %s: %s", tool, exc.message)
            raise ToolError(_message(exc)) from None  # every refusal of create says so
        self.rate.take()
        log.info("filed proposal %d (%s): %s", proposal.id, tool, proposal.payload.summary())
        try:
            final = await self._wait(proposal.id)
        except ApplyError as exc:
            raise ToolError(_message(exc)) from None
        if final.status != "pending":
            log.info("proposal %d %s", final.id, final.status)
        return describe(final)

    def agent_image(self) -> str | None:
        """The agent image in force: the host's file after a capability swap, else the
        start's. Read each time: the swap happens while this process runs."""
        path = self.config.proposals_dir / layout.AGENT_IMAGE_FILE
        try:
            text = safefs.read_regular(path, max_bytes=_IMAGE_MAX_BYTES).decode().strip()
        except (OSError, UnicodeDecodeError):
            return self.config.agent_image
        return text if _IMAGE_RE.fullmatch(text) else self.config.agent_image

    def status(self, proposal_id: int) -> str:
        try:
            return describe(self.queue.get(proposal_id))
        except ApplyError as exc:
            raise ToolError(_message(exc)) from None

    def routes(self) -> str:
        """The routes in force, with auth shown only as its scheme and variable name."""
        path = self.config.routes_file
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return json.dumps({"routes": [], "note": "no routes file: nothing is allowed"})
        except OSError as exc:
            raise ToolError(f"cannot read the live routes ({exc}); ask the operator") from None
        try:
            routes = parse_routes_file(data, path.name)
        except RoutesFileError as exc:
            raise ToolError(f"the live routes file is invalid ({exc}); ask the operator") from None
        # The file never holds a credential, only auth's scheme and variable name.
        return json.dumps({"routes": routes.to_data().get("routes", [])}, indent=2)


def _message(exc: ApplyError) -> str:
    return f"{exc.message.rstrip('.')}. {exc.hint}" if exc.hint else exc.message


def build_app(config: Config) -> FastMCP[Any]:
    """The FastMCP app with bottle's six tools."""
    supervise = Supervise(config)
    app: FastMCP[Any] = FastMCP(
        name="bottle-supervise",
        instructions=(
            "You run in a bottle: a container whose only way out is through sidecars. When "
            "egress refuses a request, or you need a tool the image lacks, ask the operator "
            "with these tools. A request waits a short time for a decision, then answers "
            "'pending'; check back with proposal-status."
        ),
        host=config.host,
        port=config.port,
        streamable_http_path="/mcp",
        stateless_http=True,
        # No browser can reach the internal network, so DNS-rebinding checks would only
        # reject the service name the agent uses ("supervise:8765").
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        log_level="INFO",
    )

    @app.tool(
        name="egress-block",
        description=(
            "Ask the operator to allow HTTP(S) requests that egress refused. Give the host "
            "(api.example.com or *.example.com), optionally the paths (prefixes starting "
            "with '/' or regexes starting with '^') and methods to allow. The route is for "
            "https to port 443 unless you give scheme 'http' or another port (the operator "
            "sees which). Credentials are never part of the request: the operator decides "
            "whether a route gets one."
        ),
    )
    async def egress_block(
        host: Annotated[str, Field(description="host name, no scheme, port or path")],
        justification: Annotated[str, _JUSTIFICATION],
        paths: Annotated[
            list[str] | None, Field(description="path prefixes ('/v1/') or regexes ('^/a')")
        ] = None,
        methods: Annotated[list[str] | None, Field(description="GET, POST, ...")] = None,
        *,
        scheme: Annotated[
            Literal["https", "http"], Field(description="https (default) or http (plain)")
        ] = "https",
        port: Annotated[
            int | None, Field(description="the upstream port (default 443, or 80 for http)")
        ] = None,
    ) -> str:
        payload: dict[str, Any] = {"host": host, "paths": paths or [], "methods": methods or []}
        if scheme != "https":
            payload["scheme"] = scheme
        if port is not None:
            payload["port"] = port
        return await supervise.file("egress-block", payload, justification)

    @app.tool(
        name="pipelock-block",
        description=(
            "Ask the operator to allow a whole host, named by the URL that was refused. "
            "Prefer egress-block when a few paths or methods are enough."
        ),
    )
    async def pipelock_block(
        url: Annotated[str, Field(description="the refused URL, e.g. https://host/path")],
        justification: Annotated[str, _JUSTIFICATION],
    ) -> str:
        return await supervise.file("pipelock-block", {"url": url}, justification)

    @app.tool(
        name="capability-block",
        description=(
            "Ask the operator to rebuild your image with more tools. Send a Dockerfile whose "
            "first instruction is FROM ${BOTTLE_AGENT_IMAGE}, in one stage, then only ARG, "
            "ENV, RUN, WORKDIR, LABEL, COPY, ADD (no URLs), EXPOSE: no parser directives, "
            "heredocs, RUN or COPY flags (but --chown, --chmod). Its RUN steps reach only "
            "the routes egress allows you. If approved, the operator builds it and replaces "
            "your container with it (your files in /workspace and the transcript stay; "
            "running processes do not)."
        ),
    )
    async def capability_block(
        dockerfile: Annotated[str, Field(description="the Dockerfile text")],
        justification: Annotated[str, _JUSTIFICATION],
    ) -> str:
        return await supervise.file("capability-block", {"dockerfile": dockerfile}, justification)

    @app.tool(
        name="git-push-allow",
        description=(
            "Ask the operator to let one git push through that git-gate's secret scan "
            "refused, because what it found is not a secret. Give the remote, ref and commit "
            "the refusal names, and its findings. If approved, push exactly that commit to "
            "that ref again: it goes through once. Anything else is scanned as before."
        ),
    )
    async def git_push_allow(
        remote: Annotated[str, Field(description="the remote's name in the bottle (origin)")],
        ref: Annotated[str, Field(description="the full ref pushed, e.g. refs/heads/main")],
        commit: Annotated[str, Field(description="the 40-hex commit id pushed to that ref")],
        finding: Annotated[str, Field(description="the findings the refusal listed")],
        justification: Annotated[str, _JUSTIFICATION],
    ) -> str:
        payload = {"remote": remote, "ref": ref, "commit": commit, "finding": finding}
        return await supervise.file("git-push-allow", payload, justification)

    @app.tool(
        name="list-egress-routes",
        description=(
            "Show the egress routes in force (JSON). Needs no approval. A route's auth is "
            "shown by scheme and variable name only; you never see credential values."
        ),
    )
    def list_egress_routes() -> str:
        return supervise.routes()

    @app.tool(
        name="proposal-status",
        description="Say what became of a proposal you filed, by its id.",
    )
    def proposal_status(
        id: Annotated[int, Field(description="the proposal id", ge=1)],
    ) -> str:
        return supervise.status(id)

    return app


def _write_status(config: Config, server: uvicorn.Server) -> None:
    sockets = [sock for srv in getattr(server, "servers", []) for sock in (srv.sockets or ())]
    port = config.port
    if sockets:
        port = int(sockets[0].getsockname()[1])
    status = {
        "service": "supervise",
        "pid": os.getpid(),
        "host": config.host,
        "port": port,
        "path": "/mcp",
        "wait_s": config.wait_s,
        "started_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
    }
    atomic_write(config.status_file, json.dumps(status) + "\n")


class _Server(uvicorn.Server):
    """uvicorn, plus the status file once the socket listens (and gone once it does not)."""

    def __init__(self, config: uvicorn.Config, bottle_config: Config) -> None:
        super().__init__(config)
        self.bottle_config = bottle_config
        self._exit: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def main_loop(self) -> None:
        """Wait for the exit signal. uvicorn's own loop wakes every 0.1 s for the server's
        whole life (to refresh the Date header): 10 wake-ups a second per idle instance."""
        await self.on_tick(0)  # the default headers, once
        self._loop = asyncio.get_running_loop()
        self._exit = asyncio.Event()
        if not self.should_exit:
            await self._exit.wait()

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        if self._loop is not None and self._exit is not None:
            # A signal handler runs between bytecodes while the loop may sit in epoll with
            # no timeout: only the loop's self-pipe wakes it.
            self._loop.call_soon_threadsafe(self._exit.set)

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            _write_status(self.bottle_config, self)
            log.info("supervise ready; status in %s", self.bottle_config.status_file)

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        with contextlib.suppress(OSError):
            self.bottle_config.status_file.unlink()
        await super().shutdown(sockets=sockets)


def prepare(config: Config) -> None:
    """What a start does before it listens (also the seam for an in-process server)."""
    with contextlib.suppress(OSError):
        config.status_file.unlink()  # a file from an earlier run must not look ready
    config.proposals_dir.mkdir(parents=True, exist_ok=True)
    pending = ProposalQueue(config.proposals_dir).rebuild_index()
    log.info("%d proposal(s) pending", pending)


async def serve(config: Config) -> None:
    """Run until SIGTERM / SIGINT."""
    prepare(config)
    app = build_app(config)
    server = _Server(
        uvicorn.Config(
            app.streamable_http_app(),
            host=config.host,
            port=config.port,
            log_level="info",
            access_log=False,
            lifespan="on",
            # Its only client is the agent's MCP client; a fresh one needs a timer (above).
            date_header=False,
        ),
        config,
    )
    await server.serve()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("mcp").setLevel(logging.WARNING)  # one line per request is noise
    config = Config.from_env()
    log.info(
        "supervise on %s:%d, proposals in %s, wait %ss",
        config.host,
        config.port,
        config.proposals_dir,
        config.wait_s,
    )
    anyio.run(serve, config)
    exit_now()


def exit_now() -> None:
    """Exit without Python's teardown, once the server has shut down.

    uvicorn ends by raising the SIGTERM it caught again, which kills an ordinary process;
    but supervise is its container's PID 1, which that signal does not kill, so the
    interpreter tore down FastMCP's modules for 0.4-0.7 s of every ``bottle stop``.
    By now the status file is gone and every proposal was written when it was made.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
