"""git-gate against real SSH and HTTPS git servers: one bottle, one server container, for
the whole module.

The server is a container on the bottle's ``egress`` network (as ``git.test`` and, with the
wrong key pinned, ``git2.test``) serving one repository over SSH and over HTTPS (``git
http-backend``, Basic auth with the gate's token). Its host key, the gate's client key, the
token and the TLS certificate are made per run; the test CA (given to bottle through
``BOTTLE_EXTRA_CA_CERTS``) is kept between runs so the sidecar image is too. The agent clones
outside /workspace, as an agent would.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bottle.engine.images import ensure_base
from bottle.operator import audit_log, proposal_queue
from tests.conftest import run_cli, user_owned, wait_for, write
from tests.integration.conftest import labelled, mcp_started

pytestmark = pytest.mark.docker

SERVER_DIR = Path(__file__).resolve().parents[1] / "git_server"
KNOWN_SECRET = "bottle-known-secret-9f8e7d6c5b4a"
#: Token-shaped, but no bottle knows it: found by shape (and by gitleaks).
GITHUB_SHAPED = "ghp_" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7bC0eF3hJ6"
UPSTREAM_REPO = "/srv/git/repo.git"
SSH_URL = "git@git.test:repo.git"
HTTPS_URL = "https://git.test/repo.git"
#: The same repository under a policy that takes tags and notes.
OPEN_URL = "ssh://git@git.test/srv/git/repo.git"
URLS = pytest.mark.parametrize("url", [SSH_URL, HTTPS_URL], ids=["ssh", "https"])
IDENTITY = (
    "export GIT_AUTHOR_NAME=agent GIT_AUTHOR_EMAIL=agent@bottle.test "
    "GIT_COMMITTER_NAME=agent GIT_COMMITTER_EMAIL=agent@bottle.test; "
)

BOTTLE = """---
agent: {{provider: shell}}
supervise: true
egress:
  dlp_secrets: [IT_KNOWN_SECRET]
git:
  remotes:
    - {{name: origin, url: 'git@git.test:repo.git', key_ref: IT_GIT_KEY, host_key: '{host_key}'}}
    - {{name: wrong, url: 'git@git2.test:repo.git', key_ref: IT_GIT_KEY,
       host_key: '{wrong_key}'}}
    - {{name: web, url: 'https://git.test/repo.git', token_ref: IT_GIT_TOKEN}}
    - {{name: open, url: 'ssh://git@git.test/srv/git/repo.git', key_ref: IT_GIT_KEY,
       host_key: '{host_key}', push: ['refs/heads/*', 'refs/notes/*'], tags: true}}
