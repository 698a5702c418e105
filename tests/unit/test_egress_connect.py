"""The connect-time guard: which addresses egress connects to, and the hooks that pin them.

The classifier is tested over a table of addresses; the hooks run inside mitmproxy's test
harness with a fake resolver (no sockets, no DNS).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import connection, http
from mitmproxy.hooks import RunningHook
from mitmproxy.proxy import server_hooks
from mitmproxy.proxy.layers.http import HttpRequestHook
from mitmproxy.test import taddons, tflow

from bottle.policy import Route, Routes, parse_routes_file
from bottle.runtime.egress.addon import Egress
from bottle.runtime.egress.addresses import IPAddress, classify, own_networks, refusal
from bottle.runtime.egress.connect import (
    OWN_NETWORKS_OPTION,
    RESOLVED_FOR,
    RESOLVED_MAX,
    ConnectGuard,
    pick,
)

OWN = (ipaddress.ip_network("203.0.113.0/24"), ipaddress.ip_network("2001:db8:b0::/48"))


# -- the classifier --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "kind", "always"),
    [
        ("127.0.0.1", "loopback", False),
        ("127.8.9.10", "loopback", False),
        ("::1", "loopback", False),
        ("10.1.2.3", "private", False),
        ("172.16.0.1", "private", False),
        ("172.31.255.254", "private", False),
        ("192.168.1.1", "private", False),
        ("100.64.0.1", "CGNAT", False),
        ("100.127.255.254", "CGNAT", False),
        ("169.254.1.1", "link-local", False),
        ("fe80::1", "link-local", False),
        ("fc00::1", "unique-local", False),
        ("fd12:3456::1", "unique-local", False),
        ("169.254.169.254", "metadata", True),
        ("fd00:ec2::254", "metadata", True),
        ("0.0.0.0", "unspecified", True),
        ("::", "unspecified", True),
        ("224.0.0.251", "multicast", True),
        ("ff02::1", "multicast", True),
        ("240.0.0.1", "reserved", True),
        ("255.255.255.255", "reserved", True),
        ("::ffff:127.0.0.1", "loopback", False),
        ("::ffff:10.0.0.1", "private", False),
        ("::ffff:169.254.169.254", "metadata", True),
        ("64:ff9b::a00:1", "private", False),  # NAT64 form of 10.0.0.1
        ("2002:a9fe:a9fe::", "metadata", True),  # 6to4 form of 169.254.169.254
        ("203.0.113.7", "bottle's own networks", False),
        ("2001:db8:b0::5", "bottle's own networks", False),
    ],
)
def test_non_public_addresses_are_classified(address: str, kind: str, always: bool) -> None:
    verdict = classify(ipaddress.ip_address(address), OWN)
    assert verdict is not None
    assert kind in verdict.kind
    assert verdict.always is always


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "151.101.0.223",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        # Documentation networks: never anyone's internal service; sandboxes (this CI's)
        # resolve outside names to them, so they count as the outside.
        "192.0.2.1",
        "198.51.100.7",
        "2001:db8::1",
    ],
)
def test_public_addresses_pass(address: str) -> None:
    assert classify(ipaddress.ip_address(address), OWN) is None
    assert refusal(ipaddress.ip_address(address), private=False, own=OWN) is None


def test_private_routes_open_private_addresses_but_never_metadata() -> None:
    for address in ("127.0.0.1", "10.0.0.1", "fc00::1", "203.0.113.9", "100.64.0.1"):
        ip = ipaddress.ip_address(address)
        assert refusal(ip, private=True, own=OWN) is None
        why = refusal(ip, private=False, own=OWN)
        assert why is not None and "private: true" in why
    for address in ("169.254.169.254", "fd00:ec2::254", "0.0.0.0", "224.0.0.1"):
        why = refusal(ipaddress.ip_address(address), private=True, own=OWN)
        assert why is not None and "never connects to" in why


def test_pick_takes_the_first_acceptable_address() -> None:
    found = [ipaddress.ip_address(a) for a in ("10.0.0.1", "8.8.8.8")]
    chosen = pick(found, private=False, own=())
    assert chosen.address == ipaddress.ip_address("8.8.8.8")
    refused = pick(found[:1], private=False, own=())
    assert refused.address is None and refused.refused == found[0]
    assert "private address" in refused.why
    assert pick([], private=False, own=()).why == "the name resolves to no address"


def test_own_networks_are_read_from_the_route_tables(tmp_path: Path) -> None:
    net = tmp_path / "net"
    net.mkdir()
    (net / "route").write_text(
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010013AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"  # default: skipped
        "eth0\t000013AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n"  # 172.19.0.0/16
        "eth1\t007100CB\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"  # 203.0.113.0/24
    )
    (net / "ipv6_route").write_text(
        "20010db800b000000000000000000000 30 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
        "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 "
        "00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n"
    )
    assert own_networks(tmp_path) == (
        ipaddress.ip_network("172.19.0.0/16"),
        ipaddress.ip_network("203.0.113.0/24"),
        ipaddress.ip_network("2001:db8:b0::/48"),
    )
    assert own_networks(tmp_path / "missing") == ()


def test_routes_say_which_hosts_are_private() -> None:
    routes = Routes(
        routes=(
            Route(host="upstream.test", paths=("/a/",), private=True),
            Route(host="upstream.test", paths=("/b/",)),
            Route(host="pypi.org"),
        )
    )
    assert routes.private_for("upstream.test") and routes.private_for("UPSTREAM.test.")
    assert not routes.private_for("pypi.org")
    assert not routes.private_for("other.test")
    parsed = parse_routes_file(b"routes:\n  - {host: a.test, private: true}\n", "r.yaml")
    assert parsed.routes[0].private is True
    assert "private" not in Routes(routes=(Route(host="a.test"),)).to_data()["routes"][0]


# -- the hooks -------------------------------------------------------------------------------

ROUTES = """\
routes:
  - host: pypi.org
  - host: inward.example.com
  - host: upstream.test
    private: true
  - host: "*.passthrough.example"
    passthrough: true
