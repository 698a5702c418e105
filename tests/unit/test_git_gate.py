"""git-gate without Docker: the host module, and the runtime's policy and scan against real
git repositories.

The hook inside a real ``git receive-pack`` (a new interpreter per push) and the server on
loopback are in tests/process/test_git_gate.py, which shares these helpers.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from bottle.errors import ManifestError
from bottle.manifest import load_manifest
from bottle.plan import PlanOptions, resolve_plan
from bottle.runtime import git_gate as gate
from bottle.runtime.egress import dlp
from bottle.runtime.git_gate import (
    GateConfig,
    GateRemote,
    PushPolicy,
    RefUpdate,
    gitlinks,
    policy,
    scan,
    upstream,
)
from bottle.settings import Settings
from bottle.sidecars.git_gate import GIT_GATE, GitRemote, host_key_entry
from tests.conftest import write

KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIMWAcDWKd8LMGI26G9JH4h6os0LeNMs3oJ7aA+X71ZSo"
SECRET = "known-secret-value-4242"
IDENT = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(cwd: Path, *args: str, check: bool = True, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=False,
        env={**os.environ, **IDENT, **(env or {})},
    )  # fmt: skip
    if check and done.returncode != 0:
        raise AssertionError(done.stderr)
    return done.stdout + done.stderr


def commit(repo: Path, name: str, text: str, message: str = "c") -> str:
    (repo / name).write_text(text)
    git(repo, "add", name)
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD").strip()


# -- the host module -----------------------------------------------------------------------


def plan_of(home: Path, repo: Path, remotes: str, environ: dict[str, str] | None = None):
    write(home / "bottles" / "g.md", f"---\ngit:\n  remotes:\n{remotes}---\n")
    return resolve_plan(
        load_manifest(home=home, cwd=repo),
        PlanOptions(bottle="g", cwd=repo, suffix="abcde"),
        settings=Settings.from_env({"BOTTLE_HOME": str(home)}),
        environ=environ or {},
    )


SSH_REMOTE = f"    - {{name: origin, url: 'git@h.test:r.git', key_ref: KEY, host_key: 'ssh-ed25519 {KEY}'}}\n"


@pytest.mark.parametrize(
    ("remote", "field", "words"),
    [
        ("{name: o, url: 'git@h.test:r.git', key_ref: K}", "host_key", "no pinned host key"),
        ("{name: o, url: 'ssh://git@h.test/r.git', host_key: 'ssh-ed25519 AAAA'}", "host_key",
         "not a pinned SSH host key"),
        (f"{{name: o, url: 'git@h.test:r', token_ref: T, host_key: 'ssh-ed25519 {KEY}'}}",
         "token_ref", "takes key_ref"),
        ("{name: o, url: 'https://h.test/r.git', key_ref: K}", "key_ref", "https remote"),
    ],
)  # fmt: skip
def test_bad_remotes_are_refused_naming_file_and_field(
    home: Path, repo: Path, remote: str, field: str, words: str
) -> None:
    with pytest.raises(ManifestError, match=words) as info:
        plan_of(home, repo, f"    - {remote}\n")
    assert f"g.md: git.remotes[0].{field}" in str(info.value) and info.value.hint


@pytest.mark.parametrize(
    ("fields", "refs", "force", "delete"),
    [
        ({}, ("refs/heads/*",), (), ()),
        ({"push": False, "tags": True}, (), (), ()),
        ({"tags": True, "force": True}, ("refs/heads/*", "refs/tags/*"), ("*",), ()),
        ({"push": ["main", "refs/heads/f/*"], "delete": ["f/*"]},
         ("refs/heads/main", "refs/heads/f/*"), (), ("refs/heads/f/*",)),
    ],
)  # fmt: skip
def test_push_settings_become_the_gate_policy(
    fields: dict[str, object],
    refs: tuple[str, ...],
    force: tuple[str, ...],
    delete: tuple[str, ...],
) -> None:
    remote = GitRemote.model_validate({"name": "o", "url": "https://h.test/r.git", **fields})
    assert remote.policy() == PushPolicy(refs=refs, force=force, delete=delete)


def test_host_key_entry_takes_a_known_hosts_line_or_a_bare_key() -> None:
    assert (
        host_key_entry(f"h.test,1.2.3.4 ssh-ed25519 {KEY} comment", "o") == f"o ssh-ed25519 {KEY}"
    )
    assert host_key_entry(f"ssh-ed25519 {KEY}", "o") == f"o ssh-ed25519 {KEY}"
    with pytest.raises(ValueError):  # the blob says ed25519, the line says rsa
        host_key_entry(f"ssh-rsa {KEY}", "o")


def test_files_service_and_description_carry_names_never_values(home: Path, repo: Path) -> None:
    plan = plan_of(home, repo, SSH_REMOTE, environ={"KEY": "-----BEGIN the key value"})
    sub = plan.sidecars["git-gate"]
    files = GIT_GATE.files(sub)
    config = GateConfig.model_validate_json(files[gate.CONFIG_FILE])
    assert config.remotes[0].key_ref == "KEY" and config.remotes[0].policy.refs == ("refs/heads/*",)
    assert files["origin.known_hosts"] == f"origin ssh-ed25519 {KEY}\n".encode()
    service = GIT_GATE.compose_service(sub, plan)
    assert "KEY" in service["environment"] and "BOTTLE_DLP_SECRETS=KEY" in service["environment"]
    assert service["networks"] == ["internal", "egress"]
    # The hardened /tmp every sidecar has, then the gate's own (exec: the pre-receive hook).
    assert service["tmpfs"] == [
        "/tmp:size=64m,mode=1777",
        "/var/lib/git-gate:exec,mode=1777",
        "/run/git-gate:mode=1777",
    ]
    assert service["labels"]["bottle.git-gate.remotes"] == "origin=git@h.test:r.git"
    text = json.dumps([service, GIT_GATE.describe(sub)]) + b"".join(files.values()).decode()
    assert "the key value" not in text
    assert GIT_GATE.describe(sub) == {
        "remotes": [{"name": "origin", "url": "git@h.test:r.git", "push": ["refs/heads/*"]}]
    }
    assert GIT_GATE.unavailable() is None


# -- upstream --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "host", "port", "user", "path", "at"),
    [
        ("git@h.test:me/r.git", "ssh", "h.test", None, "git", "me/r.git", "ssh://git@10.0.0.1/~/me/r.git"),
        ("ssh://git@h.test:2222/srv/r.git", "ssh", "h.test", 2222, "git", "/srv/r.git",
         "ssh://git@10.0.0.1:2222/srv/r.git"),
        ("https://h.test/me/r.git", "https", "h.test", None, None, "/me/r.git", "https://10.0.0.1/me/r.git"),
    ],
)  # fmt: skip
def test_remote_urls_parse_and_point_at_the_checked_address(
    url: str, scheme: str, host: str, port: int | None, user: str | None, path: str, at: str
) -> None:
    target = upstream.parse_url(url)
    assert (target.scheme, target.host, target.port, target.user, target.path) == (
        scheme, host, port, user, path,
    )  # fmt: skip
    assert target.url_for("10.0.0.1") == at


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "169.254.169.254", "0.0.0.0"])
def test_loopback_link_local_and_metadata_addresses_are_refused(host: str) -> None:
    with pytest.raises(upstream.UpstreamError, match="never connects to"):
        upstream.check_address(host, 22)


def test_private_addresses_are_allowed() -> None:
    assert upstream.check_address("10.1.2.3", 22) == "10.1.2.3"


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


def test_ssh_keys_are_written_0600_and_dropped_from_the_environment(tmp_path: Path) -> None:
    environ = {
        "K": "-----BEGIN OPENSSH PRIVATE KEY-----\r\nabc\r\n-----END OPENSSH PRIVATE KEY-----"
    }
    remote = GateRemote(name="o", url="git@10.9.9.9:r.git", key_ref="K")
    upstream.prepare_keys([remote], environ, tmp_path / "keys")
    key = upstream.key_path(tmp_path / "keys", "o")
    assert key.stat().st_mode & 0o777 == 0o600 and key.read_text().endswith("KEY-----\n")
    assert "\r" not in key.read_text() and "K" not in environ
    conn = upstream.connect(remote, config=tmp_path, secrets=tmp_path / "keys", environ=environ)
    assert (
        "StrictHostKeyChecking=yes" in conn.env["GIT_SSH_COMMAND"]
        and str(key) in conn.env["GIT_SSH_COMMAND"]
    )
    assert f"UserKnownHostsFile={tmp_path / 'o.known_hosts'}" in conn.env["GIT_SSH_COMMAND"]


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


GITHUB = "ghp_" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"


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


def test_a_finding_shows_the_match_redacted_never_whole() -> None:
    [found] = scan.scan_known([("c" * 40, "a.txt:1", f"token {GITHUB}")], ())
    assert found.match == f"ghp_… ({len(GITHUB)} chars)" and GITHUB not in str(found)
    assert str(found).endswith(f"github-token [ghp_… ({len(GITHUB)} chars)]")
    secrets = dlp.known_secrets(["S"], {"S": SECRET})
    [known] = scan.scan_known([("c" * 40, "a.txt:1", SECRET)], secrets)
    assert known.match == "" and SECRET[:4] not in str(known)


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