---
"""


def keygen(path: Path) -> tuple[str, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "it", "-f", str(path)],
                   check=True)  # fmt: skip
    private = path.read_text()
    public = " ".join(Path(f"{path}.pub").read_text().split()[:2])
    return private, public


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def cached_ca() -> Path:
    """A CA kept between runs (a new one would mean a new sidecar image every run)."""
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bottle-it" / "git-ca"
    )
    if not (cache / "ca.pem").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
                "ca.pem", "-days", "3650", "-subj", "/CN=bottle-it-git-ca", cwd=cache)  # fmt: skip
    return cache


def server_cert(ca: Path, keys: Path) -> None:
    (keys / "san.ext").write_text("subjectAltName=DNS:git.test,DNS:git2.test\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
            "server.csr", "-subj", "/CN=git.test", cwd=keys)  # fmt: skip
    openssl("x509", "-req", "-in", "server.csr", "-CA", str(ca / "ca.pem"), "-CAkey",
            str(ca / "ca.key"), "-CAcreateserial", "-CAserial", str(keys / "ca.srl"),
            "-out", "server.pem", "-days", "30", "-extfile", "san.ext", cwd=keys)  # fmt: skip
    os.chmod(keys / "server.key", 0o644)


def docker(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check)


class Gate:
    """The started bottle, its server container and the secrets the tests look for."""

    def __init__(self, instance: Any, server: str, client_key: str, token: str) -> None:
        self.instance = instance
        self.server = server
        self.client_key = client_key
        self.token = token

    def sh(self, script: str) -> Any:
        return self.instance.exec(["sh", "-c", IDENTITY + script], capture=True)

    def upstream(self, ref: str = "refs/heads/main") -> str:
        done = docker("exec", self.server, "git", "--git-dir", UPSTREAM_REPO, "rev-parse",
                      "--verify", "-q", ref, check=False)  # fmt: skip
        return done.stdout.strip()

    def clone(self, name: str, url: str = SSH_URL) -> Any:
        return self.sh(f"rm -rf ~/src/{name} && git clone -q {url} ~/src/{name}")


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[Gate]:
    from bottle import Bottle
    from bottle.settings import Settings

    tmp = tmp_path_factory.mktemp("git-gate")
    keys = tmp / "keys"
    keys.mkdir()
    _, host_pub = keygen(keys / "host_ed25519")
    _, wrong_pub = keygen(tmp / "wrong")
    client_key, client_pub = keygen(tmp / "client")
    (keys / "client.pub").write_text(client_pub + "\n")
    ca = cached_ca()
    server_cert(ca, keys)
    token = "it-token-" + uuid.uuid4().hex
    os.chmod(keys / "host_ed25519", 0o644)  # read by the server's root through the bind

    home = tmp / "home"
    write(home / "bottles" / "gated.md", BOTTLE.format(host_key=host_pub, wrong_key=wrong_pub))
    write(home / "agents" / "gated.md", "---\nbottle: gated\n---\n")
    workdir = tmp / "work"
    workdir.mkdir()
    user_owned(workdir)  # the agent runs as the workspace's owner, never root
    environ = {**os.environ, "BOTTLE_HOME": str(home), "IT_GIT_KEY": client_key,
               "IT_KNOWN_SECRET": KNOWN_SECRET, "IT_GIT_TOKEN": token,
               "BOTTLE_EXTRA_CA_CERTS": str(ca / "ca.pem")}  # fmt: skip
    settings = Settings.from_env(environ)
    server = f"bottle-it-git-{uuid.uuid4().hex[:8]}"
    with Bottle("gated", cwd=workdir, settings=settings, environ=environ).start() as instance:
        meta = instance.metadata
        image = f"bottle-it-git-server:{uuid.uuid4().hex[:8]}"
        # On the base the sidecar was built from: the sidecar image has no apt (one layer,
        # only what the sidecars run).
        base = ensure_base(settings, lambda _line: None)
        docker("build", "-q", "-t", image, "--build-arg", f"BASE={base}",
               str(SERVER_DIR))  # fmt: skip
        try:
            docker("run", "-d", "--name", server, "--network", f"{meta.compose_project}_egress",
                   "--network-alias", "git.test", "--network-alias", "git2.test",
                   "--label", "bottle.test=git-server", "-v", f"{keys}:/keys:ro",
                   "-e", f"GIT_TOKEN={token}", image)  # fmt: skip
            ready = Gate(instance, server, client_key, token)
            wait_for(ready.upstream, 60, "the git server's repository")
            yield ready
        finally:
            docker("rm", "-f", server, check=False)
            docker("rmi", "-f", image, check=False)
    slug = meta.slug
    assert not labelled("container", slug) and not labelled("network", slug)
    shutil.rmtree(tmp, ignore_errors=True)


@URLS
def test_clone_commit_push_round_trip_lands_upstream(gate: Gate, url: str) -> None:
    name = "web" if url == HTTPS_URL else "origin"
    before = gate.upstream()
    done = gate.clone(f"round-{name}", url)
    assert done.exit_code == 0, done.stderr
    script = (
        f"cd ~/src/round-{name} && echo 'work from the agent over {name}' > work.txt && git add work.txt && "
        "git commit -qm 'agent work' && git push origin main 2>&1; echo rc=$?; "
        "git rev-parse HEAD"
    )
    done = gate.sh(script)
    assert "rc=0" in done.stdout and f"git-gate: pushed to {name}" in done.stdout, done.stdout
    head = done.stdout.split()[-1]
    assert head != before and gate.upstream() == head
    # The agent's clone did not go anywhere but the gate.
    remote = gate.sh(f"cd ~/src/round-{name} && git ls-remote --get-url origin").stdout
    assert f"git-gate:9418/{name}.git" in remote
    log = (gate.instance.state.path / "logs" / "git-gate.jsonl").read_text()
    assert '"op":"fetch"' in log and '"op":"push"' in log and '"upstream":"ok"' in log
    # The first clone found the mirror cold: relayed upstream (over ssh or https) and
    # stored, so the push after it was judged against upstream's refs in the mirror.
    fetches = [r for r in map(json.loads, log.splitlines())
               if r["op"] == "fetch" and r["remote"] == name]  # fmt: skip
    listed, pack = fetches[:2]  # the push waited for the gate to store the relayed pack
    assert listed["decision"] == "allow" and listed["reason"].startswith("relayed:"), listed
    assert pack["decision"] == "allow", pack
    assert pack["reason"].startswith("relayed: the agent got the pack the mirror stored"), pack
    # Audited: `bottle audit verify` imports the push and vouches for the chain.
    home = gate.instance.state.path.parents[1]
    verified = run_cli("audit", "verify", gate.instance.slug, cwd=home,
                       env={"BOTTLE_HOME": str(home)})  # fmt: skip
    assert verified.returncode == 0 and "audit log intact" in verified.stderr + verified.stdout
    pushes = [json.loads(e.after or "{}") for e in audit_log(gate.instance).entries()
              if e.action == "git-push"]  # fmt: skip
    # Two records: "sending", written and fsynced before the push went upstream, then its
    # outcome, so a push that landed is on record even if the gate died meanwhile.
    sending, landed = [p for p in pushes if any(r["new"] == head for r in p["refs"])]
    assert (sending["upstream"], sending["scan"]) == ("sending", "clean")
    assert (landed["remote"], landed["scan"], landed["upstream"]) == (name, "clean", "ok")
    assert landed["refs"][0]["old"] == before


@pytest.mark.parametrize(
    ("content", "rule"),
    [
        (KNOWN_SECRET, "secret:IT_KNOWN_SECRET (plain)"),
        (
            base64.b64encode(f"token={KNOWN_SECRET}".encode()).decode(),
            "secret:IT_KNOWN_SECRET (base64)",
        ),
        (GITHUB_SHAPED, "github-token"),
    ],
    ids=["plain", "base64", "token-shaped"],
)
@URLS
def test_a_push_with_a_secret_is_refused_and_upstream_unchanged(
    gate: Gate, content: str, rule: str, url: str
) -> None:
    before = gate.upstream()
    assert gate.clone("leak", url).exit_code == 0
    # The secret is in the first of two commits: every new commit is scanned, not the tip.
    script = (
        f"cd ~/src/leak && printf 'ok\\nvalue = %s\\n' '{content}' > conf.txt && git add conf.txt && "
        "git commit -qm one && git rm -q conf.txt && git commit -qm two && "
        "git push origin main 2>&1; echo rc=$?"
    )
    done = gate.sh(script)
    out = done.stdout
    assert "rc=0" not in out, out
    assert "refused" in out and "conf.txt:2" in out and rule in out, out
    assert "supervise" in out  # how to ask
    assert content not in out  # a finding names the rule, never the text
    assert gate.upstream() == before


def test_gitleaks_runs_on_every_push(gate: Gate, tmp_path: Path) -> None:
    private, _ = keygen(tmp_path / "throwaway")
    assert gate.clone("leaks").exit_code == 0
    put = gate.instance.exec(["sh", "-c", "cat > ~/src/leaks/deploy_key"], stdin=private.encode())
    assert put.exit_code == 0
    script = "cd ~/src/leaks && git add deploy_key && git commit -qm key && git push origin main 2>&1; echo rc=$?"
    out = gate.sh(script).stdout
    assert "rc=0" not in out and "deploy_key:1" in out and "gitleaks:private-key" in out, out


def test_wrong_pinned_host_key_refuses_the_clone_naming_both_keys(gate: Gate) -> None:
    done = gate.clone("wrong", "git@git2.test:repo.git")
    assert done.exit_code != 0
    assert "does not match the key pinned for remote 'wrong'" in done.stderr, done.stderr
    assert done.stderr.count("SHA256:") >= 2 and "ED25519" in done.stderr


@pytest.mark.parametrize(
    ("script", "why"),
    [
        ("git tag v1 && git push origin v1", "tags are not pushed"),
        ("git commit -q --amend -m rewritten && git push -f origin main", "force push"),
        ("git push origin :main", "deleting a ref is refused"),
    ],
    ids=["tag", "force", "delete"],
)
@URLS
def test_default_policy_refuses_tags_force_and_delete(
    gate: Gate, script: str, why: str, url: str
) -> None:
    before = gate.upstream()
    tags = docker("exec", gate.server, "git", "--git-dir", UPSTREAM_REPO, "tag").stdout
    assert gate.clone("policy", url).exit_code == 0
    out = gate.sh(f"cd ~/src/policy && {script} 2>&1; echo rc=$?").stdout
    assert "rc=0" not in out and why in out, out
    assert gate.upstream() == before
    assert docker("exec", gate.server, "git", "--git-dir", UPSTREAM_REPO, "tag").stdout == tags


def test_the_agent_cannot_reach_the_upstream_directly(gate: Gate) -> None:
    # Both of the server's doors (sshd on 22, the smart-HTTP server on 443), on both names.
    for host in ("git.test", "git2.test"):
        for port in (22, 443):
            done = gate.sh(f"timeout 10 bash -c 'echo > /dev/tcp/{host}/{port}' 2>&1; echo rc=$?")
            assert "rc=0" not in done.stdout, (host, port, done.stdout)
    ssh = gate.sh(
        "timeout 20 ssh -o BatchMode=yes -o StrictHostKeyChecking=no git@git.test true 2>&1; echo rc=$?"
    )
    assert "rc=0" not in ssh.stdout
    # Nor through egress, whose answer is its own refusal: no route lets git's traffic out,
    # over plain HTTP or over TLS to the very URL the gate fetches from.
    for url in ("http://git.test/", f"{HTTPS_URL}/info/refs?service=git-upload-pack"):
        proxied = gate.sh(f"curl -sS -w '\\n%{{http_code}}' '{url}' 2>&1")
        body, _, code = proxied.stdout.rpartition("\n")
        assert code == "403", (url, proxied.stdout)
        assert json.loads(body)["error"] == "egress_refused", (url, body)


def test_the_gate_credential_is_nowhere_in_the_agent_nor_the_state_dir(gate: Gate) -> None:
    body = [line for line in gate.client_key.splitlines() if "PRIVATE KEY" not in line]
    # Every OpenSSH key starts with the same header bytes: look for its own key material.
    needle = body[2][10:50]
    assert len(needle) >= 30
    found = gate.sh(
        f"grep -rl --exclude-dir=proc --exclude-dir=sys -e '{needle}' / 2>/dev/null; "
        f"cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c -e '{needle}'; env | grep -c IT_GIT_KEY"
    )
    lines = found.stdout.split()
    assert lines == ["0", "0"], found.stdout
    token = gate.sh(
        f"grep -rl --exclude-dir=proc --exclude-dir=sys -e '{gate.token}' / 2>/dev/null; "
        f"cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c -e '{gate.token}'"
    )
    assert token.stdout.split() == ["0"], token.stdout
    for path in gate.instance.state.path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert needle.encode() not in data and gate.token.encode() not in data, path


@URLS
def test_upstreams_rejection_reaches_the_agent_and_nothing_moves(gate: Gate, url: str) -> None:
    assert gate.clone("rejected", url).exit_code == 0
    script = (
        "cd ~/src/rejected && echo x > p.txt && git add p.txt && git commit -qm p && "
        "git push origin HEAD:refs/heads/protected 2>&1; echo rc=$?; git ls-remote origin"
    )
    out = gate.sh(script).stdout
    assert "rc=0" not in out and "upstream says no to refs/heads/protected" in out, out
    assert "refs/heads/protected" not in out.split("rc=")[1]  # not in the gate's mirror
    assert gate.upstream("refs/heads/protected") == ""


def test_metadata_and_ls_show_the_remotes_never_the_credential(gate: Gate) -> None:
    remotes = gate.instance.metadata.sidecar_info["git-gate"]["remotes"]
    assert [(r["name"], r["url"]) for r in remotes] == [
        ("origin", SSH_URL), ("wrong", "git@git2.test:repo.git"), ("web", HTTPS_URL),
        ("open", OPEN_URL),
    ]  # fmt: skip
    home = gate.instance.state.path.parents[1]
    done = run_cli("ls", "--json", cwd=home, env={"BOTTLE_HOME": str(home)})
    assert done.returncode == 0, done.stderr
    [row] = [r for r in json.loads(done.stdout) if r["slug"] == gate.instance.slug]
    assert row["sidecar_info"]["git-gate"]["remotes"] == remotes
    assert gate.token not in done.stdout and "PRIVATE KEY" not in done.stdout


def cli(gate: Gate, *args: str) -> subprocess.CompletedProcess[str]:
    home = gate.instance.state.path.parents[1]
    return run_cli(*args, cwd=home, env={"BOTTLE_HOME": str(home)})


def test_git_push_allow_approved_lets_that_push_through_once(gate: Gate) -> None:
    assert gate.clone("allow").exit_code == 0
    leak = (
        f"cd ~/src/allow && echo 'fixture = {GITHUB_SHAPED}' > fixture.txt && "
        "git add fixture.txt && git commit -qm fixture && git push origin main 2>&1; "
        "echo rc=$?; git rev-parse HEAD"
    )
    out = gate.sh(leak).stdout
    tip = out.split()[-1]
    before = gate.upstream()
    assert "rc=0" not in out and "git-push-allow" in out, out
    assert f"remote=origin ref=refs/heads/main commit={tip}" in out
    queue = proposal_queue(gate.instance)

    # A push the gate never refused (the commit before): nothing to let through.
    parent = gate.sh("cd ~/src/allow && git rev-parse HEAD~").stdout.strip()
    never = {"remote": "origin", "ref": "refs/heads/main", "commit": parent,
             "finding": "nothing", "justification": "j"}  # fmt: skip
    proc = mcp_started(gate.instance, "git-push-allow", never)
    (bogus,) = wait_for(lambda: queue.list(status="pending").proposals, 30, "the proposal")
    done = cli(gate, "approve", gate.instance.slug, str(bogus.id), "--yes")
    assert done.returncode == 2, done.stderr
    assert f"git-gate never refused a push of {parent[:12]} to origin refs/heads/main" in (
        done.stderr
    )
    assert "Traceback" not in done.stderr and queue.get(bogus.id).status == "pending"
    assert cli(gate, "reject", gate.instance.slug, str(bogus.id), "--reason", "no").returncode == 0
    proc.communicate(timeout=60)

    # The agent's own account of the findings is a lie: the operator is shown the gate's.
    asked = {"remote": "origin", "ref": "refs/heads/main", "commit": tip,
             "finding": "only a harmless test string", "justification": "a fake token"}  # fmt: skip
    proc = mcp_started(gate.instance, "git-push-allow", asked)
    (proposal,) = wait_for(lambda: queue.list(status="pending").proposals, 30, "the proposal")
    assert proposal.tool == "git-push-allow" and proposal.payload.model_dump()["commit"] == tip
    assert gate.upstream() == before  # asking moved nothing
    # Pending (the agent's call timed out, or the operator has not decided): still refused.
    out = gate.sh("cd ~/src/allow && git push origin main 2>&1; echo rc=$?").stdout
    assert "rc=0" not in out and "git-push-allow" in out, out
    assert gate.upstream() == before
    unconfirmed = cli(gate, "approve", gate.instance.slug, str(proposal.id))
    assert unconfirmed.returncode == 2 and "no terminal to confirm it" in unconfirmed.stderr
    assert queue.get(proposal.id).status == "pending"
    done = cli(gate, "approve", gate.instance.slug, str(proposal.id), "--yes",
               "--reason", "a fixture, not a secret")  # fmt: skip
    assert done.returncode == 0, done.stderr
    shown = done.stderr
    assert f"{tip[:12]} fixture.txt:1: github-token [ghp_… (40 chars)]" in shown, shown
    assert "gitleaks:github-pat" in shown and "only a harmless test string" not in shown
    assert GITHUB_SHAPED not in shown
    answer, _ = proc.communicate(timeout=60)
    assert "approved" in answer.lower() and "Push exactly that commit again" in answer, answer

    out = gate.sh("cd ~/src/allow && git push origin main 2>&1; echo rc=$?").stdout
    assert "rc=0" in out and f"as the operator allowed (proposal {proposal.id})" in out, out
    assert gate.upstream() == tip

    # Once: the next secret is refused again, and upstream stays where the allowed push left it.
    again = (
        f"cd ~/src/allow && echo 'v = {KNOWN_SECRET}' > more.txt && git add more.txt && "
        "git commit -qm more && git push origin main 2>&1; echo rc=$?"
    )
    out = gate.sh(again).stdout
    assert "rc=0" not in out and "secret:IT_KNOWN_SECRET (plain)" in out, out
    assert gate.upstream() == tip

    entries = audit_log(gate.instance).entries()
    assert ("approve", "git-push-allow", proposal.id) in [
        (e.action, e.tool, e.proposal_id) for e in entries
    ]
    pushes = [json.loads(e.after or "{}") for e in entries if e.action == "git-push"]
    [allowed] = [
        p for p in pushes if p["allowed_by"] == [proposal.id] and p["upstream"] != "sending"
    ]
    assert (allowed["scan"], allowed["upstream"], allowed["refs"][0]["new"]) == (
        "allowed", "ok", tip,
    )  # fmt: skip
    # Imported, the push that landed retires its allowance for good.
    allow_dir = gate.instance.state.live_config("git-gate") / "allow"
    assert list(allow_dir.iterdir()) == []
    assert any(p["scan"] == "findings" and p["decision"] == "refuse" and
               p["refs"][0]["new"] != tip for p in pushes)  # fmt: skip


CLEAN = "nothing-secret-here"
#: Each form of content no commit brings, made with "$V" in it and pushed as refs/tags/t-$N.
TAG_FORMS = {
    "blob": "b=$(printf 'x\\n%s\\n' \"$V\" | git hash-object -w --stdin) && git tag t-$N $b",
    # A tree of its own (mktree), not the index: what the clone holds is not this test's.
    "tree": (
        "b=$(printf 'x\\n%s\\n' \"$V\" | git hash-object -w --stdin) && "
        "t=$(printf '100644 blob %s\\tf\\n' $b | git mktree) && git tag t-$N $t"
    ),
    "annotated": 'git tag -a -m "release notes $V" t-$N',
    # Only the outer tag is pushed; the inner one, holding the value, comes with it.
    "tag-of-tag": 'git tag -a -m "inner $V" i-$N && git tag -a -m outer t-$N i-$N',
}


def upstream_tags(gate: Gate) -> list[str]:
    return docker("exec", gate.server, "git", "--git-dir", UPSTREAM_REPO, "tag").stdout.split()


@pytest.mark.parametrize("form", list(TAG_FORMS))
def test_a_secret_a_tag_brings_is_refused(gate: Gate, form: str) -> None:
    """Under a policy that takes tags: the clean tag lands, the same tag with the secret is
    refused, so the secret (not the tag) is what the gate refuses."""
    assert gate.clone(f"tags-{form}", OPEN_URL).exit_code == 0
    make = TAG_FORMS[form]
    clean = gate.sh(
        f"cd ~/src/tags-{form} && export V={CLEAN} N={form}-clean && {make} && "
        "git push origin refs/tags/t-$N 2>&1; echo rc=$?"
    ).stdout
    assert "rc=0" in clean and "git-gate: pushed to open" in clean, clean
    assert f"t-{form}-clean" in upstream_tags(gate)
    tags = upstream_tags(gate)
    leak = gate.sh(
        f"cd ~/src/tags-{form} && export V={KNOWN_SECRET} N={form}-leak && {make} && "
        "git push origin refs/tags/t-$N 2>&1; echo rc=$?"
    ).stdout
    assert "rc=0" not in leak and "secret:IT_KNOWN_SECRET (plain)" in leak, leak
    assert KNOWN_SECRET not in leak
    assert upstream_tags(gate) == tags


def test_a_token_in_a_tag_message_is_found_by_gitleaks_too(gate: Gate) -> None:
    assert gate.clone("tags-gitleaks", OPEN_URL).exit_code == 0
    script = (
        f"cd ~/src/tags-gitleaks && git tag -a -m 'fixture {GITHUB_SHAPED}' t-gl && "
        "git push origin refs/tags/t-gl 2>&1; echo rc=$?"
    )
    out = gate.sh(script).stdout
    assert "rc=0" not in out and "github-token [ghp_… (40 chars)]" in out, out
    assert "gitleaks:github-pat" in out and GITHUB_SHAPED not in out, out


# -- the neighbours, as an attacker tries them ---------------------------------------------

#: Each: a script run in a fresh clone of the open remote with "$V" as the value to leak;
#: it pushes. Run with a clean value it lands, with the secret it is refused.
NEIGHBOURS = {
    "notes": 'git notes --ref=$N add -m "reviewed $V" HEAD && git push origin refs/notes/$N',
    "ref-name": "git push origin HEAD:refs/heads/topic-$V",
    "shallow": (
        "cd .. && rm -rf shallow-$N && git clone -q --depth 1 " + OPEN_URL + " shallow-$N && "
        'cd shallow-$N && echo "v = $V" > s.txt && git add s.txt && git commit -qm s && '
        "git push origin HEAD:refs/heads/shallow-$N"
    ),
    # Many refs in one push; the value is on one branch only, and then none lands.
    "many-refs": (
        "for i in $(seq 150); do git branch many-$N-$i; done && git checkout -q -b many-$N-x && "
        'echo "v = $V" > m.txt && git add m.txt && git commit -qm m && '
        "git push origin 'refs/heads/many-*:refs/heads/many-*'"
    ),
}


def upstream_refs(gate: Gate) -> str:
    return docker("exec", gate.server, "git", "--git-dir", UPSTREAM_REPO, "for-each-ref").stdout


@pytest.mark.parametrize("form", list(NEIGHBOURS))
def test_a_neighbour_ref_or_push_form_is_scanned_too(gate: Gate, form: str) -> None:
    script = NEIGHBOURS[form]
    for value, lands in ((CLEAN, True), (KNOWN_SECRET, False)):
        name = f"nb-{form}-{'clean' if lands else 'leak'}"
        assert gate.clone(name, OPEN_URL).exit_code == 0
        before = upstream_refs(gate)
        out = gate.sh(
            f"cd ~/src/{name} && export V={value} N={name} && ({script}) 2>&1; echo rc=$?"
        ).stdout
        if lands:
            assert "rc=0" in out and "refused" not in out, out
            assert upstream_refs(gate) != before
        else:
            assert "secret:IT_KNOWN_SECRET (plain)" in out, out
            # (The agent's own git names the refs it pushed; the gate never says the value.)
            gates = [line for line in out.splitlines() if line.startswith("remote:")]
            assert not [line for line in gates if KNOWN_SECRET in line], out
            assert upstream_refs(gate) == before


@pytest.mark.parametrize(
    ("flags", "why"),
    [("-o ci.skip", "does not support push options"), ("--signed", "does not support --signed")],
    ids=["push-option", "signed"],
)
def test_push_options_and_signed_pushes_are_refused(gate: Gate, flags: str, why: str) -> None:
    assert gate.clone("flags").exit_code == 0
    before = gate.upstream()
    out = gate.sh(
        f"cd ~/src/flags && echo f > f.txt && git add f.txt && git commit -qm f && "
        f"git push {flags} origin main 2>&1; echo rc=$?"
    ).stdout
    assert "rc=0" not in out and why in out, out
    assert gate.upstream() == before


#: A thin pack by hand: commit B's objects as deltas against commit A's, which the agent
#: never pushed, sent straight to the gate's receive-pack with B for refs/heads/thin.
THIN_PUSH = r"""
import subprocess, sys, urllib.request
a, b = sys.argv[1], sys.argv[2]
pack = subprocess.run(["git", "pack-objects", "--thin", "--stdout", "--revs", "-q"],
                      input=f"{b}\n^{a}\n".encode(), capture_output=True, check=True).stdout
