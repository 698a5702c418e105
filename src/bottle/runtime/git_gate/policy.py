"""The push policy: which ref updates a push may make. Enforced by the gate's hook, so the
agent cannot change it (it only speaks the git protocol to the gate)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from bottle.runtime.git_gate import ZERO, PushPolicy, RefUpdate


def is_fast_forward(git_dir: Path, old: str, new: str, env: Mapping[str, str]) -> bool:
    done = subprocess.run(
        ["git", "--git-dir", str(git_dir), "merge-base", "--is-ancestor", old, new],
        capture_output=True,
        env=dict(env),
        check=False,
    )
    return done.returncode == 0


def refusals(
    policy: PushPolicy, updates: Sequence[RefUpdate], git_dir: Path, env: Mapping[str, str]
) -> list[str]:
    """One sentence per update the policy refuses (empty: all allowed)."""
    out: list[str] = []
    for update in updates:
        ref = update.ref
        if not policy.matches(ref, policy.refs):
            if not policy.refs:
                why = "this remote takes no pushes (git.remotes[].push is false)"
            elif ref.startswith("refs/tags/"):
                why = "tags are not pushed unless the bottle allows them (git.remotes[].tags)"
            elif not ref.startswith("refs/heads/"):
                why = "only branches (refs/heads/…) are pushed"
            else:
                why = f"the bottle allows pushes to {', '.join(policy.refs)} only"
            out.append(f"{ref}: {why}")
        elif update.new == ZERO:
            if not policy.matches(ref, policy.delete):
                out.append(f"{ref}: deleting a ref is refused (git.remotes[].delete allows it)")
        elif not policy.matches(ref, policy.force) and not _fast_forward(update, git_dir, env):
            out.append(
                f"{ref}: a force push (not a fast-forward of {update.old[:12]}) is refused "
                "(git.remotes[].force allows it); pull and rebase or merge instead"
            )
    return out


def _fast_forward(update: RefUpdate, git_dir: Path, env: Mapping[str, str]) -> bool:
    """A new ref, or a move of an existing one to a descendant."""
    return update.old == ZERO or is_fast_forward(git_dir, update.old, update.new, env)


def refspecs(
    policy: PushPolicy, updates: Sequence[RefUpdate], git_dir: Path, env: Mapping[str, str]
) -> list[str]:
    """What to push upstream for allowed updates: a non-fast-forward is forced with a lease
    on the value the mirror had, so a concurrent upstream change is never overwritten."""
    specs: list[str] = []
    for update in updates:
        if update.new == ZERO:
            specs += [f"--force-with-lease={update.ref}:{update.old}", f":{update.ref}"]
        elif update.old != ZERO and not is_fast_forward(git_dir, update.old, update.new, env):
            specs += [
                f"--force-with-lease={update.ref}:{update.old}",
                f"+{update.new}:{update.ref}",
            ]
        else:
            specs.append(f"{update.new}:{update.ref}")
    return specs
