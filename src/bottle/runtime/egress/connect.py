"""The connect-time guard: egress connects only to public addresses, pinned when checked.

A route names a host, but DNS decides where the host is: a public-looking name may resolve to
127.0.0.1, 10.x, the metadata address, the docker host or a bottle network. So the name is
resolved here, every address is judged (:mod:`.addresses`), and the connection is pinned to
the address that passed, so a second lookup cannot rebind the name inward. TLS keeps the
hostname (SNI and certificate checks), because mitmproxy takes the server's SNI from the
request before this guard changes the address.

- ``request`` (after the other addons allowed the request): resolve and judge; a
  refusal is the usual 403 JSON body the agent can read. The address that passed is kept
  for this client's connection to that host and port.
- ``server_connect``: connect to that pinned address; a connection no request pinned (a
  passthrough tunnel) is resolved and judged here, and refused as a failed connection.
- ``server_connected``: the connection gets its hostname back, so mitmproxy reuses it for the
  next request to that host (it was judged when it was opened).

A route with ``private: true`` lets its host resolve to private, loopback, link-local and
bottle-network addresses; the metadata, unspecified, multicast and reserved ones stay refused.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from mitmproxy import connection, exceptions, http
from mitmproxy.proxy import server_hooks

from bottle.runtime.egress import addresses
from bottle.runtime.egress.addresses import IPAddress, IPNetwork
from bottle.runtime.egress.log import DecisionLog, first_time
from bottle.runtime.egress.records import LogRecord
from bottle.runtime.egress.reload import Reload

logger = logging.getLogger("bottle.egress")

#: host, port -> the addresses the name resolves to, in the resolver's order.
Resolver = Callable[[str, int], Awaitable[Sequence[IPAddress]]]

OWN_NETWORKS_OPTION = "bottle_own_networks"
RESOLVE_TIMEOUT = 10.0
#: How long a name's answer is used again. Each request of a kept-alive connection was
#: resolved anew: a thread hop and a round trip to Docker's resolver, most of the addon's
#: cost per request. The answer is judged again every time (the route table may have
#: changed), and a connection still goes only to an address that was judged.
RESOLVED_FOR = 5.0
#: Names kept at most (a wildcard route lets the agent name as many as it likes).
RESOLVED_MAX = 256
HOW_TO_ASK_PRIVATE = (
    "a public name must lead to a public address. If this host really is internal, ask the "
    "operator for a route to it with private: true"
)


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """getaddrinfo on the loop's executor (a thread), never blocking the event loop."""
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(
        loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT
    )
    out: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        # A scoped IPv6 address ("fe80::1%eth0") carries its zone in sockaddr[3].
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if address not in out:
            out.append(address)
    return out


class Pick:
    """The outcome of judging a name: the address to connect to, or why none may be used."""

    def __init__(self, address: IPAddress | None, refused: IPAddress | None, why: str) -> None:
        self.address = address
        self.refused = refused
        self.why = why


def pick(found: Sequence[IPAddress], private: bool, own: Sequence[IPNetwork]) -> Pick:
    """The first acceptable address of ``found``; else the first one and why it is refused."""
    for address in found:
        if addresses.refusal(address, private, own) is None:
            return Pick(address, None, "")
    if not found:
        return Pick(None, None, "the name resolves to no address")
    return Pick(None, found[0], addresses.refusal(found[0], private, own) or "")


