from __future__ import annotations

import os
from pathlib import Path

import pytest

from bottle.errors import StateError
from bottle.state import InstanceStatus, Metadata, StateDir, atomic_write, now


def meta(slug: str = "s-abcde") -> Metadata:
    return Metadata(
        slug=slug,
        agent="shell",
        bottle="default",
        provider="shell",
        cwd="/",
        compose_project="p",
        images={},
        services=["agent"],
        status=InstanceStatus.STARTING,
        started_at=now(),
        updated_at=now(),
    )


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "d" / "f.txt"
    atomic_write(target, "one")
    atomic_write(target, b"two")
    assert target.read_text() == "two"
    assert os.listdir(target.parent) == ["f.txt"]


def test_atomic_write_failure_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write(target, "old")

    with pytest.raises(TypeError):
        atomic_write(target, 12)  # type: ignore[arg-type]
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["f.txt"]


def test_create_is_exclusive_and_makes_tree(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s-abcde")
    state.create()
    for sub in StateDir.SUBDIRS:
        assert (state.path / sub).is_dir()
    with pytest.raises(StateError):
        state.create()


def test_transitions_are_checked(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "s-abcde")
    state.create()
    state.write_metadata(meta())
    assert state.transition(InstanceStatus.RUNNING).status == InstanceStatus.RUNNING
    with pytest.raises(StateError, match="cannot become"):
        state.transition(InstanceStatus.FINISHED)
    state.transition(InstanceStatus.STOPPING)
    assert state.transition(InstanceStatus.FINISHED).status == InstanceStatus.FINISHED
    assert state.read_metadata().status == InstanceStatus.FINISHED