line = f"{'0' * 40} {b} refs/heads/thin\0report-status\n".encode()
body = b"%04x" % (len(line) + 4) + line + b"0000" + pack
req = urllib.request.Request("http://git-gate:9418/origin.git/git-receive-pack", data=body,
    headers={"Content-Type": "application/x-git-receive-pack-request"})
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    print(opener.open(req, timeout=60).read().decode("latin-1"))
except Exception as exc:
    print("failed:", exc)
"""


def test_a_thin_pack_against_bases_the_gate_lacks_lands_nothing(gate: Gate) -> None:
    assert gate.clone("thin").exit_code == 0
    put = gate.instance.exec(["sh", "-c", "cat > /tmp/thin.py"], stdin=THIN_PUSH.encode())
    assert put.exit_code == 0
    script = (
        "cd ~/src/thin && seq 3000 > big.txt && git add big.txt && git commit -qm a && "
        "a=$(git rev-parse HEAD) && sed -i 's/^1500$/changed/' big.txt && git commit -qam b && "
        "python3 /tmp/thin.py $a $(git rev-parse HEAD)"
    )
    out = gate.sh(script).stdout
    assert "unpack ok" not in out and "ok refs/heads/thin" not in out, out
    assert gate.upstream("refs/heads/thin") == ""


# -- session 4: the neighbours again, on the final tree ----------------------------------

#: Pushes that reach past what a branch push may change: each refused whole by the policy.
POLICY_NEIGHBOURS = {
    "replace": ("git replace $(git rev-parse HEAD) $(git rev-parse HEAD~1) && "
                "git push origin 'refs/replace/*'", "only branches"),
    # --mirror sends every local ref (remote-tracking ones too) and deletes upstream's others.
    "mirror": ("git push --mirror origin", "only branches"),
    "gitlink": ("git update-index --add --cacheinfo 160000,$(printf 'ab%.0s' $(seq 20)),vendor/x "
                "&& git commit -qm sub && git push origin HEAD:refs/heads/gitlink",
                "a submodule entry naming commit abababababab"),
}  # fmt: skip


@pytest.mark.parametrize("form", list(POLICY_NEIGHBOURS))
def test_a_push_past_branches_is_refused_whole(gate: Gate, form: str) -> None:
    script, why = POLICY_NEIGHBOURS[form]
    name = f"pn-{form}"
    assert gate.clone(name, OPEN_URL).exit_code == 0
    before = upstream_refs(gate)
    out = gate.sh(
        f"cd ~/src/{name} && echo {form} > f.txt && git add f.txt && git commit -qm f && "
        f"({script}) 2>&1; echo rc=$?"
    ).stdout
    assert "rc=0" not in out and why in out and "refused by the bottle's push policy" in out, out
    assert upstream_refs(gate) == before


#: URLs of the declared remotes that git's insteadOf (a plain prefix match) does not rewrite,
#: and ways for the agent's git to pick its own transport: none may reach upstream.
URL_VARIANTS = {
    "upper-case": ("", "git@GIT.test:repo.git"),
    "trailing-slash": ("", "git@git.test:repo.git/"),
    "no-dot-git": ("", "git@git.test:repo"),
    "ssh-form": ("", "ssh://git@git.test/~/repo.git"),
    "ssh-port": ("", "ssh://git@git.test:22/srv/git/repo.git"),
    "https-no-dot-git": ("", "https://git.test/repo"),
    "https-upper-case": ("", "https://GIT.TEST/repo.git"),
    "ext": ("-c protocol.ext.allow=always", "'ext::ssh -o BatchMode=yes git@git.test %S repo.git'"),
    "ssh-command": ("-c core.sshCommand='ssh -o BatchMode=yes -o StrictHostKeyChecking=no' "
                    "-c protocol.allow=always", "git@GIT.test:repo.git"),
    "file": ("-c protocol.file.allow=always", f"file://{UPSTREAM_REPO}"),
}  # fmt: skip


@pytest.mark.parametrize("variant", list(URL_VARIANTS))
def test_a_remote_url_variant_reaches_no_upstream(gate: Gate, variant: str) -> None:
    opts, target = URL_VARIANTS[variant]
    assert gate.clone(f"uv-{variant}").exit_code == 0
    before = upstream_refs(gate)
    out = gate.sh(
        f"cd ~/src/uv-{variant} && echo 'v = {KNOWN_SECRET}' > v.txt && git add v.txt && "
        f"git commit -qm v && GIT_SSH_COMMAND='ssh -o ConnectTimeout=10' timeout 60 "
        f"git {opts} push {target} HEAD:refs/heads/variant 2>&1; echo rc=$?"
    ).stdout
    assert "rc=0" not in out, out
    assert upstream_refs(gate) == before and gate.upstream("refs/heads/variant") == ""
