"""``bottle cleanup`` plans only its own home's orphans: another BOTTLE_HOME on the same
engine keeps its instances, running or not.

Over a stand-in docker CLI that holds the containers and networks of two homes and answers
the listing commands as docker does (label filters applied, inspect as JSON).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from bottle.instances import plan_cleanup
from bottle.settings import Settings
from tests.conftest import fake_docker_on_path

#: The engine's objects, as the fake lists and inspects them (FAKE_ENGINE, JSON). The
#: shebang names this interpreter: ``env python3`` may find a version manager's shim, which
#: costs a quarter of a second a call, and the fake answers a dozen.
FAKE_DOCKER = (
    f"#!{sys.executable} -S\n"
    + r"""
import json, os, sys

engine = json.loads(os.environ["FAKE_ENGINE"])
args = sys.argv[1:]
filters = [args[i + 1].removeprefix("label=") for i, a in enumerate(args) if a == "--filter"]


def matches(labels):
    for f in filters:
        key, _, value = f.partition("=")
        if key not in labels or (value and labels[key] != value):
            return False
    return True


def label(labels, key):
    return labels.get(key, "")


if args[:1] == ["ps"]:
    for c in engine["containers"]:
        if matches(c["labels"]):
            ls = c["labels"]
            print("\t".join([c["id"], "running", "Up 1 minute",
                             label(ls, "com.docker.compose.project"),
                             label(ls, "com.docker.compose.service"),
                             label(ls, "bottle.slug"), label(ls, "bottle.home"), c["id"]]))
elif args[:2] == ["container", "list"]:
    print("\n".join(c["id"] for c in engine["containers"] if matches(c["labels"])))
elif args[:2] == ["container", "inspect"]:
    found = [c for c in engine["containers"] if c["id"] in args[2:]]
    print(json.dumps([{"Id": c["id"], "Config": {"Labels": c["labels"]}} for c in found]))
elif args[:2] == ["network", "ls"]:
    print("\n".join(n["id"] for n in engine["networks"] if matches(n["labels"])))
elif args[:2] == ["network", "inspect"]:
    found = [n for n in engine["networks"] if n["id"] in args[2:]]
    print(json.dumps([{"Id": n["id"], "Name": n["id"], "Labels": n["labels"]} for n in found]))
else:
    sys.exit("fake docker: not a listing: " + " ".join(args))
"""
)


def _labels(slug: str, home: str, service: str | None = None) -> dict[str, str]:
    labels = {
        "bottle.slug": slug,
        "bottle.home": home,
        "com.docker.compose.project": f"bottle-{slug}",
    }
    if service is not None:
        labels["com.docker.compose.service"] = service
    return labels


def two_homes(tmp_path: Path) -> tuple[Settings, Settings]:
    """This home and another, on the same engine."""
    homes = Settings(home=tmp_path / "a"), Settings(home=tmp_path / "b")
    for settings in homes:
        settings.state_root.mkdir(parents=True)
    return homes


def test_cleanup_plans_only_this_homes_orphans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine, theirs = two_homes(tmp_path)
    assert mine.home_id != theirs.home_id
    engine: dict[str, list[dict[str, Any]]] = {
        "containers": [
            {"id": "c-mine-agent", "labels": _labels("mine-aaaaa", mine.home_id, "agent")},
            {"id": "c-mine-egress", "labels": _labels("mine-aaaaa", mine.home_id, "egress")},
            # Another home's instance, and an orphan of that home: neither is ours to touch.
            {"id": "c-theirs-agent", "labels": _labels("theirs-bbbbb", theirs.home_id, "agent")},
            {"id": "c-theirs-orphan", "labels": _labels("gone-ccccc", theirs.home_id, "agent")},
        ],
        "networks": [
            {"id": "n-mine", "labels": _labels("mine-aaaaa", mine.home_id)},
            {"id": "n-theirs", "labels": _labels("theirs-bbbbb", theirs.home_id)},
            {"id": "n-theirs-orphan", "labels": _labels("gone-ccccc", theirs.home_id)},
        ],
    }
    monkeypatch.setenv("FAKE_ENGINE", json.dumps(engine))
    fake_docker_on_path(tmp_path / "bin", FAKE_DOCKER, monkeypatch)

    plan = plan_cleanup(mine, everything=True)
    # This home's project has no state dir: an orphan, taken down; nothing of the other's.
    assert plan.take_down == ["mine-aaaaa"]
    assert plan.orphan_containers == [] and plan.orphan_networks == []  # kept for take-down
    theirs_plan = plan_cleanup(theirs, everything=True)
    assert sorted(theirs_plan.take_down) == ["gone-ccccc", "theirs-bbbbb"]


def test_cleanup_leaves_another_homes_leftover_containers_and_networks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Containers and networks with no compose project (a half-made start): orphans by
    # label alone, and only this home's are planned for removal.
    mine, theirs = two_homes(tmp_path)

    def bare(slug: str, home: str) -> dict[str, str]:
        return {"bottle.slug": slug, "bottle.home": home}

    engine = {
        "containers": [
            {"id": "c-mine", "labels": bare("mine-aaaaa", mine.home_id)},
            {"id": "c-theirs", "labels": bare("theirs-bbbbb", theirs.home_id)},
        ],
        "networks": [
            {"id": "n-mine", "labels": bare("mine-aaaaa", mine.home_id)},
            {"id": "n-theirs", "labels": bare("theirs-bbbbb", theirs.home_id)},
        ],
    }
    monkeypatch.setenv("FAKE_ENGINE", json.dumps(engine))
    fake_docker_on_path(tmp_path / "bin", FAKE_DOCKER, monkeypatch)

    plan = plan_cleanup(mine, everything=True)
    assert plan.take_down == []
    assert plan.orphan_containers == ["c-mine"]
    assert plan.orphan_networks == ["n-mine"]
