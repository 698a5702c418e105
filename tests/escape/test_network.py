"""Network attacks from inside a real agent: each test fails when a way out works.

The probe (``bottle/probe.py``, the one ``bottle check`` runs) is run once per module inside
the agent and each sidecar; each test below reads the rows of one attack and fails on a
missing row as on a leak. The host listener also records every peer, so a connection that
the probe misreported still fails the test.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from bottle import Instance
from bottle.checks import CheckResult, run_checks
from tests.conftest import run_cli, wait_for
from tests.escape.conftest import Listener, serving

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def probed(
    escaped: Instance,
    host_listener: Listener,
    host_addresses: list[str],
    decoy_network: tuple[str, str],
) -> list[CheckResult]:
    return run_checks(escaped, ports=(host_listener.port,), extra_addresses=host_addresses)


def rows(results: list[CheckResult], where: str, prefix: str) -> list[CheckResult]:
    found = [r for r in results if r.where == where and r.check.startswith(prefix)]
    assert found, f"no probe {prefix!r} ran in {where}: {[r.check for r in results]}"
    return found


def assert_no_way_out(found: list[CheckResult]) -> None:
    leaks = [f"{r.check}: expected {r.expected}, saw {r.seen}" for r in found if not r.ok]
    assert not leaks, "LEAK: " + "; ".join(leaks)


# -- controls: the attacks are real ---------------------------------------------------------


def test_host_listener_answers_on_every_host_address(host_addresses: list[str]) -> None:
    import socket

    with serving() as listener:
        for address in host_addresses:
            with socket.create_connection((address, listener.port), timeout=3):
                pass
        # The server thread records a peer just after the connection is made.
        wait_for(lambda: len(listener.peers) == len(host_addresses), 5, "every peer recorded")


def test_without_the_driver_option_an_internal_network_reaches_the_host(
    escaped: Instance,
) -> None:
    """The attack works on this engine: a plain ``internal`` network reaches host services."""
    name = f"bottle-escape-control-{uuid.uuid4().hex[:8]}"
    image = escaped.metadata.images["sidecar"]
    subprocess.run(["docker", "network", "create", "--internal", name], check=True)
    try:
        gateway = subprocess.run(
            ["docker", "network", "inspect", name, "-f", "{{(index .IPAM.Config 0).Gateway}}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        with serving() as listener:
            code = "import socket,sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 5)"
            done = subprocess.run(
                [
                    *("docker", "run", "--rm", "--network", name, image, "python3", "-c", code),
                    gateway,
                    str(listener.port),
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        assert done.returncode == 0, done.stderr
        assert listener.peers, "the control container did not reach the host listener"
    finally:
        subprocess.run(["docker", "network", "rm", name], capture_output=True, check=False)


# -- direct connections, around the proxy -----------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "internal gateway",
        "egress network gateway",
        "docker0",
        "another bottle's network",
        "host addresses",
        "metadata address",
        "TEST-NET-1 outside",
        "TEST-NET-2 outside",
    ],
)
def test_no_tcp_path_from_the_agent(
    probed: list[CheckResult],
    escaped: Instance,
    host_listener: Listener,
    decoy_network: tuple[str, str],
    target: str,
) -> None:
    project = escaped.metadata.compose_project
    prefix = {
        "internal gateway": f"tcp gateway of {project}_internal ",
        "egress network gateway": f"tcp gateway of {project}_egress ",
        "docker0": "tcp gateway of bridge ",
        "another bottle's network": f"tcp gateway of {decoy_network[0]} ",
        "host addresses": "tcp host address ",
        "metadata address": "tcp metadata 169.254.169.254",
        "TEST-NET-1 outside": "tcp outside (TEST-NET) 192.0.2.1",
        "TEST-NET-2 outside": "tcp outside (TEST-NET) 198.51.100.1",
    }[target]
    found = rows(probed, "agent", prefix)
    if target not in {"metadata address", "TEST-NET-1 outside", "TEST-NET-2 outside"}:
        assert all(r.check.endswith(f":{host_listener.port}") for r in found)
    assert_no_way_out(found)
    assert host_listener.peers == [], f"the host listener was reached from {host_listener.peers}"


@pytest.mark.parametrize(
    "check", ["IPv6 addresses", "IPv6 disabled", "tcp IPv6 all-nodes", "tcp IPv6 link-local"]
)
def test_no_ipv6_path(probed: list[CheckResult], check: str) -> None:
    assert_no_way_out(rows(probed, "agent", check))


@pytest.mark.parametrize(
    "check", ["raw ICMP socket", "ICMP datagram socket (ping)", "packet socket"]
)
@pytest.mark.parametrize("where", ["agent", "egress", "supervise"])
def test_no_raw_or_icmp_sockets(probed: list[CheckResult], where: str, check: str) -> None:
    assert_no_way_out(rows(probed, where, check))


@pytest.mark.parametrize("name", ["example.com", "pypi.org"])
def test_outside_names_do_not_resolve(probed: list[CheckResult], name: str) -> None:
    assert_no_way_out(rows(probed, "agent", f"dns {name}"))


# -- through the proxy: egress must not fetch internal things for the agent -------------------
# Refused first because no route names them (default deny); egress's connect-time guard
# (private, loopback, metadata and bottle-network addresses after DNS) is the second wall,
# for a route whose name resolves inward.


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1/",
        "http://localhost/",
        "http://egress:8080/",
        "http://supervise:8765/",
        "http://169.254.169.254/latest/meta-data/",
        "http://unrouted.invalid/",
    ],
)
def test_egress_refuses_internal_targets(probed: list[CheckResult], target: str) -> None:
    assert_no_way_out(rows(probed, "agent", f"proxy {target}"))


def test_egress_refuses_the_host_listener_at_every_host_address(
    probed: list[CheckResult], host_listener: Listener, host_addresses: list[str]
) -> None:
    for address in host_addresses:
        assert_no_way_out(rows(probed, "agent", f"proxy http://{address}:{host_listener.port}/"))
    assert host_listener.peers == []


# -- privileges ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["agent", "egress", "supervise"])
@pytest.mark.parametrize(
    "check", ["capabilities (CapEff)", "capabilities (CapPrm)", "no_new_privs", "user (euid)"]
)
def test_no_privileges(probed: list[CheckResult], where: str, check: str) -> None:
    assert_no_way_out(rows(probed, where, check))


@pytest.mark.parametrize("where", ["egress", "supervise"])
def test_sidecar_root_filesystem_is_read_only(probed: list[CheckResult], where: str) -> None:
    assert_no_way_out(rows(probed, where, "root filesystem"))


def test_bottle_check_cli_reports_no_leak(escaped: Instance, escape_home) -> None:
    done = run_cli(
        "check",
        escaped.slug,
        "--json",
        cwd=escaped.state.path,
        env={"BOTTLE_HOME": str(escape_home)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(done.stdout)
    assert len(results) > 20 and all(r["ok"] for r in results)
    table = run_cli(
        "check", escaped.slug, cwd=escaped.state.path, env={"BOTTLE_HOME": str(escape_home)}
    )
    assert table.returncode == 0 and "expected" in table.stdout and "LEAK" not in table.stdout
