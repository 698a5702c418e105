"""The workspace's git: nothing git executes from is writable by the agent.

Git runs what its gitdir says (``core.fsmonitor``, hooks, ``core.hooksPath``, filters,
``commondir``, ``worktrees/``, includes, a ``.git`` file's ``gitdir:``), and the user runs
git on the host in the directory the agent works in. So:

* the workspace's ``.git`` (a directory or a ``gitdir:`` file) is mounted read-only as ONE
  mount point at ``/workspace/.git``: a mount point cannot be renamed or removed (EBUSY)
  and nothing inside it can be written. The same for every git dir already nested in the
  workspace at start (submodules, vendored repositories, bare repositories);
* with no ``.git`` at the root, an empty read-only directory is mounted there, and another
  at ``/workspace/HEAD``, so the agent can plant neither a ``.git`` nor a bare-repository
  shape (``HEAD``, ``objects/``, ``refs/``) at the root, where git would find it. Docker
  leaves those two mount points as empty directories on the host; they are removed at stop;
* what the agent plants deeper (a nested ``.git``, a bare-repository-shaped directory) is
  found by comparing a scan at stop with the one recorded at start, reported, and renamed
  to ``<name>.bottle-quarantine`` so git no longer finds it.

Scans are bounded (``SCAN_LIMIT`` entries), follow no link, and never read file contents.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from bottle import layout, safefs
from bottle.errors import PlanError

#: Directory entries one scan looks at before it gives up (and says it is incomplete).
SCAN_LIMIT = 200_000
#: Suffix of a planted git dir (or bare repository's HEAD) once neutralised.
QUARANTINE = ".bottle-quarantine"
#: In the state dir: the scan at start, and the empty directory mounted as placeholder.
BASELINE_FILE = "workspace-git.json"
PLACEHOLDER_DIR = "empty"
#: Names at the workspace root that get a placeholder when missing.
_ROOT_PLACEHOLDERS = (".git", "HEAD")

Kind = Literal["dir", "file", "link", "bare"]


@dataclass(frozen=True)
class GitEntry:
    """A place git would take for a gitdir: ``path`` is relative to the workspace."""

    path: str
    kind: Kind  # .git directory, .git file, .git link, or a bare-repository-shaped directory
    dev: int
    ino: int
    link: str = ""  # a link's target: a link has no content to keep read-only


@dataclass(frozen=True)
class Scan:
    entries: dict[str, GitEntry]
    complete: bool


@dataclass(frozen=True)
class WorkspaceReport:
    """What ``check`` found: git dirs that were not there at start."""

    planted: list[str] = field(default_factory=list)
    quarantined: dict[str, str] = field(default_factory=dict)  # planted path -> new path
    complete: bool = True
    baseline: bool = True  # False: no scan from start (an older bottle), nothing compared

    def warnings(self, cwd: Path) -> list[str]:
        lines = []
        for path in self.planted:
            moved = self.quarantined.get(path)
            done = f"renamed to {cwd / moved}" if moved else "NOT renamed: do not run git there"
            lines.append(
                f"a git directory appeared in the workspace at {cwd / path} during the "
                f"session (git run there would execute what it configures); {done}"
            )
        if not self.baseline:
            lines.append(f"no record of the git dirs in {cwd} at start; nothing was checked")
        elif not self.complete:
            lines.append(
                f"the workspace has more than {SCAN_LIMIT} entries; git directories past "
                "that were not checked"
            )
        return lines


# -- what the agent gets --------------------------------------------------------------------


def git_mounts(cwd: Path, placeholder: Path) -> list[tuple[Path, PurePosixPath]]:
    """``(host source, container target)`` of every read-only git mount of the agent."""
    mounts: list[tuple[Path, PurePosixPath]] = []
    root_git = _lstat(cwd / ".git")
    if root_git is not None and stat.S_ISLNK(root_git.st_mode):
        raise PlanError(
            f"{cwd / '.git'} is a symbolic link, which bottle cannot make read-only for the agent",
            hint="Replace the link with a '.git' file holding 'gitdir: <target>', "
            "or run bottle in a copy of the repository.",
        )
    if root_git is not None and _is_git_dir(cwd / ".git", root_git):
        mounts.append((cwd / ".git", layout.WORKSPACE / ".git"))
    else:
        for name in _ROOT_PLACEHOLDERS:
            found = _lstat(cwd / name)
            if found is None or _empty_dir(cwd / name, found):
                mounts.append((placeholder, layout.WORKSPACE / name))
            elif name == "HEAD" and stat.S_ISREG(found.st_mode):
                mounts.append((cwd / name, layout.WORKSPACE / name))
            elif name == "HEAD":
                raise PlanError(
                    f"{cwd / name} is not a regular file; with no .git beside it, git "
                    "could take the workspace for a bare repository",
                    hint=f"Remove {cwd / name}, or run bottle in the repository's root.",
                )
    for entry in scan(cwd).entries.values():
        if entry.path in (".git", ".") or entry.kind == "link":
            continue  # a link cannot be mounted safely; a change to it is caught at stop
        mounts.append((cwd / entry.path, layout.WORKSPACE / entry.path))
    return mounts


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def _empty_dir(path: Path, st: os.stat_result) -> bool:
    if not stat.S_ISDIR(st.st_mode):
        return False
    try:
        return not os.listdir(path)
    except OSError:
        return False


def _is_git_dir(path: Path, st: os.stat_result) -> bool:
    """A ``.git`` file, or a ``.git`` directory that holds anything."""
    return stat.S_ISREG(st.st_mode) or (stat.S_ISDIR(st.st_mode) and not _empty_dir(path, st))


# -- scans ----------------------------------------------------------------------------------


def scan(root: Path, *, limit: int = SCAN_LIMIT) -> Scan:
    """Every ``.git`` and bare-repository-shaped directory under ``root``; no link followed.

    ``.git`` directories and quarantined entries are not descended into; empty ``.git``
    directories are skipped (git does not take them for a gitdir).
    """
    found: dict[str, GitEntry] = {}
    pending: list[tuple[str, ...]] = [()]
    seen = 0
    complete = True
    while pending:
        parts = pending.pop()
        try:
            fd = safefs.open_dir(root, list(parts))
        except OSError:
            continue  # replaced by a link or gone: nothing git would enter either
        try:
            with os.scandir(fd) as it:
                entries = sorted(it, key=lambda e: e.name)
            seen += len(entries)
            here = "/".join(parts) or "."
            modes: dict[str, os.stat_result] = {}
            for entry in entries:
                with contextlib.suppress(OSError):
                    modes[entry.name] = entry.stat(follow_symlinks=False)
            bare = _bare_head(modes)
            if bare is not None:
                found[here] = GitEntry(here, "bare", bare.st_dev, bare.st_ino)
            for name, st in modes.items():
                rel = "/".join((*parts, name))
                if name == ".git":
                    kind = _git_kind(st)
                    if kind is not None and not _empty_dir_at(fd, name, st):
                        link = os.readlink(name, dir_fd=fd) if kind == "link" else ""
                        found[rel] = GitEntry(rel, kind, st.st_dev, st.st_ino, link)
                elif stat.S_ISDIR(st.st_mode) and not name.endswith(QUARANTINE):
                    if seen > limit:
                        complete = False
                        continue
                    pending.append((*parts, name))
        finally:
            os.close(fd)
    return Scan(dict(sorted(found.items())), complete)


def _git_kind(st: os.stat_result) -> Kind | None:
    if stat.S_ISDIR(st.st_mode):
        return "dir"
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISLNK(st.st_mode):
        return "link"
    return None


def _empty_dir_at(dir_fd: int, name: str, st: os.stat_result) -> bool:
    if not stat.S_ISDIR(st.st_mode):
        return False
    try:
        fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    except OSError:
        return False
    try:
        with os.scandir(fd) as it:
            return next(it, None) is None
    finally:
        os.close(fd)


def _bare_head(modes: dict[str, os.stat_result]) -> os.stat_result | None:
    """HEAD's stat when this directory has the shape git accepts as a gitdir."""
    head = modes.get("HEAD")
    if head is None or not (stat.S_ISREG(head.st_mode) or stat.S_ISLNK(head.st_mode)):
        return None
    if "commondir" in modes or ("objects" in modes and "refs" in modes):
        return head
    return None


