"""The workspace's git cannot be made to run the agent's code on the host.

Each attack runs from inside a real agent (the shell provider, as the workspace's non-root
owner), then the user's ``git status`` / ``log`` / ``diff`` / ``commit`` run ON THE HOST in
that workspace, as that owner, with a marker command planted; the marker must not exist.
Each attack also has a control: the same script run on the host directly must leave the
marker, so a passing escape test means bottle stopped it, not that the attack was a dud.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from bottle import Bottle
from bottle.instance import Instance
from tests.conftest import run_cli
from tests.integration.conftest import bottle_home  # noqa: F401  (fixture)

pytestmark = pytest.mark.docker

#: The workspace owner: the agent runs as this uid, and so does the user's host git.
UID = GID = 1000
BRANCH = "main"


@dataclass(frozen=True)
class Attack:
    name: str
    script: str  # sh, run in the workspace root; {m} is the marker's host path
    layout: str = "repo"  # repo | plain (no .git) | subdir (cwd is a repository's subdirectory)
    host_dirs: tuple[str, ...] = (".",)  # where the user runs git afterwards
    nested: bool = False  # planted below the root: caught at stop, not while running


FSMON = 'git config core.fsmonitor "touch {m}"'
EVIL_COPY = 'cp -a .git evil; git config -f evil/config core.fsmonitor "touch {m}"'

ATTACKS = [
    Attack("config", FSMON),
    Attack(
        "hooks",
        'printf "#!/bin/sh\\ntouch {m}\\n" > .git/hooks/pre-commit; chmod +x .git/hooks/pre-commit',
    ),
    Attack(
        "hooks-path",
        'mkdir -p evilhooks; printf "#!/bin/sh\\ntouch {m}\\n" > evilhooks/pre-commit; '
        "chmod +x evilhooks/pre-commit; git config core.hooksPath evilhooks",
    ),
    Attack("commondir", f"{EVIL_COPY}; echo ../evil > .git/commondir"),
    Attack(
        "attributes-filter",
        'echo "* filter=evil" > .git/info/attributes; '
        'git config filter.evil.clean "touch {m}; cat"; echo changed >> README',
    ),
    Attack(
        "worktrees",
        f"{EVIL_COPY}; mkdir -p .git/worktrees/wt wt; "
        'echo "ref: refs/heads/main" > .git/worktrees/wt/HEAD; '
        "echo ../../../evil > .git/worktrees/wt/commondir; "
        'echo "$PWD/wt/.git" > .git/worktrees/wt/gitdir; '
        'echo "gitdir: ../.git/worktrees/wt" > wt/.git',
        host_dirs=(".", "wt"),
        nested=True,
    ),
    Attack(
        "include-if",
        'printf "[core]\\n\\tfsmonitor = touch {m}\\n" > evil.cfg; '
        'git config "includeIf.gitdir:/**.path" ../evil.cfg',
    ),
    Attack(
        "mv-git-away-and-replace",
        "mv .git .git-old && mkdir .git && cp -a .git-old/. .git/ && git config -f .git/config "
        'core.fsmonitor "touch {m}"',
    ),
    Attack("git-file", f'{EVIL_COPY}; rm -rf .git; printf "gitdir: evil\\n" > .git'),
    Attack("git-symlink", f"{EVIL_COPY}; rm -rf .git; ln -s evil .git"),
    Attack("plain-root-plant", f"git init -q -b {BRANCH} . && {FSMON}", layout="plain"),
    Attack(
        "plain-root-bare-plant",
        "git init -q --bare . ; git config -f config core.bare false; "
        'git config -f config core.worktree . ; git config -f config core.fsmonitor "touch {m}"',
        layout="plain",
    ),
    Attack("subdir-root-plant", f"git init -q -b {BRANCH} . && {FSMON}", layout="subdir"),
    Attack(
        "nested-repo",
        f"mkdir -p sub && cd sub && git init -q && {FSMON}",
        host_dirs=("sub",),
        nested=True,
    ),
    Attack(
        "bare-repo-in-subdir",
        "git init -q --bare sub && git config -f sub/config core.bare false && "
        "git config -f sub/config core.worktree . && "
        'git config -f sub/config core.fsmonitor "touch {m}"',
        host_dirs=("sub",),
        nested=True,
    ),
]


def _as_owner() -> dict[str, object]:
    return {"user": UID, "group": GID, "extra_groups": []}


def _owner_env(home: Path) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "u",
        "GIT_AUTHOR_EMAIL": "u@example.invalid",
        "GIT_COMMITTER_NAME": "u",
        "GIT_COMMITTER_EMAIL": "u@example.invalid",
    }


@dataclass
class Scene:
    base: Path  # owned by UID, world-traversable
    user_home: Path
    markers: Path

    def sh(self, script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        """``script`` on the host, as the workspace owner."""
        return subprocess.run(
            ["sh", "-c", script],
            cwd=cwd,
            env=_owner_env(self.user_home),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            **_as_owner(),  # type: ignore[arg-type]
        )

    def layout(self, kind: str) -> Path:
        """A fresh workspace of ``kind``; returns the directory bottle runs in."""
        root = Path(tempfile.mkdtemp(dir=self.base, prefix=f"{kind}-"))
        os.chown(root, UID, GID)
        os.chmod(root, 0o755)
        if kind == "plain":
            self.sh("echo hello > README", root)
            return root
        init = f"git init -q -b {BRANCH} . && echo hello > README && mkdir -p sub && "
        init += "echo s > sub/file && git add -A && git commit -qm init"
        assert self.sh(init, root).returncode == 0
        return root / "sub" if kind == "subdir" else root

    def user_runs_git(self, workspace: Path, dirs: tuple[str, ...]) -> None:
        for rel in dirs:
            where = workspace / rel
            if where.is_dir():
                self.sh(
                    "git status; git log -1; git diff; git commit -q --allow-empty -m probe",
                    where,
                )


@pytest.fixture
def scene() -> Iterator[Scene]:
    # Not under pytest's tmp_path: that is root's 0700 directory, which the owner's host
    # git could not enter at all (and would then prove nothing).
    base = Path(tempfile.mkdtemp(prefix="bottle-escape-ws-"))
    try:
        os.chmod(base, 0o755)
        home = base / "user-home"
        markers = base / "markers"
        home.mkdir()
        markers.mkdir()
        os.chown(home, UID, GID)
        os.chmod(markers, 0o777)  # the owner's marker command writes here
        yield Scene(base, home, markers)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _marker(scene: Scene, attack: Attack) -> Path:
    return scene.markers / f"pwned-{attack.name}-{uuid.uuid4().hex[:8]}"


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_control_the_attack_works_without_bottle(scene: Scene, attack: Attack) -> None:
    workspace = scene.layout(attack.layout)
    marker = _marker(scene, attack)
    scene.sh(attack.script.format(m=marker), workspace)
    scene.user_runs_git(workspace, attack.host_dirs)
    assert marker.exists(), f"the {attack.name} attack did not work even on the host"


@pytest.mark.parametrize("attack", ATTACKS, ids=lambda a: a.name)
def test_agent_cannot_make_host_git_run_its_code(
    bottle_home: Path,  # noqa: F811
    scene: Scene,
    attack: Attack,
    capfd: pytest.CaptureFixture[str],
) -> None:
    workspace = scene.layout(attack.layout)
    marker = _marker(scene, attack)
    before = sorted(p.name for p in workspace.iterdir())
    instance = Bottle("it", cwd=workspace).start()
    try:
        assert instance.exec(["id", "-u"], capture=True).stdout.strip() == str(UID)
        instance.exec(["sh", "-c", attack.script.format(m=marker)], capture=True)
        if not attack.nested:
            scene.user_runs_git(workspace, attack.host_dirs)
            assert not marker.exists(), f"{attack.name}: host git ran the agent's command"
    finally:
        instance.stop()
    scene.user_runs_git(workspace, attack.host_dirs)
    assert not marker.exists(), f"{attack.name}: host git ran the agent's command after stop"
    planted = Instance.open(instance.slug).metadata.planted_git
    if attack.nested:
        assert planted, "a planted git dir was not reported"
        assert "git directory appeared" in capfd.readouterr().err
    if attack.layout == "plain":
        # The placeholder mount points are gone again: nothing of bottle's is left behind.
        assert ".git" not in {p.name for p in workspace.iterdir()} - set(before)
        assert "HEAD" not in {p.name for p in workspace.iterdir()} - set(before)


def test_agent_reads_history_but_cannot_commit(
    bottle_home: Path,  # noqa: F811
    scene: Scene,
) -> None:
    workspace = scene.layout("repo")
    with Bottle("it", cwd=workspace).start() as instance:
        log = instance.exec(["git", "log", "--format=%s"], capture=True)
        assert log.exit_code == 0 and log.stdout.strip() == "init", log.stderr
        edit = instance.exec(["sh", "-c", "echo more >> README && git diff --stat"], capture=True)
        assert "README" in edit.stdout
        commit = instance.exec(
            ["sh", "-c", "git -c user.name=a -c user.email=a@b commit -qam x"], capture=True
        )
        assert commit.exit_code != 0
        assert "Read-only file system" in commit.stderr or "read-only" in commit.stderr.lower()
    assert (workspace / "README").read_text() == "hello\nmore\n"


def test_planted_repo_agents_do_not_run_next_time(
    bottle_home: Path,  # noqa: F811
    scene: Scene,
) -> None:
    workspace = scene.layout("repo")
    planted = (
        "mkdir -p .bottle/agents && "
        "printf -- '---\\ndescription: planted\\n---\\nPLANTED-PROMPT\\n' > .bottle/agents/shell.md && "
        "printf -- '---\\nbottle: it\\n---\\nPLANTED-PROMPT\\n' > .bottle/agents/new.md"
    )
    with Bottle("it", cwd=workspace).start() as instance:
        assert instance.exec(["sh", "-c", planted], capture=True).exit_code == 0
    env = {"BOTTLE_HOME": str(bottle_home)}
    shell = run_cli(
        "run", "shell", "--", "cat", "/run/bottle/agent/system-prompt.md", cwd=workspace, env=env
    )
    assert shell.returncode == 0, shell.stderr
    assert "PLANTED-PROMPT" not in shell.stdout
    assert str(workspace / ".bottle/agents/shell.md") in shell.stderr  # the warning names it
    new = run_cli("run", "new", "--", "true", cwd=workspace, env=env)
    assert new.returncode == 2
    assert str(workspace / ".bottle/agents/new.md") in new.stderr
    assert "bottle trust" in new.stderr and "Traceback" not in new.stderr
