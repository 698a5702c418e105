"""What a push would publish, and what in it must not leave.

Every object the push brings that the mirror (= upstream) does not have yet is scanned, not
just the tips, whatever kind of ref it goes to: each added line of every new commit's diff
and its message; every tag object on the way from a pushed id to what it names (message,
tagger, name); every new blob and tree name a tag reaches without a commit (a tag of a blob
or a tree); and the ref names themselves. The bottle's own secret values are looked for in
the forms egress checks (``bottle.runtime.egress.dlp``), and gitleaks runs over the same
content. A finding names the commit (or tag), file, line and rule, and the match only
redacted: its first characters and its length.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bottle.runtime.egress import dlp
from bottle.runtime.git_gate import ZERO, RefUpdate

#: A push of more commits than this is refused rather than scanned for ever.
MAX_COMMITS = 5000
#: Long lines are scanned in pieces of this many characters, each overlapping the next by
#: ``LINE_OVERLAP`` (longer than any secret form), so nothing hides past a cut.
LINE_PIECE = 1 << 16
LINE_OVERLAP = 1 << 13
#: A line longer than this cannot be scanned: the push is refused (fail closed).
MAX_LINE = 1 << 24
#: A blob a tag reaches without a commit is read whole: one larger is refused.
MAX_BLOB = 1 << 26
#: Tags of tags: a chain longer than this is refused rather than followed.
MAX_TAG_DEPTH = 16
#: New objects under a tag of a tree: more than this is refused rather than scanned.
MAX_OBJECTS = 200_000
#: A redacted match shows this many characters of the matched text.
SHOWN_CHARS = 4
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
    commit: str  # the commit, or for what no commit brings the pushed id (a tag, a blob)
    where: str  # "path:line", "commit message", "tag v1:3", "ref name"
    rule: str
    match: str = ""  # redacted: "ghp_… (40 chars)"; never the matched text itself

    def __str__(self) -> str:
        shown = f" [{self.match}]" if self.match else ""
        return f"{self.commit[:12]} {self.where}: {self.rule}{shown}"

    def redacted(self, secrets: Sequence[dlp.KnownSecret]) -> Finding:
        """The finding with its place redacted: a path, a tag or ref name is the agent's
        text, and a secret in it (a directory, a file, a submodule named after it) must
        not ride out in the very finding that reports it (message, gate log, audit log)."""
        where = dlp.redact(self.where, secrets)
        return self if where == self.where else Finding(self.commit, where, self.rule, self.match)


def redact(text: str) -> str:
    """What a finding may show of a matched text: its first characters and its length."""
    text = text.strip()
    return f"{text[:SHOWN_CHARS]}… ({len(text)} chars)" if text else ""


def _shape_match(kind: str, text: str) -> str:
    for name, pattern in dlp.TOKEN_PATTERNS:
        if name == kind:
            found = pattern.search(text)
            if found:
                return redact(found.group(0))
    return ""


def new_commits(git_dir: Path, tips: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Commits reachable from ``tips`` and from no ref the mirror has (upstream's)."""
    if not tips:
        return []
    # The tips on stdin: a push of thousands of refs must not outgrow argv.
    args = ["rev-list", f"--max-count={MAX_COMMITS + 1}", "--stdin", "--not", "--all"]
    done = _git(git_dir, args, env, stdin="\n".join(tips) + "\n")
    commits = done.split()
    if len(commits) > MAX_COMMITS:
        raise ScanError(
            f"the push brings more than {MAX_COMMITS} new commits; push fewer at a time"
        )
    return commits