"""


@dataclass
class FakeDNS:
    answers: dict[str, list[str]]
    asked: list[str] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> Sequence[IPAddress]:
        self.asked.append(host)
        if host not in self.answers:
            raise OSError("no such name")
        return [ipaddress.ip_address(a) for a in self.answers[host]]


@dataclass
class Env:
    tctx: taddons.context
    egress: Egress
    guard: ConnectGuard
    dns: FakeDNS
    log: Path
    # One loop for the test's async hooks: a loop of its own per hook (asyncio.run) cost
    # more than the hook, in the tests that send hundreds.
    runner: asyncio.Runner

    def request(self, flow: http.HTTPFlow) -> None:
        for addon in (self.egress, self.guard):  # in the order of addon.addons
            self.runner.run(self.tctx.master.addons.invoke_addon(addon, HttpRequestHook(flow)))

    def connect(self, server: connection.Server, client: connection.Client) -> None:
        data = server_hooks.ServerConnectionHookData(server=server, client=client)
        hook = server_hooks.ServerConnectHook(data)
        self.runner.run(self.tctx.master.addons.invoke_addon(self.guard, hook))

    def connected(self, server: connection.Server, client: connection.Client) -> None:
        data = server_hooks.ServerConnectionHookData(server=server, client=client)
        self.tctx.master.addons.invoke_addon_sync(
            self.guard, server_hooks.ServerConnectedHook(data)
        )

    def log_lines(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    routes = tmp_path / "routes.yaml"
    routes.write_text(ROUTES)
    log = tmp_path / "egress.jsonl"
    monkeypatch.setenv("BOTTLE_EGRESS_ROUTES", str(routes))
    monkeypatch.setenv("BOTTLE_EGRESS_STATUS", str(tmp_path / "status.json"))
    monkeypatch.setenv("BOTTLE_EGRESS_LOG", str(log))
    dns = FakeDNS(
        {
            "pypi.org": ["151.101.0.223"],
            "inward.example.com": ["127.0.0.1"],
            "upstream.test": ["172.19.0.5"],
            "files.passthrough.example": ["169.254.169.254"],
            "mixed.passthrough.example": ["10.0.0.1", "151.101.0.1"],
        }
    )
    egress = Egress()
    guard = ConnectGuard(egress.tables, egress.log, resolve=dns, own=OWN)
    # Without mitmproxy's core addon, as test_egress_addon's context (the reason is there).
    with taddons.context(egress, guard, loadcore=False) as tctx, asyncio.Runner() as runner:
        tctx.master.addons.invoke_addon_sync(egress, RunningHook())
        yield Env(tctx, egress, guard, dns, log, runner)


def make_flow(url: str) -> http.HTTPFlow:
    req = http.Request.make("GET", url)
    req.headers["Host"] = req.host
    return tflow.tflow(req=req)


def server_for(flow: http.HTTPFlow) -> connection.Server:
    """The server connection mitmproxy would open for ``flow`` (SNI from the request)."""
    server = connection.Server(address=(flow.request.host, flow.request.port))
    server.sni = flow.request.host
    return server


def test_a_public_name_is_pinned_to_the_address_that_was_checked(env: Env) -> None:
    flow = make_flow("https://pypi.org/simple/")
    env.request(flow)
    assert flow.response is None
    env.dns.answers["pypi.org"] = ["127.0.0.1"]  # rebinding after the check changes nothing
    server = server_for(flow)
    env.connect(server, flow.client_conn)
    assert server.error is None
    assert server.address == ("151.101.0.223", 443)
    assert server.sni == "pypi.org"  # TLS still verifies the name
    assert env.dns.asked == ["pypi.org"]
    server.state = connection.ConnectionState.OPEN  # as mitmproxy has it at server_connected
    env.connected(server, flow.client_conn)
    # So mitmproxy reuses it for pypi.org: else every request on a kept-alive connection
    # opens one more, and the sixth waits forever (mitmproxy allows 5 per address).
    assert server.address == ("pypi.org", 443)


def test_a_public_name_resolving_inward_is_refused_with_a_readable_403(env: Env) -> None:
    flow = make_flow("https://inward.example.com/x?q=1")
    env.request(flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert flow.response.headers["content-type"] == "application/json"
    data = json.loads(flow.response.get_text() or "")
    assert data["error"] == "egress_refused"
    assert data["host"] == "inward.example.com"
    assert "127.0.0.1" in data["reason"] and "loopback" in data["reason"]
    assert "private: true" in data["how_to_ask"]
    (line,) = env.log_lines()
    assert line["decision"] == "refuse" and "127.0.0.1" in line["reason"]
    assert line["status"] == 403


def test_a_private_route_reaches_its_private_address(env: Env) -> None:
    flow = make_flow("http://upstream.test/allowed/")
    env.request(flow)
    assert flow.response is None
    server = server_for(flow)
    env.connect(server, flow.client_conn)
    assert server.error is None and server.address == ("172.19.0.5", 80)


def test_a_refused_request_is_not_resolved(env: Env) -> None:
    flow = make_flow("https://unlisted.example.org/")
    env.request(flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert env.dns.asked == []


def test_an_unresolvable_name_is_refused(env: Env) -> None:
    env.dns.answers.pop("pypi.org")
    flow = make_flow("https://pypi.org/simple/")
    env.request(flow)
    assert flow.response is not None and flow.response.status_code == 403
    assert "does not resolve" in json.loads(flow.response.get_text() or "")["reason"]


def test_an_unpinned_connection_is_checked_at_connect_time(env: Env) -> None:
    """A passthrough tunnel has no request to check: the connection itself is refused."""
    client = tflow.tclient_conn()
    server = connection.Server(address=("files.passthrough.example", 443))
    env.connect(server, client)
    assert server.error is not None
    assert "169.254.169.254" in server.error and "metadata" in server.error
    (line,) = env.log_lines()
    assert line["method"] == "CONNECT" and line["decision"] == "refuse"
    assert line["host"] == "files.passthrough.example"
    mixed = connection.Server(address=("mixed.passthrough.example", 443))
    env.connect(mixed, client)
    assert mixed.error is None and mixed.address == ("151.101.0.1", 443)


def test_an_ip_literal_is_judged_like_a_name(env: Env) -> None:
    env.dns.answers["10.9.8.7"] = ["10.9.8.7"]
    server = connection.Server(address=("10.9.8.7", 80))
    env.connect(server, tflow.tclient_conn())
    assert server.error is not None and "private address" in server.error


def test_pins_are_per_client_and_dropped_on_disconnect(env: Env) -> None:
    flow = make_flow("https://pypi.org/simple/")
    env.request(flow)
    assert env.guard._pins
    env.tctx.master.addons.invoke_addon_sync(
        env.guard, server_hooks.ClientDisconnectedHook(flow.client_conn)
    )
    assert not env.guard._pins


def test_own_networks_option_is_parsed_and_checked(tmp_path: Path) -> None:
    egress = Egress(routes_path=tmp_path / "r", status_path=tmp_path / "s")
    guard = ConnectGuard(egress.tables, egress.log)
    with taddons.context(guard) as tctx:
        tctx.configure(guard, **{OWN_NETWORKS_OPTION: "203.0.113.0/24, 2001:db8::/32"})
        assert guard.own == (
            ipaddress.ip_network("203.0.113.0/24"),
            ipaddress.ip_network("2001:db8::/32"),
        )
        with pytest.raises(Exception, match=OWN_NETWORKS_OPTION):
            tctx.configure(guard, **{OWN_NETWORKS_OPTION: "not-a-network"})


def test_the_machine_egress_runs_on_is_never_reached_without_a_private_route() -> None:
    from bottle.runtime.egress.addresses import HOST_ADDRESSES_ENV, host_addresses

    # The host's LAN address may sit in any range, a documentation one included (this CI's).
    own = host_addresses({HOST_ADDRESSES_ENV: "192.0.2.2, 172.17.0.1,not-an-address"})
    assert [str(n) for n in own] == ["192.0.2.2/32", "172.17.0.1/32"]
    why = refusal(ipaddress.ip_address("192.0.2.2"), private=False, own=own)
    assert why is not None and "the machine it runs on" in why
    assert refusal(ipaddress.ip_address("192.0.2.3"), private=False, own=own) is None


# -- the answers kept for RESOLVED_FOR -------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_kept_alive_connection_is_not_resolved_for_every_request(env: Env) -> None:
    env.guard.clock = clock = Clock()
    for _ in range(3):
        flow = make_flow("https://pypi.org/simple/")
        env.request(flow)
        assert flow.response is None
        clock.now += 1
    assert env.dns.asked == ["pypi.org"]
    server = server_for(flow)
    env.connect(server, flow.client_conn)
    assert server.address == ("151.101.0.223", 443)


def test_a_kept_answer_runs_out_and_an_inward_rebind_is_then_refused(env: Env) -> None:
    env.guard.clock = clock = Clock()
    env.request(make_flow("https://pypi.org/simple/"))
    env.dns.answers["pypi.org"] = ["127.0.0.1"]
    clock.now += RESOLVED_FOR
    flow = make_flow("https://pypi.org/simple/")
    env.request(flow)
    assert env.dns.asked == ["pypi.org", "pypi.org"]
    assert flow.response is not None and flow.response.status_code == 403
    assert "127.0.0.1" in json.loads(flow.response.get_text() or "")["reason"]


def test_a_clock_that_went_back_does_not_keep_an_answer(env: Env) -> None:
    env.guard.clock = clock = Clock()
    env.request(make_flow("https://pypi.org/simple/"))
    clock.now -= 1
    env.request(make_flow("https://pypi.org/simple/"))
    assert env.dns.asked == ["pypi.org", "pypi.org"]


def test_a_kept_answer_is_judged_again_against_the_routes_in_force(
    env: Env, tmp_path: Path
) -> None:
    """A reload that takes ``private`` away refuses the next request, answer kept or not."""
    env.guard.clock = Clock()
    flow = make_flow("http://upstream.test/allowed/")
    env.request(flow)
    assert flow.response is None
    (tmp_path / "routes.yaml").write_text(ROUTES.replace("    private: true\n", ""))
    assert env.egress.reload()
    flow = make_flow("http://upstream.test/allowed/")
    env.request(flow)
    assert env.dns.asked == ["upstream.test"]
    assert flow.response is not None and flow.response.status_code == 403
    assert "private: true" in json.loads(flow.response.get_text() or "")["how_to_ask"]


def test_a_failed_lookup_is_not_kept(env: Env) -> None:
    env.guard.clock = Clock()
    answer = env.dns.answers.pop("pypi.org")
    flow = make_flow("https://pypi.org/simple/")
    env.request(flow)
    assert flow.response is not None and flow.response.status_code == 403
    env.dns.answers["pypi.org"] = answer
    flow = make_flow("https://pypi.org/simple/")
    env.request(flow)
    assert flow.response is None
    assert env.dns.asked == ["pypi.org", "pypi.org"]


def test_the_kept_answers_are_bounded(env: Env, tmp_path: Path) -> None:
    """A wildcard route lets the agent name hosts without end: the oldest answers go."""
    (tmp_path / "routes.yaml").write_text(ROUTES + '  - host: "*.many.example"\n')
    assert env.egress.reload()
    env.guard.clock = Clock()
    names = [f"h{i}.many.example" for i in range(RESOLVED_MAX + 10)]
    env.dns.answers.update({name: ["151.101.0.1"] for name in names})
    for name in names:
        env.request(make_flow(f"https://{name}/"))
    assert len(env.guard._resolved) == RESOLVED_MAX
    env.dns.asked.clear()
    env.request(make_flow(f"https://{names[0]}/"))  # gone: asked again
    env.request(make_flow(f"https://{names[-1]}/"))  # kept
    assert env.dns.asked == [names[0]]
