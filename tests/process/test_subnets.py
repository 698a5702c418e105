"""The subnet pool under concurrent starts: separate interpreters, as separate ``bottle
start`` commands are, lease from one pool at once (bottle.subnets' lock)."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from bottle import subnets
from tests.unit.test_subnets import _nets, _no_overlap, _root


def _lease_in_child(root: Path, slug: str) -> dict[str, str]:
    return subnets.lease(root, slug, pool="10.213.0.0/24", in_use=list, routes=list)


def test_concurrent_starts_never_share_a_subnet(tmp_path: Path) -> None:
    slugs = [f"s{i}" for i in range(8)]  # 8 instances, 16 slots: the pool is exactly full
    root = _root(tmp_path, *slugs)
    with multiprocessing.get_context("spawn").Pool(4) as workers:
        leases = workers.starmap(_lease_in_child, [(root, s) for s in slugs])
    mine = [n for got in leases for n in _nets(got)]
    assert len(mine) == 16 and _no_overlap(mine)
    assert json.loads((root.parent / subnets.LEASES).read_text()) == dict(
        zip(slugs, leases, strict=True)
    )
