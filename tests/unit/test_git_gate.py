"""git-gate without Docker, in pytest's process: the host module, the manifest's remotes,
and the runtime's helpers that run no program.

The policy and scan against real git repositories are in tests/process/test_git_gate_scan.py,
the hook inside a real ``git receive-pack`` (a new interpreter per push) and the server on
loopback in tests/process/test_git_gate.py; both share these helpers.
"""

from __future__ import annotations

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


GITHUB = "ghp_" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"


def test_a_finding_shows_the_match_redacted_never_whole() -> None:
    [found] = scan.scan_known([("c" * 40, "a.txt:1", f"token {GITHUB}")], ())
    assert found.match == f"ghp_… ({len(GITHUB)} chars)" and GITHUB not in str(found)
    assert str(found).endswith(f"github-token [ghp_… ({len(GITHUB)} chars)]")
    secrets = dlp.known_secrets(["S"], {"S": SECRET})
    [known] = scan.scan_known([("c" * 40, "a.txt:1", SECRET)], secrets)
    assert known.match == "" and SECRET[:4] not in str(known)
