"""git-gate's policy and scan against real git repositories (each test runs git, the way
the hook does), and the host side's helpers as git and ssh-keygen run them.

The rest of git-gate's host module and runtime, in pytest's process, is in
tests/unit/test_git_gate.py, whose helpers these tests share; the hook inside a real
``git receive-pack`` and the server are in tests/process/test_git_gate.py.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from bottle.runtime import git_gate as gate
from bottle.runtime.egress import dlp
from bottle.runtime.git_gate import (
    GateRemote,
    PushPolicy,
    RefUpdate,
    gitlinks,
    policy,
    scan,
    upstream,
)
from tests.unit.test_git_gate import GITHUB, KEY, SECRET, commit, git


def test_https_token_reaches_git_through_a_helper_not_argv_or_config(tmp_path: Path) -> None:
    remote = GateRemote(name="o", url="https://10.9.9.9/r.git", token_ref="TOK")
    conn = upstream.connect(
        remote, config=tmp_path, secrets=tmp_path, environ={"TOK": "t0ken-xyz", "OTHER": "x"}
    )
    assert conn.env["TOK"] == "t0ken-xyz" and "OTHER" not in conn.env
    assert "t0ken-xyz" not in json.dumps({k: v for k, v in conn.env.items() if k != "TOK"})
    assert "t0ken-xyz" not in conn.url
    # the helper, run as git runs it, answers with the token from the environment
    helper = next(v for k, v in conn.env.items() if v.startswith("!f()"))
    out = subprocess.run(
        ["sh", "-c", helper[1:] + " get"], env=conn.env, capture_output=True, text=True, check=True
    )
    assert "password=t0ken-xyz" in out.stdout and "username=x-access-token" in out.stdout


def test_fingerprints_of_a_known_hosts_text() -> None:
    [fp] = upstream.fingerprints(f"o ssh-ed25519 {KEY}\n")
    assert fp.startswith("ED25519 SHA256:")


# -- policy and scan over real repositories --------------------------------------------------


@pytest.fixture
def repo_pair(tmp_path: Path) -> tuple[Path, Path, str]:
    """A work repository and a bare mirror that has its first commit."""
    work, mirror = tmp_path / "work", tmp_path / "mirror.git"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    first = commit(work, "README", "hello\n")
    git(tmp_path, "init", "-q", "--bare", str(mirror))
    git(work, "push", "-q", str(mirror), "main")
    return work, mirror, first


@pytest.fixture
def scan_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The bottle's secret as the gate is told it, and a stand-in gitleaks on PATH that
    finds nothing (the real one runs in the integration tests); set for the test."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "gitleaks"
    fake.write_text(
        '#!/bin/sh\nwhile [ $# -gt 0 ]; do [ "$1" = --report-path ] && echo \'[]\' > "$2"; shift; done\n'
    )
    fake.chmod(0o755)
    env = {"BOTTLE_DLP_SECRETS": "S", "S": SECRET, "PATH": f"{bindir}:{os.environ['PATH']}"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_policy_refuses_tags_deletes_and_force_by_default(
    repo_pair: tuple[Path, Path, str],
) -> None:
    work, mirror, first = repo_pair
    second = commit(work, "a", "a\n")
    git(work, "push", "-q", str(mirror), "main")  # mirror has first and second
    git(work, "reset", "-q", "--hard", first)
    rewritten = commit(work, "b", "b\n")
    updates = [
        RefUpdate(ref="refs/heads/main", old=second, new=rewritten),
        RefUpdate(ref="refs/tags/v1", old=gate.ZERO, new=first),
        RefUpdate(ref="refs/heads/gone", old=first, new=gate.ZERO),
        RefUpdate(ref="refs/notes/x", old=gate.ZERO, new=first),
        RefUpdate(ref="refs/heads/new", old=gate.ZERO, new=rewritten),
    ]
    git(work, "push", "-q", str(mirror), "HEAD:refs/heads/tmp")  # so the mirror has the objects
    out = policy.refusals(PushPolicy(), updates, mirror, os.environ)
    assert len(out) == 4
    assert "force push" in out[0] and "tags are not pushed" in out[1]
    assert "deleting a ref" in out[2] and "only branches" in out[3]
    allowed = PushPolicy(refs=("refs/heads/*", "refs/tags/*"), force=("*",), delete=("*",))
    assert policy.refusals(allowed, updates[:3], mirror, os.environ) == []
    assert policy.refusals(PushPolicy(refs=()), updates[-1:], mirror, os.environ)[0].endswith(
        "push is false)"
    )
    specs = policy.refspecs(allowed, updates[:3], mirror, os.environ)
    assert specs == [
        f"--force-with-lease=refs/heads/main:{second}", f"+{rewritten}:refs/heads/main",
        f"{first}:refs/tags/v1", f"--force-with-lease=refs/heads/gone:{first}", ":refs/heads/gone",
    ]  # fmt: skip


def test_scan_reads_every_new_commit_with_file_and_line(repo_pair: tuple[Path, Path, str]) -> None:
    work, mirror, _first = repo_pair
    commit(work, "conf.txt", f"a\nb\ntoken = {SECRET}\n", message="add conf")
    b64 = base64.b64encode(f"x:{SECRET}".encode()).decode()
    commit(work, "other.txt", f"one\n{b64}\n", message="encoded")
    commit(work, "conf.txt", "a\nkey = 'x' # gitleaks:allow\n", message=f"clean up {GITHUB}")
    tip = commit(work, "last.txt", "fine\n", message="tip is clean")
    git(work, "push", "-q", str(mirror), "HEAD:refs/heads/incoming")
    git(mirror, "update-ref", "-d", "refs/heads/incoming")  # as if still in quarantine
    commits = scan.new_commits(mirror, [tip], os.environ)
    assert len(commits) == 4
    secrets = dlp.known_secrets(["S"], {"S": SECRET})
    found = {
        (f.where, f.rule)
        for f in scan.scan_known(scan.added_lines(mirror, commits, os.environ), secrets)
    }
    assert found == {
        ("conf.txt:3", "secret:S (plain)"),
        ("other.txt:2", "secret:S (base64)"),
        ("commit message", "github-token"),
        ("conf.txt:2", "gitleaks:allow comment (not honoured here)"),
    }


def test_content_cannot_pose_as_a_header_end_a_message_or_hide_past_a_cut(
    repo_pair: tuple[Path, Path, str],
) -> None:
    """Found by review: each of these once hid a secret from the gate's own scan."""
    work, mirror, _first = repo_pair
    # A content line "++ X" is "+++ X" in a -U0 diff: once taken for a file header.
    commit(work, "a.txt", f"fine\n++ {SECRET}\n", message="a")
    # A message line ending in \x02 once ended the message early for the parser.
    commit(work, "b.txt", "b\n", message=f"fix\x02\nand {SECRET}")
    # A secret after the first 64 KiB of one line was once cut off.
    tip = commit(work, "c.min.js", "a" * 70_000 + SECRET + "\n", message="c")
    git(work, "push", "-q", str(mirror), "HEAD:refs/heads/incoming")
    git(mirror, "update-ref", "-d", "refs/heads/incoming")
    commits = scan.new_commits(mirror, [tip], os.environ)
    secrets = dlp.known_secrets(["S"], {"S": SECRET})
    found = {
        (f.where, f.rule)
        for f in scan.scan_known(scan.added_lines(mirror, commits, os.environ), secrets)
    }
    assert ("a.txt:2", "secret:S (plain)") in found
    assert ("commit message", "secret:S (plain)") in found
    assert ("c.min.js:1", "secret:S (plain)") in found


