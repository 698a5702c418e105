"""What a push would publish, and what in it must not leave.

Every commit the push brings that the mirror (= upstream) does not have yet is scanned, not
just the tips: each added line of its diff, its message, with the bottle's own secret values
in the forms egress checks (``bottle.runtime.egress.dlp``) and with gitleaks. A finding names
the commit, file, line and rule, never the matched text.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bottle.runtime.egress import dlp

#: A push of more commits than this is refused rather than scanned for ever.
MAX_COMMITS = 5000
#: Long lines are scanned in pieces of this many characters, each overlapping the next by
#: ``LINE_OVERLAP`` (longer than any secret form), so nothing hides past a cut.
LINE_PIECE = 1 << 16
LINE_OVERLAP = 1 << 13
#: A line longer than this cannot be scanned: the push is refused (fail closed).
MAX_LINE = 1 << 24
SCAN_TIMEOUT = 600.0
_ALLOW_MARK = "gitleaks:allow"
_HUNK = re.compile(r"^(@@+) .*?\+(\d+)(?:,\d+)? @@+")


def _pieces(text: str) -> Iterator[str]:
    """``text`` whole, or in overlapping pieces when it is long."""
    if len(text) <= LINE_PIECE:
        yield text
        return
    step = LINE_PIECE - LINE_OVERLAP
    for start in range(0, len(text), step):
        yield text[start : start + LINE_PIECE]
        if start + LINE_PIECE >= len(text):
            return


def commit_messages(
    git_dir: Path, commits: Sequence[str], env: Mapping[str, str]
) -> Iterator[tuple[str, str, str]]:
    """(commit, "commit message", line) for each line of each commit's message."""
    proc = subprocess.Popen(
        ["git", "--git-dir", str(git_dir), "cat-file", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(("\n".join(commits) + "\n").encode())
    proc.stdin.close()
    for _ in commits:
        header = proc.stdout.readline().split()
        if len(header) != 3 or header[1] != b"commit":
            proc.kill()
            raise ScanError(f"cannot read commit object {header[:1]!r}")
        body = proc.stdout.read(int(header[2]))
        proc.stdout.read(1)  # the newline after each object
        _, _, message = body.partition(b"\n\n")
        for line in message.decode("utf-8", "replace").split("\n"):
            if line:
                for piece in _pieces(line):
                    yield header[0].decode(), "commit message", piece
    proc.wait(timeout=SCAN_TIMEOUT)
    if proc.returncode != 0:
        raise ScanError("git cat-file failed")


class ScanError(Exception):
    """The scan could not run: the push is refused (fail closed)."""


@dataclass(frozen=True)
class Finding:
    commit: str
    where: str  # "path:line" or "commit message"
    rule: str

    def __str__(self) -> str:
        return f"{self.commit[:12]} {self.where}: {self.rule}"


def new_commits(git_dir: Path, tips: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Commits reachable from ``tips`` and from no ref the mirror has (upstream's)."""
    if not tips:
        return []
    done = _git(
        git_dir, ["rev-list", f"--max-count={MAX_COMMITS + 1}", *tips, "--not", "--all"], env
    )
    commits = done.split()
    if len(commits) > MAX_COMMITS:
        raise ScanError(
            f"the push brings more than {MAX_COMMITS} new commits; push fewer at a time"
        )
    return commits


def _git(git_dir: Path, args: Sequence[str], env: Mapping[str, str]) -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(git_dir), *args],
        capture_output=True,
        text=True,
        errors="replace",
        env=dict(env),
        timeout=SCAN_TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        raise ScanError(f"git {args[0]} failed: {done.stderr.strip()[-300:]}")
    return done.stdout


def added_lines(
    git_dir: Path, commits: Sequence[str], env: Mapping[str, str]
) -> Iterator[tuple[str, str, str]]:
    """(commit, where, text) for every message line and every added line of each commit.

    Messages come from the commit objects themselves (``cat-file --batch``, framed by
    size), never from a text stream a message could end early; a diff line is a file header
    only between ``diff`` and its first hunk, so content can never pose as one.
    """
    if not commits:
        return
    yield from commit_messages(git_dir, commits, env)
    args = [
        "log",
        "--no-walk=unsorted",
        "-p",
        "--text",
        "--cc",
        "-U0",
        "--no-color",
        "--no-ext-diff",
        "--no-textconv",
        "--no-renames",
        "--format=%x01%H",
        "--stdin",
    ]
    proc = subprocess.Popen(
        ["git", "--git-dir", str(git_dir), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        text=True,
        errors="replace",
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n".join(commits) + "\n")
    proc.stdin.close()
    commit, path, lineno, width, in_header = "", "", 0, 1, False
    for raw in proc.stdout:
        line = raw.rstrip("\n")
        if len(line) > MAX_LINE:
            proc.kill()
            raise ScanError(f"a line of more than {MAX_LINE} characters cannot be scanned")
        if line.startswith("\x01"):  # no header or content line starts with it
            commit, path, in_header = line[1:41], "", False
            continue
        if line.startswith("diff "):
            path, in_header = "", True
            continue
        if in_header:
            match = _HUNK.match(line)
            if match:
                width, lineno, in_header = len(match[1]) - 1, int(match[2]), False
            elif line.startswith("+++ "):
                target = line[4:]
                path = target[2:] if target.startswith("b/") else target
            continue
        match = _HUNK.match(line)
        if match:
            width, lineno = len(match[1]) - 1, int(match[2])
            continue
        prefix = line[:width]
        if path and prefix and "+" in prefix and "-" not in prefix:
            for piece in _pieces(line[width:]):
                yield commit, f"{path}:{lineno}", piece
            lineno += 1
        elif path and prefix and "-" not in prefix:
            lineno += 1
    proc.wait(timeout=SCAN_TIMEOUT)
    if proc.returncode != 0:
        err = proc.stderr.read() if proc.stderr else ""
        raise ScanError(f"git log failed: {err.strip()[-300:]}")


def scan_known(
    lines: Iterable[tuple[str, str, str]], secrets: Sequence[dlp.KnownSecret]
) -> list[Finding]:
    """The bottle's own secrets (plain, URL-encoded, base64) and well-known token shapes."""
    found: list[Finding] = []
    for commit, where, text in lines:
        if _ALLOW_MARK in text.lower():
            # gitleaks skips a line carrying this comment; the agent must not get to choose.
            found.append(Finding(commit, where, "gitleaks:allow comment (not honoured here)"))
        for finding in dlp.scan_text(text, where, secrets):
            rule = f"{finding.kind} ({finding.form})" if finding.form else finding.kind
            found.append(Finding(commit, where, rule))
    return found


def scan_gitleaks(git_dir: Path, commits: Sequence[str], env: Mapping[str, str]) -> list[Finding]:
    """gitleaks over exactly these commits (it reads them with ``git log``, so the push's
    quarantined objects are visible through the inherited environment)."""
    if not commits:
        return []
    with tempfile.TemporaryDirectory(prefix="gitleaks-") as tmp:
        report = Path(tmp) / "report.json"
        revs = " ".join(commits)
        argv = [
            "gitleaks",
            "detect",
            "--source",
            str(git_dir),
            "--no-banner",
            "--redact",
            "--report-format",
            "json",
            "--report-path",
            str(report),
            "--exit-code",
            "0",
            "--log-level",
            "error",
            "--log-opts",
            f"--no-walk=unsorted {revs}",
        ]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env={**env, "GIT_DIR": str(git_dir)},
                timeout=SCAN_TIMEOUT,
                check=False,
            )
        except FileNotFoundError:
            raise ScanError("gitleaks is not installed in the git-gate image") from None
        except subprocess.TimeoutExpired:
            raise ScanError(f"gitleaks did not finish within {SCAN_TIMEOUT:.0f}s") from None
        if done.returncode != 0 or not report.is_file():
            raise ScanError(f"gitleaks failed: {(done.stderr or done.stdout).strip()[-300:]}")
        try:
            results = json.loads(report.read_text() or "[]")
        except ValueError:
            raise ScanError("gitleaks wrote an unreadable report") from None
    found = []
    for item in results or []:
        where = f"{item.get('File', '?')}:{item.get('StartLine', '?')}"
        found.append(
            Finding(str(item.get("Commit", "")), where, f"gitleaks:{item.get('RuleID', '?')}")
        )
    return found


def gitleaks_available() -> bool:
    return any(
        os.access(Path(d) / "gitleaks", os.X_OK) for d in os.environ.get("PATH", "").split(":") if d
    )
