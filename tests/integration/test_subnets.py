"""Real Docker: each instance's networks on /28s of bottle's own pool (bottle.subnets).

One small pool (room for one instance) shows the whole cycle: the networks get the leased
subnets, a request passes through egress, a second start is refused with nothing left
behind, and the stop gives the subnets back so the second one starts.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from bottle import Bottle, subnets
from bottle.errors import Refused
from bottle.settings import Settings
from tests.integration.conftest import WORKSPACE_OWNER, curl, labelled, upstream

pytestmark = pytest.mark.docker


def _pool() -> str:
    """A /27 (two /28s: one instance) somewhere in 10.214/16, apart from parallel runs."""
    return f"10.214.{secrets.randbelow(256)}.{32 * secrets.randbelow(8)}/27"


def _subnets(network: str) -> list[str]:
    out = subprocess.run(
        ["docker", "network", "inspect", network], capture_output=True, text=True, check=True
    ).stdout
    return [c["Subnet"] for c in json.loads(out)[0]["IPAM"]["Config"]]


def test_instances_take_their_subnets_from_the_pool_and_give_them_back(
    bottle_home: Path, workdir: Path, tmp_path: Path
) -> None:
    pool = _pool()
    settings = replace(Settings.from_env({"BOTTLE_HOME": str(bottle_home)}), subnet_pool=pool)
    other = tmp_path / "other"
    other.mkdir()
    if os.getuid() == 0:
        os.chown(other, *WORKSPACE_OWNER)
    first = Bottle("it", cwd=workdir, settings=settings).start()
    try:
        project = first.metadata.compose_project
        leases = json.loads((bottle_home / subnets.LEASES).read_text())
        mine = leases[first.slug]
        assert set(mine) == {"internal", "egress"}
        for name, cidr in mine.items():
            assert ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network(pool))
            assert _subnets(f"{project}_{name}") == [cidr]
        # The internal network still has no address on the host: no route leads into it.
        routes = [ipaddress.ip_network(r) for r in subnets.host_routes()]
        assert not any(r.overlaps(ipaddress.ip_network(mine["internal"])) for r in routes)
        assert ipaddress.ip_network(mine["egress"]) in routes
        with upstream(project, image=first.metadata.images["sidecar"]):
            assert curl(first, "http://upstream.test/allowed/x") == "200"

        second = Bottle("it", cwd=other, settings=settings)
        with pytest.raises(Refused) as caught:
            second.start()
        assert "no free /28" in caught.value.message
        assert "BOTTLE_SUBNET_POOL" in caught.value.hint
        slug = second.plan().slug
        assert not (bottle_home / "state" / slug).exists()
        assert labelled("network", slug) == [] and labelled("container", slug) == []
    finally:
        first.stop()
    assert first.slug not in json.loads((bottle_home / subnets.LEASES).read_text())

    again = Bottle("it", cwd=other, settings=settings).start()
    try:
        held = json.loads((bottle_home / subnets.LEASES).read_text())[again.slug]
        assert sorted(held.values()) == sorted(mine.values())  # the only room there is
    finally:
        again.stop()
