"""bottle.workspace: the agent's git mounts, the scans, the quarantine (real git, no Docker)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from bottle import workspace
from bottle.compose import render
from bottle.errors import PlanError
from tests.conftest import write
from tests.unit.test_compose import plan_for


def git(*args: str, cwd: Path) -> None:
    subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        env={**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(cwd)},
    )


def agent_binds(home: Path, repo: Path) -> dict[str, dict[str, object]]:
    volumes = render(plan_for(home, repo))["services"]["agent"]["volumes"]
    return {str(v["target"]): v for v in volumes}


def test_a_repository_git_dir_is_one_read_only_mount(home: Path, repo: Path) -> None:
    git("init", "-q", cwd=repo)
    binds = agent_binds(home, repo)
    assert binds["/workspace/.git"]["source"] == str(repo / ".git")
    assert binds["/workspace/.git"]["read_only"] is True
    # Nothing inside it is mounted on its own: the directory itself is the mount point.
    assert not [t for t in binds if t.startswith("/workspace/.git/")]
    assert "/workspace/HEAD" not in binds


def test_a_git_file_is_mounted_read_only(home: Path, repo: Path) -> None:
    write(repo / ".git", "gitdir: /elsewhere/.git/worktrees/x\n")
    binds = agent_binds(home, repo)
    assert binds["/workspace/.git"]["source"] == str(repo / ".git")
    assert binds["/workspace/.git"]["read_only"] is True


def test_no_git_gets_read_only_placeholders(home: Path, repo: Path) -> None:
    binds = agent_binds(home, repo)
    placeholder = str(plan_for(home, repo).state_dir / workspace.PLACEHOLDER_DIR)
    for name in (".git", "HEAD"):
        assert binds[f"/workspace/{name}"]["source"] == placeholder
        assert binds[f"/workspace/{name}"]["read_only"] is True


def test_a_git_symlink_is_refused(home: Path, repo: Path, tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (repo / ".git").symlink_to(tmp_path / "real")
    with pytest.raises(PlanError, match="symbolic link") as caught:
        render(plan_for(home, repo))
    assert caught.value.hint


def test_nested_git_dirs_present_at_start_are_mounted_too(home: Path, repo: Path) -> None:
    git("init", "-q", cwd=repo)
    (repo / "vendor" / "lib").mkdir(parents=True)
    git("init", "-q", cwd=repo / "vendor" / "lib")
    write(repo / "sub" / ".git", "gitdir: ../.git/modules/sub\n")
    git("init", "-q", "--bare", "fixtures/bare.git", cwd=repo)
    binds = agent_binds(home, repo)
    for rel in ("vendor/lib/.git", "sub/.git", "fixtures/bare.git"):
        assert binds[f"/workspace/{rel}"]["source"] == str(repo / rel)
        assert binds[f"/workspace/{rel}"]["read_only"] is True


def test_scan_finds_git_shapes_and_follows_no_link(repo: Path, tmp_path: Path) -> None:
    git("init", "-q", cwd=repo)
    (repo / "a").mkdir()
    git("init", "-q", cwd=repo / "a")
    git("init", "-q", "--bare", "b", cwd=repo)
    write(repo / "c" / ".git", "gitdir: ../x\n")
    (repo / "d").mkdir()
    (repo / "d" / ".git").symlink_to(tmp_path)
    (repo / "e" / ".git").mkdir(parents=True)  # empty: git does not take it for a gitdir
    outside = tmp_path / "outside"
    outside.mkdir()
    git("init", "-q", cwd=outside)
    (repo / "f").symlink_to(outside)  # never entered
    found = workspace.scan(repo)
    assert {k: e.kind for k, e in found.entries.items()} == {
        ".git": "dir",
        "a/.git": "dir",
        "b": "bare",
        "c/.git": "file",
        "d/.git": "link",
    }
    assert found.complete


def test_scan_is_bounded(repo: Path) -> None:
    for n in range(30):
        (repo / f"d{n}" / "x").mkdir(parents=True)
    assert not workspace.scan(repo, limit=10).complete


def test_check_reports_and_quarantines_only_new_git_dirs(tmp_path: Path, repo: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    git("init", "-q", cwd=repo)
    (repo / "old").mkdir()
    git("init", "-q", cwd=repo / "old")
    workspace.record_baseline(state, repo)
    assert workspace.check(state, repo, quarantine=True).planted == []

    (repo / "new").mkdir()
    git("init", "-q", cwd=repo / "new")
    git("init", "-q", "--bare", "bare", cwd=repo)
    os.rename(repo / "old", repo / "old-moved")  # the original keeps its inode
    (repo / "old").mkdir()
    git("init", "-q", cwd=repo / "old")  # same path, another directory: planted
    report = workspace.check(state, repo, quarantine=False)
    assert report.planted == ["bare", "new/.git", "old/.git"]
    assert report.quarantined == {}
    assert (repo / "new" / ".git").is_dir()

    report = workspace.check(state, repo, quarantine=True)
    assert report.quarantined == {
        "bare": "bare/HEAD.bottle-quarantine",
        "new/.git": "new/.git.bottle-quarantine",
        "old/.git": "old/.git.bottle-quarantine",
    }
    assert (repo / ".git").is_dir() and (repo / "old-moved" / ".git").is_dir()
    assert not (repo / "new" / ".git").exists()
    assert not (repo / "bare" / "HEAD").exists()
    assert workspace.check(state, repo, quarantine=True).planted == []
    warnings = report.warnings(repo)
    assert any(str(repo / "new/.git") in w and "renamed" in w for w in warnings)


def test_without_a_baseline_nothing_is_touched(tmp_path: Path, repo: Path) -> None:
    git("init", "-q", cwd=repo)
    report = workspace.check(tmp_path, repo, quarantine=True)
    assert report.planted == [] and not report.baseline
    assert "nothing was checked" in report.warnings(repo)[0]
    assert (repo / ".git" / "HEAD").exists()


def test_placeholders_are_removed_only_when_empty_and_ours(tmp_path: Path, repo: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    workspace.record_baseline(state, repo)
    (repo / ".git").mkdir()  # what Docker leaves: empty mount points
    (repo / "HEAD").mkdir()
    workspace.remove_placeholders(state, repo)
    assert not (repo / ".git").exists() and not (repo / "HEAD").exists()

    (repo / ".git").mkdir()
    write(repo / ".git" / "HEAD", "ref: refs/heads/main\n")  # the user ran git init meanwhile
    workspace.remove_placeholders(state, repo)
    assert (repo / ".git" / "HEAD").exists()
