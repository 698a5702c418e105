"""The subnet pool: every instance's networks get /28s no one else holds (bottle.subnets)."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import replace
from pathlib import Path

import pytest

from bottle import subnets
from bottle.compose import render
from bottle.errors import Refused, SettingsError
from bottle.settings import Settings
from tests.unit.test_compose import plan_for

POOL = "10.213.0.0/16"


def _root(tmp_path: Path, *slugs: str) -> Path:
    root = tmp_path / "state"
    for slug in slugs:
        (root / slug).mkdir(parents=True)
    return root


def _nets(cidrs: object) -> list[ipaddress.IPv4Network]:
    assert isinstance(cidrs, dict)
    return [ipaddress.IPv4Network(c) for c in cidrs.values()]


def _no_overlap(nets: list[ipaddress.IPv4Network]) -> bool:
    return not any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])


@pytest.mark.parametrize(
    "text",
    ["nonsense", "fd00::/64", "8.8.0.0/16", "10.0.0.0/28", "127.0.0.0/8", "10.1.2.3/16"],
)
def test_an_unusable_pool_is_refused_with_a_hint(text: str) -> None:
    with pytest.raises(SettingsError) as caught:
        subnets.parse_pool(text)
    assert "BOTTLE_SUBNET_POOL" in caught.value.message and caught.value.hint


def test_the_pool_comes_from_the_environment() -> None:
    assert Settings.from_env({"BOTTLE_HOME": "/h"}).subnet_pool == POOL
    env = {"BOTTLE_HOME": "/h", "BOTTLE_SUBNET_POOL": "10.77.0.0/20"}
    assert Settings.from_env(env).subnet_pool == "10.77.0.0/20"


def test_a_lease_is_two_28s_of_the_pool_clear_of_docker_routes_and_leases(
    tmp_path: Path,
) -> None:
    root = _root(tmp_path, "a", "b")
    pool = ipaddress.IPv4Network("10.213.0.0/24")  # 16 slots: most of them taken below
    docker = ["172.17.0.0/16", "10.213.0.0/26", "10.213.0.128/28"]
    routes = ["10.213.0.160/27", "0.0.0.0/0"]  # the default route must not block everything
    first = subnets.lease(root, "a", pool=str(pool), in_use=lambda: docker, routes=lambda: routes)
    second = subnets.lease(root, "b", pool=str(pool), in_use=lambda: docker, routes=lambda: routes)
    taken = [ipaddress.IPv4Network(c) for c in docker + routes[:1]]
    mine = _nets(first) + _nets(second)
    assert list(first) == ["internal", "egress"]
    assert all(n.prefixlen == 28 and n.subnet_of(pool) for n in mine)
    assert _no_overlap(mine)
    assert not any(n.overlaps(t) for n in mine for t in taken)


def test_the_same_slug_keeps_its_lease_until_released(tmp_path: Path) -> None:
    root = _root(tmp_path, "a")
    first = subnets.lease(root, "a", pool=POOL, in_use=list, routes=list)
    # Its networks are up now: docker lists them, yet the holder gets them again.
    again = subnets.lease(root, "a", pool=POOL, in_use=lambda: list(first.values()), routes=list)
    assert again == first
    subnets.release(root, "a")
    assert json.loads((root.parent / subnets.LEASES).read_text()) == {}
    subnets.release(root, "a")  # twice is fine


def test_the_pool_runs_out_with_a_refusal_naming_the_way_out(tmp_path: Path) -> None:
    root = _root(tmp_path, "a", "b")
    small = "10.213.0.0/27"  # room for exactly one instance
    subnets.lease(root, "a", pool=small, in_use=list, routes=list)
    with pytest.raises(Refused) as caught:
        subnets.lease(root, "b", pool=small, in_use=list, routes=list)
    assert "no free /28" in caught.value.message and "BOTTLE_SUBNET_POOL" in caught.value.hint
    subnets.release(root, "a")
    assert subnets.lease(root, "b", pool=small, in_use=list, routes=list)


def test_a_lease_whose_state_dir_is_gone_is_free_again(tmp_path: Path) -> None:
    root = _root(tmp_path, "a", "b")
    small = "10.213.0.0/27"
    subnets.lease(root, "a", pool=small, in_use=list, routes=list)
    (root / "a").rmdir()  # cleanup removed it (or a start failed before its metadata)
    assert subnets.lease(root, "b", pool=small, in_use=list, routes=list)


def test_a_lease_outside_a_changed_pool_is_replaced(tmp_path: Path) -> None:
    root = _root(tmp_path, "a")
    subnets.lease(root, "a", pool=POOL, in_use=list, routes=list)
    moved = subnets.lease(root, "a", pool="10.99.0.0/24", in_use=list, routes=list)
    pool = ipaddress.IPv4Network("10.99.0.0/24")
    assert all(n.subnet_of(pool) for n in _nets(moved))


@pytest.mark.parametrize("damage", [b"{not json", b"[1, 2]", b'{"a": 3, "b": {"internal": 4}}'])
def test_a_damaged_lease_file_counts_as_no_leases(tmp_path: Path, damage: bytes) -> None:
    root = _root(tmp_path, "c")
    (root.parent / subnets.LEASES).write_bytes(damage)
    got = subnets.lease(root, "c", pool="10.213.0.0/27", in_use=list, routes=list)
    assert json.loads((root.parent / subnets.LEASES).read_text()) == {"c": got}


def test_host_routes_are_read_from_proc_but_the_default_route(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    (tmp_path / "net" / "route").write_text(
        "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
        "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"  # default
        "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"  # 192.0.2.0/24
        "tun0\t0000000A\t0A0A0A0A\t0003\t0\t0\t0\t000000FF\t0\t0\t0\n"  # 10.0.0.0/8 via VPN
        "bad\n"
    )
    assert subnets.host_routes(tmp_path) == ["192.0.2.0/24", "10.0.0.0/8"]


def test_render_gives_each_network_its_leased_subnet(home: Path, repo: Path) -> None:
    plan = plan_for(home, repo)
    assert all("ipam" not in n for n in render(plan)["networks"].values())
    leased = {"internal": "10.213.4.0/28", "egress": "10.213.4.16/28", "bogus": "10.1.0.0/28"}
    spec = render(replace(plan, subnets=leased))
    networks = spec["networks"]
    assert set(networks) == {"internal", "egress"}  # a stray name adds no network
    assert networks["internal"]["ipam"] == {"config": [{"subnet": "10.213.4.0/28"}]}
    assert networks["egress"]["ipam"] == {"config": [{"subnet": "10.213.4.16/28"}]}
    assert networks["internal"]["internal"] is True
    assert networks["internal"]["driver_opts"] == {"com.docker.network.bridge.inhibit_ipv4": "true"}


def _fake_docker(tmp_path: Path, inspect_err: str, code: int) -> Path:
    script = tmp_path / "docker"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$2" = ls ]; then echo aaa; echo bbb; exit 0; fi\n'
        "echo 10.213.0.0/28\n"
        f"echo '{inspect_err}' >&2\n"
        f"exit {code}\n"
    )
    script.chmod(0o755)
    return tmp_path


@pytest.mark.parametrize(
    "gone",
    [
        "Error response from daemon: network bbb not found",
        "Error: No such network: bbb",
    ],
)
def test_a_network_removed_while_listing_is_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gone: str
) -> None:
    from bottle.engine.networks import subnets_in_use

    monkeypatch.setenv("PATH", str(_fake_docker(tmp_path, gone, 1)))
    assert subnets_in_use() == ["10.213.0.0/28"]


def test_another_inspect_failure_is_an_engine_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle.engine.networks import subnets_in_use
    from bottle.errors import EngineError

    monkeypatch.setenv("PATH", str(_fake_docker(tmp_path, "permission denied", 1)))
    with pytest.raises(EngineError, match="inspecting networks failed: permission denied"):
        subnets_in_use()
