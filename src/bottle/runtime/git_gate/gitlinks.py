"""Submodule entries (gitlinks) a push brings, and which of them the gate lets through.

A gitlink is a tree entry naming a commit of another repository: 20 (or 32) bytes the
agent picks freely and no scanner can read anything into, since nothing here has that
commit. Unless the bottle allows submodules (``git.remotes[].submodules``), a gitlink a
push adds or changes must name a commit the gate has (upstream's, or one the push itself
brings); any other is refused before the scan, as the push policy refuses a ref.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from bottle.runtime.git_gate import PushPolicy, scan

GITLINK = "160000"
#: Refusals listed one by one; past this many, the rest are counted.
SHOWN = 20


def _run(git_dir: Path, args: Sequence[str], env: Mapping[str, str], stdin: bytes) -> bytes:
    done = subprocess.run(
        ["git", "--git-dir", str(git_dir), *args],
        input=stdin,
        capture_output=True,
        env=dict(env),
        timeout=scan.SCAN_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip()[-300:]
        raise scan.ScanError(f"git {args[0]} failed: {err}")
    return done.stdout


def in_commits(
    git_dir: Path, commits: Sequence[str], env: Mapping[str, str]
) -> Iterator[tuple[str, str, str]]:
    """(commit, path, target) of each gitlink a commit brings: one that differs from every
    parent's entry at that path (a first commit has none). One that a parent has came with
    that parent: upstream's, or a new commit, itself listed."""
    if not commits:
        return
    stdin = ("\n".join(commits) + "\n").encode()
    parents = {
        line.split()[0]: max(1, len(line.split()) - 1)
        for line in _run(git_dir, ["rev-list", "--no-walk=unsorted", "--parents", "--stdin"],
                         env, stdin).decode().splitlines()
    }  # fmt: skip
    # -m: a merge against each parent in turn; each lists a path at most once. A field
    # where an entry may start is a commit id when it does not start with ":" (a path
    # is always read as the field after its entry, whatever it looks like).
    args = ["diff-tree", "-r", "-m", "--root", "--no-renames", "-z", "--stdin"]
    fields = _run(git_dir, args, env, stdin).split(b"\0")
    seen: dict[tuple[str, str, str], int] = {}
    commit, index = "", 0
    while index < len(fields):
        field = fields[index]
        index += 1
        if not field.startswith(b":"):
            commit = field.decode("ascii", "replace").strip()
            continue
        path = fields[index].decode("utf-8", "replace") if index < len(fields) else ""
        index += 1
        # ":old-mode new-mode old-id new-id status", then the path (no renames: one).
        try:
            _old_mode, new_mode, _old, new, _status = field[1:].decode().split(" ")
        except ValueError:
            raise scan.ScanError("git diff-tree wrote an entry that cannot be read") from None
        if new_mode == GITLINK:
            key = (commit, path, new)
            seen[key] = seen.get(key, 0) + 1
    for key, count in seen.items():
        if count >= parents.get(key[0], 1):
            yield key


def in_tree(
    git_dir: Path, owner: str, tree: str, env: Mapping[str, str]
) -> Iterator[tuple[str, str, str]]:
    """(owner, path, target) of each gitlink anywhere in ``tree`` (a tree a tag names)."""
    for entry in _run(git_dir, ["ls-tree", "-r", "-z", tree], env, b"").split(b"\0"):
        head, _, path = entry.partition(b"\t")
        mode, _, rest = head.partition(b" ")
        if mode.decode() == GITLINK:
            yield owner, path.decode("utf-8", "replace"), rest.split(b" ")[-1].decode()


def missing(git_dir: Path, targets: Sequence[str], env: Mapping[str, str]) -> set[str]:
    """The targets that are no commit the gate has (the push's objects are visible)."""
    if not targets:
        return set()
    out = _run(git_dir, ["cat-file", "--batch-check"], env, ("\n".join(targets) + "\n").encode())
    have = set()
    for line in out.decode().splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[1] == "commit":
            have.add(fields[0])
    return set(targets) - have


def refusals(
    policy: PushPolicy, git_dir: Path, content: scan.PushContent, env: Mapping[str, str]
) -> list[str]:
    """One sentence per gitlink the policy refuses (empty: none, or submodules allowed)."""
    if policy.submodules:
        return []
    links = list(in_commits(git_dir, content.commits, env))
    for owner, tree in content.trees:
        links += in_tree(git_dir, owner, tree, env)
    unknown = missing(git_dir, sorted({target for _, _, target in links}), env)
    out = [
        f"{path} (in {owner[:12]}): a submodule entry naming commit {target[:12]}, which "
        "neither upstream nor this push has; submodules are refused unless the bottle allows "
        "them (git.remotes[].submodules)"
        for owner, path, target in links
        if target in unknown
    ]
    if len(out) > SHOWN:
        out = [*out[:SHOWN], f"… and {len(out) - SHOWN} more submodule entries"]
    return out