class ConnectGuard:
    """The mitmproxy addon; see the module docstring."""

    def __init__(
        self,
        tables: Reload,
        log: DecisionLog,
        resolve: Resolver = system_resolver,
        own: Sequence[IPNetwork] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.tables = tables
        self.log = log
        self.resolve = resolve
        self.clock = clock
        # (host, port) -> (when it was resolved, the addresses): see RESOLVED_FOR.
        self._resolved: dict[tuple[str, int], tuple[float, Sequence[IPAddress]]] = {}
        self.own: tuple[IPNetwork, ...] = tuple(own) if own is not None else ()
        self._fixed_own = own is not None
        # (client id, host, port) -> the address a request was judged against.
        self._pins: dict[tuple[str, str, int], str] = {}
        # server id -> the (host, port) to give the connection back once it is open.
        self._names: dict[str, tuple[str, int]] = {}

    def load(self, loader: Any) -> None:
        loader.add_option(
            OWN_NETWORKS_OPTION,
            str,
            "",
            "Comma-separated networks of this bottle, never reached without a private route "
            "(empty: the on-link routes of this container).",
        )

    def configure(self, updated: set[str]) -> None:
        if OWN_NETWORKS_OPTION not in updated or self._fixed_own:
            return
        from mitmproxy import ctx

        value: str = getattr(ctx.options, OWN_NETWORKS_OPTION)
        if not value.strip():
            self.own = addresses.own_networks() + addresses.host_addresses()
            return
        try:
            self.own = tuple(
                ipaddress.ip_network(part.strip(), strict=False)
                for part in value.split(",")
                if part.strip()
            )
        except ValueError as exc:
            message = f"{OWN_NETWORKS_OPTION}: {exc}"
            raise exceptions.OptionsError(message) from exc  # type: ignore[no-untyped-call]

    async def _judge(self, host: str, port: int) -> Pick:
        found = self._recent(host, port)
        if found is None:
            try:
                found = await self.resolve(host, port)
            except (OSError, TimeoutError, ValueError, UnicodeError) as exc:
                return Pick(None, None, f"the name does not resolve ({type(exc).__name__})")
            self._remember(host, port, found)
        private = self.tables.current.routes.private_for(host)
        return pick(found, private, self.own)

    def _recent(self, host: str, port: int) -> Sequence[IPAddress] | None:
        kept = self._resolved.get((host, port))
        if kept is None:
            return None
        when, found = kept
        if not 0 <= self.clock() - when < RESOLVED_FOR:
            del self._resolved[(host, port)]
            return None
        return found

    def _remember(self, host: str, port: int, found: Sequence[IPAddress]) -> None:
        if not found:
            return  # no address: asked again next time
        if len(self._resolved) >= RESOLVED_MAX:
            del self._resolved[next(iter(self._resolved))]  # the oldest
        self._resolved[(host, port)] = (self.clock(), tuple(found))

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        """Judged on the headers: a streamed body goes out before the ``request`` hook."""
        await self.request(flow)

    async def request(self, flow: http.HTTPFlow) -> None:
        if not first_time(flow, "connect"):
            return
        try:
            await self._request(flow)
        except Exception as exc:
            self.log.crash(flow, exc, "connect guard")

    async def _request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or flow.error is not None:
            return  # refused already (or answered by another addon): nothing to connect to
        req = flow.request
        host = req.host
        outcome = await self._judge(host.lower().rstrip("."), req.port)
        if outcome.address is None:
            shown = self.log.safe_host(host)
            where = f" to {outcome.refused}" if outcome.refused is not None else ""
            reason = f"egress will not connect to {shown}: it resolves{where}; {outcome.why}"
            if outcome.refused is None:
                reason = f"egress will not connect to {shown}: {outcome.why}"
            self.log.refuse(flow, 403, "egress_refused", reason, HOW_TO_ASK_PRIVATE)
            return
        self._pins[(flow.client_conn.id, host, req.port)] = str(outcome.address)

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        try:
            await self._server_connect(data)
        except Exception as exc:  # refusing is the safe default
            logger.error("egress: connect guard failed (%s); refused", type(exc).__name__)
            data.server.error = "egress connect guard failed"

    async def _server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        server = data.server
        if server.address is None or server.via is not None:
            return
        host, port = str(server.address[0]), int(server.address[1])
        pinned = self._pins.pop((data.client.id, host, port), None)
        if pinned is None:
            outcome = await self._judge(host.lower().rstrip("."), port)
            if outcome.address is None:
                shown = self.log.safe_host(host)
                where = f" resolves to {outcome.refused};" if outcome.refused is not None else ":"
                reason = f"egress will not connect to {shown}:{port}: it{where} {outcome.why}"
                server.error = reason
                self.log.write(
                    LogRecord(
                        method="CONNECT",
                        host=shown,
                        decision="refuse",
                        reason=reason,
                        request_bytes=0,
                    )
                )
                return
            pinned = str(outcome.address)
        server.address = (pinned, port)
        self._names[server.id] = (host, port)

    def server_connected(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._give_name_back(data.server)

    def server_connect_error(self, data: server_hooks.ServerConnectionHookData) -> None:
        self._give_name_back(data.server)

    def client_disconnected(self, client: connection.Client) -> None:
        for key in [k for k in self._pins if k[0] == client.id]:
            del self._pins[key]

    def _give_name_back(self, server: connection.Server) -> None:
        """The connection is labelled with the name it was opened for again, so mitmproxy
        reuses it for the next request to that name (its socket stays on the pinned address).
        mitmproxy refuses a new ``address`` on an open connection (that would redirect it);
        this relabels one, so it writes the field past that check."""
        name = self._names.pop(server.id, None)
        if name is not None:
            vars(server)["address"] = name