# -- what no commit brings: tags, tag targets, names -------------------------------------


def _scan_pushed(work: Path, mirror: Path, *refs: str) -> set[tuple[str, str, str]]:
    """Push ``refs`` from ``work`` as a receive-pack would see them (objects in, refs not
    yet moved), scan them with the real scan; {(owner, where, rule)}."""
    ids = [git(work, "rev-parse", ref).strip() for ref in refs]
    specs = [f"{ref}:refs/incoming/{n}" for n, ref in enumerate(refs)]
    git(work, "push", "-q", str(mirror), *specs)
    for n in range(len(refs)):
        git(mirror, "update-ref", "-d", f"refs/incoming/{n}")
    names = [ref if ref.startswith("refs/") else f"refs/tags/{ref}" for ref in refs]
    updates = [RefUpdate(ref=r, old=gate.ZERO, new=i) for r, i in zip(names, ids, strict=True)]
    secrets = dlp.known_secrets(["S"], {"S": SECRET})
    return {
        (f.commit, f.where, f.rule) for f in scan.scan_push(mirror, updates, secrets, os.environ)
    }


def test_scan_reads_every_form_of_tag(
    repo_pair: tuple[Path, Path, str], scan_env: dict[str, str]
) -> None:
    work, mirror, first = repo_pair
    blob = subprocess.run(["git", "hash-object", "-w", "--stdin"], cwd=work, input=f"a\n{SECRET}\n",
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    git(work, "tag", "blob-tag", blob)
    (work / "deep").mkdir()
    commit(work, "deep/k.txt", f"x\n{GITHUB}\n")
    tree = git(work, "rev-parse", "HEAD^{tree}").strip()
    git(work, "reset", "-q", "--hard", first)  # the tree is reachable from no branch
    git(work, "tag", "tree-tag", tree)
    git(work, "tag", "-a", "-m", f"release\n\nnotes {SECRET}", "annotated", first)
    git(work, "tag", "-a", "-m", "wrapper", "tag-of-tag", "annotated", env={"GIT_ADVICE": "0"})
    git(work, "tag", "-a", "-m", "clean", "clean", first)
    ids = {t: git(work, "rev-parse", t).strip() for t in ("blob-tag", "tree-tag", "annotated",
                                                         "tag-of-tag", "clean")}  # fmt: skip
    found = _scan_pushed(work, mirror, "blob-tag", "tree-tag", "annotated", "tag-of-tag", "clean")
    assert (ids["blob-tag"], f"blob {blob[:12]}:2", "secret:S (plain)") in found
    assert (ids["tree-tag"], "deep/k.txt:2", "github-token") in found
    assert (ids["annotated"], "tag annotated:8", "secret:S (plain)") in found
    # A tag of a tag: the outer one is followed to the inner one's message.
    assert (ids["tag-of-tag"], "tag annotated:8", "secret:S (plain)") in found
    assert not {f for f in found if f[0] == ids["clean"]}


def test_scan_reads_ref_and_file_names(
    repo_pair: tuple[Path, Path, str], scan_env: dict[str, str]
) -> None:
    work, mirror, _ = repo_pair
    (work / "dir").mkdir()
    tip = commit(work, f"dir/{GITHUB}.txt", "fine\n")
    git(work, "branch", f"leak-{SECRET}")
    found = _scan_pushed(work, mirror, f"refs/heads/leak-{SECRET}")
    assert (tip, "ref name", "secret:S (plain)") in found
    assert (tip, "a file name", "github-token") in found


def test_scan_refuses_a_tag_chain_it_will_not_follow(
    repo_pair: tuple[Path, Path, str], scan_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work, mirror, first = repo_pair
    git(work, "tag", "-a", "-m", "one", "t1", first)
    git(work, "tag", "-a", "-m", "two", "t2", "t1", env={"GIT_ADVICE": "0"})
    monkeypatch.setattr(scan, "MAX_TAG_DEPTH", 1)
    with pytest.raises(scan.ScanError, match="chain of more than 1 tags"):
        _scan_pushed(work, mirror, "t2")


def test_gitleaks_findings_have_their_path_redacted(
    tmp_path: Path, repo_pair: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work, mirror, _ = repo_pair
    (work / SECRET).mkdir()
    commit(work, f"{SECRET}/a.txt", "x\n")
    item = {"Commit": "c" * 40, "File": f"{SECRET}/a.txt", "StartLine": 1, "RuleID": "r"}
    monkeypatch.setattr(scan, "_gitleaks", lambda args, env: [item])
    found = _scan_pushed(work, mirror, "refs/heads/main")
    assert ("c" * 40, "[secret:S]/a.txt:1", "gitleaks:r") in found
    assert not any(SECRET in where for _o, where, _r in found)


# -- submodule entries (gitlinks) -------------------------------------------------------


def _gitlink(work: Path, path: str, target: str, message: str = "link") -> str:
    git(work, "update-index", "--add", "--cacheinfo", f"160000,{target},{path}")
    git(work, "commit", "-qm", message)
    return git(work, "rev-parse", "HEAD").strip()


def _gitlink_refusals(
    work: Path, mirror: Path, ref: str, policy_: PushPolicy | None = None
) -> list[str]:
    """What the gate's gitlink check says of pushing ``ref``, as a receive-pack sees it."""
    new = git(work, "rev-parse", ref).strip()
    git(work, "push", "-q", str(mirror), f"{ref}:refs/incoming/x")
    git(mirror, "update-ref", "-d", "refs/incoming/x")
    name = ref if ref.startswith("refs/") else f"refs/tags/{ref}"
    content = scan.read_push(mirror, [RefUpdate(ref=name, old=gate.ZERO, new=new)], os.environ)
    return gitlinks.refusals(policy_ or PushPolicy(), mirror, content, os.environ)


def test_a_gitlink_to_a_commit_nobody_has_is_refused(repo_pair: tuple[Path, Path, str]) -> None:
    work, mirror, first = repo_pair
    arbitrary = "c0ffee" + "11" * 17  # 20 bytes of the agent's choosing
    tip = _gitlink(work, "vendor/lib", arbitrary)
    [refusal] = _gitlink_refusals(work, mirror, "refs/heads/main")
    assert refusal.startswith(f"vendor/lib (in {tip[:12]}): a submodule entry naming commit")
    assert "git.remotes[].submodules" in refusal
    assert _gitlink_refusals(work, mirror, "refs/heads/main", PushPolicy(submodules=True)) == []
    # One to a commit upstream has carries nothing new: let by.
    git(work, "reset", "-q", "--hard", first)
    _gitlink(work, "self", first)
    assert _gitlink_refusals(work, mirror, "refs/heads/main") == []


def test_a_gitlink_is_found_in_a_merge_a_root_commit_and_a_tagged_tree(
    repo_pair: tuple[Path, Path, str],
) -> None:
    work, mirror, first = repo_pair
    # A merge that brings a gitlink neither parent has (made by hand: a merge "evil" twin).
    commit(work, "a.txt", "a\n")
    side = git(work, "rev-parse", "HEAD").strip()
    git(work, "reset", "-q", "--hard", first)
    commit(work, "b.txt", "b\n")
    git(work, "merge", "-q", "--no-commit", side)
    git(work, "update-index", "--add", "--cacheinfo", f"160000,{'ab' * 20},evil")
    git(work, "commit", "-qm", "merge")
    assert [r.split(" ")[0] for r in _gitlink_refusals(work, mirror, "refs/heads/main")] == ["evil"]
    # A merge of a side that already brought its gitlink is judged on that side alone.
    git(work, "reset", "-q", "--hard", first)
    _gitlink(work, "side-link", "cd" * 20)
    linked = git(work, "rev-parse", "HEAD").strip()
    git(work, "reset", "-q", "--hard", first)
    commit(work, "c.txt", "c\n")
    git(work, "merge", "-q", "--no-edit", linked)
    assert [r.split(" ")[:3] for r in _gitlink_refusals(work, mirror, "refs/heads/main")] == [
        ["side-link", "(in", f"{linked[:12]}):"]
    ]
    # A new history of its own (a root commit), and a tag naming a tree.
    git(work, "checkout", "-q", "--orphan", "fresh")
    git(work, "rm", "-rq", "--cached", ".")
    _gitlink(work, "rootlink", "ef" * 20)
    assert len(_gitlink_refusals(work, mirror, "refs/heads/fresh")) == 1
    git(work, "tag", "treetag", "fresh^{tree}")
    [tagged] = _gitlink_refusals(work, mirror, "treetag")
    assert tagged.startswith("rootlink (in")
