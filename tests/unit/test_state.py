from __future__ import annotations

import os
from pathlib import Path

import pytest

from bottle.errors import StateError
from bottle.files import atomic_write, now
from bottle.state import InstanceStatus, Metadata, StateDir


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


def test_the_state_dir_is_its_owners_alone(tmp_path: Path) -> None:
    # transcript/ and home/ are world-writable (the agent may be another uid): under a
    # 0755 state dir any local user could plant a ~/.bashrc or Claude hooks in someone's
    # sandbox and use the credentials egress injects there. The mounts do not need the
    # parents: dockerd binds each directory itself.
    old = os.umask(0o022)
    try:
        state = StateDir(tmp_path / "state" / "s1")
        state.create()
    finally:
        os.umask(old)
    assert state.path.stat().st_mode & 0o777 == 0o700
    assert state.transcript.stat().st_mode & 0o777 == 0o777


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


def test_plan_round_trips_through_plan_json_without_secret_values(
    home: Path, repo: Path, tmp_path: Path
) -> None:
    from dataclasses import replace

    from bottle.manifest import load_manifest
    from bottle.plan import PlanOptions, resolve_plan
    from bottle.settings import Settings
    from tests.conftest import write

    secrets = {
        "API_TOKEN": "tok-9f8e7d6c5b4a",
        "DEPLOY_KEY": "key-1a2b3c4d5e6f",
        "EXTRA": "dlp-0a9b8c7d6e5f",
        "HOST_THING": "host-5e4d3c2b1a0f",
    }
    write(
        home / "bottles" / "b.md",
        "---\nsupervise: {wait: 9}\nenv: {COPIED: '${HOST_THING}', LIT: 'costs $5', Q: '?Name'}\n"
        "egress:\n  dlp_secrets: [EXTRA]\n  routes:\n"
        "    - {host: api.example.com, auth: {scheme: bearer, token_ref: API_TOKEN}}\n"
        "git:\n  remotes:\n    - {name: origin, url: 'git@example.com:r.git', key_ref: DEPLOY_KEY,\n"
        "       host_key: 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMWAcDWKd8LMGI26G9JH4h6os0LeNMs3oJ7aA+X71ZSo'}\n"
        "---\n",
    )
    write(home / "skills" / "s1" / "SKILL.md", "# s1\n")
    write(home / "agents" / "a.md", "---\nbottle: b\nskills: [s1]\n---\nPrompt.\n")
    plan = resolve_plan(
        load_manifest(home=home, cwd=repo),
        PlanOptions(agent="a", cwd=repo, suffix="abcde", extra_args=("--x",)),
        settings=Settings.from_env({"BOTTLE_HOME": str(home)}),
        environ=secrets,
    )
    state = StateDir(tmp_path / "states" / plan.slug)
    state.create()
    state.write_plan(plan)
    raw = state.plan_file.read_bytes()
    for value in secrets.values():
        assert value.encode() not in raw
    for name in secrets:
        assert name.encode() in raw  # named, as references
    back = state.read_plan()
    assert back == replace(plan, images=replace(plan.images, specs=()))
    assert set(back.sidecars) == {"egress", "supervise", "git-gate"}
    assert back.secret_refs == plan.secret_refs


def test_read_plan_of_a_damaged_or_missing_file_is_a_plan_error(tmp_path: Path) -> None:
    from bottle.errors import PlanError

    state = StateDir(tmp_path / "s-abcde")
    state.create()
    with pytest.raises(PlanError, match="cannot read the plan") as info:
        state.read_plan()
    assert info.value.hint
    for bad in ("{", "[]", '{"slug": "x"}', '{"sidecars": {"nope": {}}}'):
        state.plan_file.write_text(bad)
        with pytest.raises(PlanError, match="cannot read the plan"):
            state.read_plan()


def test_read_plan_names_a_sidecar_this_version_does_not_know(tmp_path: Path) -> None:
    from bottle.errors import PlanError

    state = StateDir(tmp_path / "s-abcde")
    state.create()
    state.plan_file.write_text('{"sidecars": {"nope": {}}}')
    with pytest.raises(PlanError, match="does not know: nope"):
        state.read_plan()