# -- start and stop -------------------------------------------------------------------------


def record_baseline(state_path: Path, cwd: Path) -> None:
    """At start: the placeholder directory, and the git dirs the workspace holds now."""
    placeholder = state_path / PLACEHOLDER_DIR
    placeholder.mkdir(mode=0o555, exist_ok=True)
    found = scan(cwd)
    absent = [n for n in _ROOT_PLACEHOLDERS if _placeholder_shaped(cwd / n)]
    data = {
        "cwd": str(cwd),
        "complete": found.complete,
        "placeholders": absent,
        "entries": [asdict(e) for e in found.entries.values()],
    }
    from bottle.files import atomic_write

    atomic_write(state_path / BASELINE_FILE, json.dumps(data, indent=1) + "\n")


def _placeholder_shaped(path: Path) -> bool:
    found = _lstat(path)
    return found is None or _empty_dir(path, found)


def _read_baseline(state_path: Path) -> tuple[dict[str, GitEntry], list[str]] | None:
    try:
        data = json.loads(safefs.read_regular(state_path / BASELINE_FILE))
        entries = {e["path"]: GitEntry(**e) for e in data["entries"]}
        return entries, [str(n) for n in data["placeholders"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_placeholders(state_path: Path, cwd: Path) -> None:
    """Remove the empty mount points Docker left for the root placeholders.

    Only once no container of this instance runs (an ``rmdir`` of a mount point in use
    elsewhere detaches that mount), and only the empty directories the baseline says
    were missing at start. The caller makes sure no other live instance shares ``cwd``.
    """
    baseline = _read_baseline(state_path)
    if baseline is None:
        return
    for name in baseline[1]:
        with contextlib.suppress(OSError):
            os.rmdir(cwd / name)  # fails, as it should, unless it is an empty directory


def check(state_path: Path, cwd: Path, *, quarantine: bool) -> WorkspaceReport:
    """Git dirs under ``cwd`` that were not there at start (or were replaced).

    With ``quarantine``, each is renamed so git no longer finds it: only do that once the
    agent is down, so it cannot race the rename.
    """
    baseline = _read_baseline(state_path)
    if baseline is None:
        # Without the scan at start every git dir would look new, the user's own too.
        return WorkspaceReport(complete=False, baseline=False)
    # By identity, not path: the user's nested repository moved by the agent (a directory
    # holding a mount point can be renamed) is still the user's; a new one at the old path
    # is not.
    known = {_identity(e) for e in baseline[0].values()}
    now = scan(cwd)
    planted = [e for e in now.entries.values() if _identity(e) not in known]
    moved: dict[str, str] = {}
    if quarantine:
        for entry in planted:
            target = _quarantine(cwd, entry)
            if target is not None:
                moved[entry.path] = target
    return WorkspaceReport(
        planted=[e.path for e in planted], quarantined=moved, complete=now.complete
    )


def _identity(entry: GitEntry) -> tuple[str, int, int, str]:
    return (entry.kind, entry.dev, entry.ino, entry.link)


def _quarantine(cwd: Path, entry: GitEntry) -> str | None:
    """Rename the entry (a bare repository: its HEAD) to a name git ignores; the new path."""
    parts = entry.path.split("/") if entry.path != "." else []
    if entry.kind == "bare":
        directory, name = parts, "HEAD"
    else:
        directory, name = parts[:-1], parts[-1]
    try:
        fd = safefs.open_dir(cwd, directory)
    except OSError:
        return None
    try:
        for n in range(100):
            new = f"{name}{QUARANTINE}" + (f"-{n}" if n else "")
            try:
                os.lstat(new, dir_fd=fd)
                continue
            except FileNotFoundError:
                pass
            try:
                os.rename(name, new, src_dir_fd=fd, dst_dir_fd=fd)
            except OSError:
                return None
            return "/".join((*directory, new))
        return None
    finally:
        os.close(fd)