def _git(git_dir: Path, args: Sequence[str], env: Mapping[str, str], stdin: str = "") -> str:
    done = subprocess.run(
        ["git", "--git-dir", str(git_dir), *args],
        input=stdin,
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
                if target != "/dev/null":  # a name is published too; never shown as found
                    yield commit, "a file name", path
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
            if finding.form:  # a bottle secret: the rule names it; no character of it shows
                found.append(Finding(commit, where, f"{finding.kind} ({finding.form})"))
            else:
                found.append(Finding(commit, where, finding.kind, _shape_match(finding.kind, text)))
    return found


def scan_gitleaks(git_dir: Path, commits: Sequence[str], env: Mapping[str, str]) -> list[Finding]:
    """gitleaks over exactly these commits (it reads them with ``git log``, so the push's
    quarantined objects are visible through the inherited environment)."""
    if not commits:
        return []
    revs = " ".join(commits)
    argv = ["--source", str(git_dir), "--log-opts", f"--no-walk=unsorted {revs}"]
    results = _gitleaks(argv, {**env, "GIT_DIR": str(git_dir)})
    return [
        Finding(str(item.get("Commit", "")), _where(item), _rule(item), _gitleaks_match(item))
        for item in results
    ]


def scan_gitleaks_texts(texts: Sequence[Text], env: Mapping[str, str]) -> list[Finding]:
    """gitleaks over what no commit brings (tag objects, blobs under a tag), as files."""
    texts = [t for t in texts if t.numbered]
    if not texts:
        return []
    with tempfile.TemporaryDirectory(prefix="gitleaks-src-") as tmp:
        for index, text in enumerate(texts):
            (Path(tmp) / f"{index}.txt").write_text(text.text, errors="replace")
        results = _gitleaks(["--no-git", "--source", tmp], env)
    found = []
    for item in results:
        name = Path(str(item.get("File", ""))).name.removesuffix(".txt")
        if not name.isdigit() or int(name) >= len(texts):
            raise ScanError("gitleaks named a file it was not given")
        text = texts[int(name)]
        where = f"{text.label}:{item.get('StartLine', '?')}"
        found.append(Finding(text.owner, where, _rule(item), _gitleaks_match(item)))
    return found


def _where(item: Mapping[str, object]) -> str:
    return f"{item.get('File', '?')}:{item.get('StartLine', '?')}"


def _rule(item: Mapping[str, object]) -> str:
    return f"gitleaks:{item.get('RuleID', '?')}"


def _gitleaks_match(item: Mapping[str, object]) -> str:
    """gitleaks's own redaction (``--redact``) of the match, shortened like ours."""
    match = str(item.get("Match", "") or "")
    return redact(match) if "REDACTED" not in match else match[:40]


def _gitleaks(args: Sequence[str], env: Mapping[str, str]) -> list[dict[str, object]]:
    with tempfile.TemporaryDirectory(prefix="gitleaks-") as tmp:
        report = Path(tmp) / "report.json"
        argv = [
            "gitleaks",
            "detect",
            *args,
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
        ]
        try:
            done = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                env=dict(env),
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
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise ScanError("gitleaks wrote an unreadable report")
    return results


def gitleaks_available() -> bool:
    return any(
        os.access(Path(d) / "gitleaks", os.X_OK) for d in os.environ.get("PATH", "").split(":") if d
    )


@dataclass(frozen=True)
class Text:
    """Content a push brings that no commit's diff shows: a tag object, a blob under a tag,
    a file or ref name. ``numbered`` texts are scanned line by line (``label:line``)."""

    owner: str  # the pushed id that brings it
    label: str
    text: str
    numbered: bool = True


@dataclass(frozen=True)
class PushContent:
    commits: list[str]  # every new commit, as :func:`new_commits`
    texts: list[Text]
    trees: list[tuple[str, str]] = field(default_factory=list)  # (pushed id, tree) via a tag


class _Objects:
    """One ``git cat-file --batch`` for reading objects one at a time, framed by size."""

    def __init__(self, git_dir: Path, env: Mapping[str, str]) -> None:
        self.proc = subprocess.Popen(
            ["git", "--git-dir", str(git_dir), "cat-file", "--batch"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=dict(env),
        )

    def read(self, oid: str) -> tuple[str, bytes]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(oid.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().split()
        if len(header) != 3 or not header[2].isdigit():
            raise ScanError(f"cannot read object {oid[:12]}")
        size = int(header[2])
        if size > MAX_BLOB:
            raise ScanError(f"object {oid[:12]} is larger than {MAX_BLOB >> 20} MiB")
        body = self.proc.stdout.read(size)
        self.proc.stdout.read(1)  # the newline after each object
        return header[1].decode(), body

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=SCAN_TIMEOUT)


def _tag_fields(body: bytes) -> tuple[str, str]:
    """(target id, tag name) from a tag object's header."""
    head, _, _ = body.partition(b"\n\n")
    fields = dict(
        line.split(b" ", 1) for line in head.split(b"\n") if b" " in line and not line[:1].isspace()
    )
    target = fields.get(b"object", b"").decode("ascii", "replace")
    if not re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", target):
        raise ScanError("a tag object names no target")
    return target, fields.get(b"tag", b"?").decode("utf-8", "replace")


def _new_objects(git_dir: Path, root: str, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(id, path) of every object under ``root`` (a tree or blob) the mirror lacks."""
    listed = _git(git_dir, ["rev-list", "--objects", "--stdin", "--not", "--all"], env, root + "\n")
    objects = []
    for line in listed.splitlines():
        oid, _, path = line.partition(" ")
        objects.append((oid, path))
        if len(objects) > MAX_OBJECTS:
            raise ScanError(f"a tag brings more than {MAX_OBJECTS} new objects")
    return objects


def read_push(git_dir: Path, updates: Sequence[RefUpdate], env: Mapping[str, str]) -> PushContent:
    """Everything the ref updates would publish: each pushed id is followed through any
    chain of tags to what it finally names; a commit there brings its new history, a tree or
    a blob brings every new object under it (no diff shows those: they are read whole)."""
    tips = list(dict.fromkeys(u.new for u in updates if u.new != ZERO))
    texts = [Text(u.new, "ref name", u.ref, numbered=False) for u in updates if u.new != ZERO]
    commit_tips: list[str] = []
    trees: list[tuple[str, str]] = []
    objects = _Objects(git_dir, env)
    try:
        for tip in tips:
            oid, (kind, body) = tip, objects.read(tip)
            for _ in range(MAX_TAG_DEPTH):
                if kind != "tag":
                    break
                oid, name = _tag_fields(body)
                texts.append(Text(tip, f"tag {name}", body.decode("utf-8", "replace")))
                kind, body = objects.read(oid)
            else:
                raise ScanError(f"a chain of more than {MAX_TAG_DEPTH} tags is not followed")
            if kind == "commit":
                commit_tips.append(oid)
                continue
            if kind == "tree":
                trees.append((tip, oid))
            for new, path in _new_objects(git_dir, oid, env):
                kind, body = objects.read(new)
                label = path or f"{kind} {new[:12]}"
                if path:
                    texts.append(Text(tip, "a file name under the tag", path, numbered=False))
                if kind == "blob":
                    texts.append(Text(tip, label, body.decode("utf-8", "replace")))
    finally:
        objects.close()
    return PushContent(new_commits(git_dir, commit_tips, env), texts, trees)


def text_lines(texts: Iterable[Text]) -> Iterator[tuple[str, str, str]]:
    """(owner, where, piece) of each text, as :func:`added_lines` yields a commit's."""
    for text in texts:
        if not text.numbered:
            for piece in _pieces(text.text):
                yield text.owner, text.label, piece
            continue
        for lineno, line in enumerate(text.text.split("\n"), start=1):
            if len(line) > MAX_LINE:
                raise ScanError(f"a line of more than {MAX_LINE} characters cannot be scanned")
            for piece in _pieces(line):
                yield text.owner, f"{text.label}:{lineno}", piece


def scan_push(
    git_dir: Path,
    updates: Sequence[RefUpdate],
    secrets: Sequence[dlp.KnownSecret],
    env: Mapping[str, str],
) -> list[Finding]:
    """Every finding in what the push would publish; ``ScanError`` if it cannot be scanned."""
    return scan_content(git_dir, read_push(git_dir, updates, env), secrets, env)


def scan_content(
    git_dir: Path,
    content: PushContent,
    secrets: Sequence[dlp.KnownSecret],
    env: Mapping[str, str],
) -> list[Finding]:
    """Every finding in ``content`` (as :func:`read_push` read it)."""
    lines = itertools.chain(text_lines(content.texts), added_lines(git_dir, content.commits, env))
    findings = scan_known(lines, secrets)
    findings += scan_gitleaks(git_dir, content.commits, env)
    findings += scan_gitleaks_texts(content.texts, env)
    return [finding.redacted(secrets) for finding in findings]
