"""git-gate's hook and server as git runs them: a real ``git receive-pack`` runs the hook
(a new interpreter per push) in a mirror prepared with it, and the server on loopback is
reached by a real ``git clone``. No Docker; the real gitleaks runs in the integration tests.

Its policy and scan over real repositories are in tests/process/test_git_gate_scan.py, the
host module and the rest of the runtime in tests/unit/test_git_gate.py; these tests share
their helpers.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bottle.runtime import git_gate as gate
from bottle.runtime.git_gate import (
    GateConfig,
    GateRemote,
    PushPolicy,
    RefUpdate,
    hook,
    scan,
    upstream,
)
from bottle.runtime.git_gate import server as gate_server
from tests.process.test_git_gate_scan import _gitlink, _scan_pushed, repo_pair, scan_env
from tests.unit.test_git_gate import GITHUB, IDENT, SECRET, commit, git

__all__ = ["repo_pair", "scan_env"]  # fixtures of the scan's tests, used here too


# -- the hook inside a real receive-pack -----------------------------------------------------


SRC = str(Path(gate.__file__).parents[3])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A gate's config (one remote at a loopback address, never reached) and its work
    directory, prepared once for the module: a mirror with the hook, probed. A push the
    hook refuses, or one that fails upstream, leaves the mirror as it was; what a test
    leaves in the allowance directories, ``gate_env`` takes away."""
    root = tmp_path_factory.mktemp("gate")
    config, work = root / "config", root / "work"
    config.mkdir()
    remote = GateRemote(name="origin", url="ssh://git@127.0.0.1/r.git", key_ref="K")
    (config / gate.CONFIG_FILE).write_bytes(GateConfig(remotes=(remote,)).to_json())
    gate_server.Gate(
        gate.load_config({gate.CONFIG_ENV: str(config)}), work, {**os.environ, "PYTHONPATH": SRC}
    ).prepare()
    return config, work


@pytest.fixture
def gate_env(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    prepared: tuple[Path, Path],
    scan_env: dict[str, str],
) -> Iterator[dict[str, str]]:
    """The prepared gate, this test's log, status and key paths, and the scan's stand-in
    gitleaks (``scan_env``)."""
    config, work = prepared
    env = {
        **scan_env,
        gate.CONFIG_ENV: str(config),
        gate.LOG_ENV: str(tmp_path / "logs" / "git-gate.jsonl"),
        gate.STATUS_ENV: str(tmp_path / "status" / "git-gate.json"),
        gate.WORK_ENV: str(work),
        gate.SECRETS_ENV: str(tmp_path / "keys"),
        "PYTHONPATH": SRC,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        yield env
    finally:
        shutil.rmtree(config / gate.ALLOW_DIR, ignore_errors=True)
        shutil.rmtree(work / gate.USED_DIR, ignore_errors=True)
        assert not git(work / "mirrors" / "origin.git", "for-each-ref"), "a test moved a ref"


def own_work(env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A work directory of this test's own, not prepared yet (for a test that prepares one
    itself, or fetches into its mirror)."""
    work = tmp_path / "work"
    env[gate.WORK_ENV] = str(work)
    monkeypatch.setenv(gate.WORK_ENV, str(work))
    return work


def _gate(env: dict[str, str]) -> gate_server.Gate:
    """The gate of ``env``, as prepared."""
    return gate_server.Gate(gate.load_config(env), Path(env[gate.WORK_ENV]), os.environ)


def _push_through_hook(tmp_path: Path, env: dict[str, str], text: str) -> tuple[str, str]:
    mirror = _gate(env).mirror("origin")
    work = tmp_path / "agent"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    commit(work, "f.txt", text)
    out = git(work, "push", str(mirror), "main", check=False, env={gate.REMOTE_ENV: "origin"})
    return out, git(mirror, "for-each-ref")


def _leak_with_allowance(
    tmp_path: Path, env: dict[str, str], *, allow: str | None
) -> tuple[str, str, str]:
    """A push of a commit holding the secret; ``allow``: the commit the operator allowed
    ("tip" for the pushed one). (output, the mirror's refs, the tip)"""
    mirror = _gate(env).mirror("origin")
    work = tmp_path / "agent"
    work.mkdir(exist_ok=True)
    git(work, "init", "-q", "-b", "main")
    tip = commit(work, "f.txt", f"x\n{SECRET}\n")
    if allow is not None:
        allowance = gate.Allowance(
            remote="origin",
            ref="refs/heads/main",
            commit=tip if allow == "tip" else allow,
            proposal_id=7,
            findings=(f"{tip[:12]} f.txt:2: secret:S (plain)",),
        )
        allow_dir = Path(env[gate.CONFIG_ENV]) / gate.ALLOW_DIR
        allow_dir.mkdir(exist_ok=True)
        # Named for the pushed commit whatever it allows: the gate checks the content too.
        (allow_dir / gate.allowance_name("origin", "refs/heads/main", tip)).write_bytes(
            allowance.to_json()
        )
    out = git(work, "push", str(mirror), "main", check=False, env={gate.REMOTE_ENV: "origin"})
    return out, git(mirror, "for-each-ref"), tip


def _used(env: dict[str, str]) -> list[str]:
    used = Path(env[gate.WORK_ENV]) / gate.USED_DIR
    return sorted(p.name for p in used.iterdir()) if used.is_dir() else []


def test_an_allowance_for_the_pushed_commit_lets_its_findings_through(
    tmp_path: Path, gate_env: dict[str, str]
) -> None:
    out, refs, _ = _leak_with_allowance(tmp_path, gate_env, allow="tip")
    # Past the scan: the gate went on to push upstream (a loopback address it refuses).
    assert "pushing anyway, once, as the operator allowed (proposal 7)" in out, out
    assert "could not push to origin" in out and refs == ""
    record = json.loads(Path(gate_env[gate.LOG_ENV]).read_text().splitlines()[-1])
    assert record["scan"] == "allowed" and record["allowed_by"] == [7] and record["findings"]
    assert _used(gate_env) == []  # nothing reached upstream: the allowance is given back


def test_hook_refuses_a_secret_before_anything_moves(
    tmp_path: Path, gate_env: dict[str, str]
) -> None:
    out, refs, tip = _leak_with_allowance(tmp_path, gate_env, allow=None)
    assert (
        "secret:S (plain)" in out and "f.txt:2" in out and "supervise" in out and SECRET not in out
    )
    assert refs == ""
    [record] = [json.loads(line) for line in Path(gate_env[gate.LOG_ENV]).read_text().splitlines()]
    assert (
        record["op"] == "push" and record["decision"] == "refuse" and record["scan"] == "findings"
    )
    assert record["refs"][0]["ref"] == "refs/heads/main" and SECRET not in json.dumps(record)
    # Without an allowance: how to ask for one, naming exactly what was pushed.
    assert "refused" in out and "git-push-allow" in out
    assert f"remote=origin ref=refs/heads/main commit={tip}" in out, out
    assert "pushing anyway" not in out and _used(gate_env) == []


def test_an_allowance_for_another_commit_is_no_allowance(
    tmp_path: Path, gate_env: dict[str, str]
) -> None:
    out, refs, tip = _leak_with_allowance(tmp_path, gate_env, allow="b" * 40)
    assert "refused" in out and "git-push-allow" in out and refs == ""
    assert f"remote=origin ref=refs/heads/main commit={tip}" in out, out
    assert "pushing anyway" not in out and _used(gate_env) == []


def test_an_allowance_is_claimed_once(tmp_path: Path, gate_env: dict[str, str]) -> None:
    allowance = gate.Allowance(remote="origin", ref="refs/heads/x", commit="c" * 40, proposal_id=1)
    other = allowance.model_copy(update={"ref": "refs/heads/y"})
    assert hook.claim([allowance], gate_env)
    assert not hook.claim([other, allowance], gate_env)
    assert _used(gate_env) == [allowance.file_name]  # the failed claim took nothing
    hook.release([allowance], gate_env)
    assert hook.claim([other, allowance], gate_env)


def test_an_allowance_covers_only_the_commits_of_its_update(
    repo_pair: tuple[Path, Path, str], gate_env: dict[str, str]
) -> None:
    work, mirror, _ = repo_pair
    leak = commit(work, "a.txt", "a")
    git(work, "checkout", "-q", "-b", "side")
    other = commit(work, "b.txt", "b")
    git(work, "push", "-q", str(mirror), "main", "side")  # no hook in this mirror
    updates = [
        RefUpdate(ref="refs/heads/main", old=gate.ZERO, new=leak),
        RefUpdate(ref="refs/heads/side", old=gate.ZERO, new=other),
    ]
    allow_dir = Path(gate_env[gate.CONFIG_ENV]) / gate.ALLOW_DIR
    allow_dir.mkdir()

    def finding(sha: str, rule: str = "r") -> scan.Finding:
        return scan.Finding(commit=sha, where="a.txt:1", rule=rule)

    main = gate.Allowance(
        remote="origin",
        ref="refs/heads/main",
        commit=leak,
        proposal_id=3,
        findings=(str(finding(leak)), str(finding(other))),
    )
    (allow_dir / main.file_name).write_bytes(main.to_json())
    env = {**gate_env, "GIT_DIR": str(mirror)}
    for ref in ("refs/heads/main", "refs/heads/side"):
        git(mirror, "update-ref", "-d", ref)  # new again, as in a receive-pack's quarantine

    covered = hook.covering_allowances("origin", updates, [finding(leak)], mirror, env)
    assert covered == [main]
    assert hook.covering_allowances("origin", updates, [finding(other)], mirror, env) is None
    assert hook.covering_allowances("web", updates, [finding(leak)], mirror, env) is None
    # Only the findings the operator allowed: another one in the same commit is not.
    unseen = [finding(leak), finding(leak, rule="github-token")]
    assert hook.covering_allowances("origin", updates, unseen, mirror, env) is None


def test_hook_forwards_a_clean_push_and_a_refused_upstream_leaves_the_mirror(
    tmp_path: Path, gate_env: dict[str, str]
) -> None:
    out, refs = _push_through_hook(tmp_path, gate_env, "clean\n")
    # The remote is at a loopback address: the gate refuses to connect, the agent is told.
    assert "could not push to origin" in out and "never connects to" in out, out
    assert refs == ""
    record = json.loads(Path(gate_env[gate.LOG_ENV]).read_text().splitlines()[-1])
    assert record["decision"] == "error" and record["scan"] == "clean"


def test_hook_fails_closed_without_gitleaks(
    tmp_path: Path, gate_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (Path(gate_env["PATH"].split(":")[0]) / "gitleaks").unlink()
    out, refs = _push_through_hook(tmp_path, gate_env, "clean\n")
    assert "secret scan failed" in out and "gitleaks is not installed" in out and refs == ""


def _records(env: dict[str, str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in Path(env[gate.LOG_ENV]).read_text().splitlines()]


def _agent_with_refs(tmp_path: Path, refs: list[str]) -> Path:
    """An agent's repository with one commit and ``refs`` all naming it."""
    work = tmp_path / "agent"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    tip = commit(work, "f.txt", "fine\n")
    subprocess.run(
        ["git", "update-ref", "--stdin"], cwd=work, check=True, capture_output=True,
        input="".join(f"create {ref} {tip}\n" for ref in refs).encode(),
    )  # fmt: skip
    return work


def test_the_agent_sees_every_rule_its_push_broke_however_many_refs_broke_one() -> None:
    deletions = [f"refs/heads/b{n}: deleting a ref is refused (…)" for n in range(40)]
    refused = [*deletions, "refs/remotes/origin/x: only branches (refs/heads/…) are pushed"]
    text = hook.refusal_text("origin", refused, [])
    assert "only branches" in text and "… and 21 more" in text
    assert text.count("deleting a ref") == hook.SHOWN - 1


@pytest.mark.parametrize("digits", [40, 64], ids=["sha1", "sha256"])
def test_the_most_updates_a_push_may_make_are_read_whole(digits: int) -> None:
    """The input bound is the updates' bound in characters, with SHA-256 object names: a
    repository of either kind may push MAX_UPDATES refs, and one more is the refusal."""
    import io

    # Names as long as the total bound lets them be, every one of the most refs.
    width = gate.MAX_REF_BYTES_TOTAL // gate.MAX_UPDATES
    names = [f"refs/heads/b{n:04d}".ljust(width, "x") for n in range(gate.MAX_UPDATES + 1)]
    lines = [f"{'0' * digits} {'a' * digits} {ref}\n" for ref in names]
    updates, why = hook.read_updates(io.StringIO("".join(lines[:-1])))
    assert why is None and len(updates) == gate.MAX_UPDATES
    updates, why = hook.read_updates(io.StringIO("".join(lines)))
    assert updates == [] and why is not None


@pytest.mark.parametrize(
    ("refs", "why"),
    [
        # The reviewer's push: more refs than a push may make (each name long, too).
        ([f"refs/heads/b{n:04}-{'x' * 200}" for n in range(gate.MAX_UPDATES + 1)],
         f"{gate.MAX_UPDATES + 2} ref updates, more than the {gate.MAX_UPDATES}"),  # (+ main)
        # One name past the bound (in directories: a file name stops at 255 bytes).
        (["refs/heads/" + "/".join(["y" * 200] * 6)], "a ref name of 1216 bytes, longer than"),
    ],
    ids=["many-refs", "long-name"],
)  # fmt: skip
def test_a_push_too_big_to_record_is_refused_before_any_record_holds_it(
    tmp_path: Path, gate_env: dict[str, str], refs: list[str], why: str
) -> None:
    work = _agent_with_refs(tmp_path, refs)
    mirror = _gate(gate_env).mirror("origin")
    out = git(work, "push", str(mirror), "refs/heads/*:refs/heads/*", check=False,
              env={gate.REMOTE_ENV: "origin"})  # fmt: skip
    assert f"git-gate: push to origin refused: {why}" in out, out[:2000]
    assert f"Push at most {gate.MAX_UPDATES} refs at once" in out and "could not push" not in out
    assert git(mirror, "for-each-ref") == ""
    [record] = _records(gate_env)
    assert record["decision"] == "refuse" and record["refs"] == []
    assert str(record["reason"]).startswith(f"policy: {why}")
    # The reviewer's 300 refs of 20 KB made a 12 MB record; this one is a line.
    assert Path(gate_env[gate.LOG_ENV]).stat().st_size < 1024


def test_a_push_whose_record_cannot_be_written_never_goes_upstream(
    tmp_path: Path, gate_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The disk full (``/dev/full``: every write ENOSPC): the push is refused before the
    hook connects upstream, since a push that landed must have its record."""
    monkeypatch.setenv(gate.LOG_ENV, "/dev/full")
    out, refs = _push_through_hook(tmp_path, gate_env, "clean\n")
    assert "git-gate: push to origin refused: the gate could not record it" in out, out
    assert "No space left on device" in out and "nothing was pushed upstream" in out
    # The control of the test below: with a log to write, the same push goes upstream
    # (which, at a loopback address, the gate refuses to connect to).
    assert "could not push to origin" not in out and refs == ""


def test_the_record_of_a_push_is_on_disk_before_it_goes_upstream(
    tmp_path: Path, gate_env: dict[str, str]
) -> None:
    out, refs = _push_through_hook(tmp_path, gate_env, "clean\n")
    assert "could not push to origin" in out and refs == ""
    sending, final = _records(gate_env)
    assert (sending["upstream"], sending["reason"], sending["scan"]) == (
        "sending", "sending upstream", "clean",
    )  # fmt: skip
    assert sending["refs"] == final["refs"] and sending["id"] != final["id"]
    assert final["decision"] == "error" and final["upstream"] is None


# -- the server ------------------------------------------------------------------------------


@contextlib.contextmanager
def _serving(state: gate_server.Gate) -> Iterator[str]:
    """``state`` served on a free loopback port (its base URL) until the block ends."""
    httpd = gate_server.serve(state, "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _upstream_is(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate's connections upstream reach the local ``repo``."""
    conn = upstream.Connection(
        str(repo), {**os.environ, **IDENT}, upstream.parse_url("git@h:r"), "10.0.0.1"
    )
    monkeypatch.setattr(upstream, "connect", lambda *a, **k: conn)


def _prepared_without_relay(repo: Path, monkeypatch: pytest.MonkeyPatch) -> gate_server.Gate:
    """The gate of this environment, prepared, serving through http-backend (no relay),
    its upstream the local ``repo``."""
    state = gate_server.Gate(
        gate.load_config(os.environ), Path(os.environ[gate.WORK_ENV]), os.environ, relaying=False
    )
    state.prepare()
    _upstream_is(repo, monkeypatch)
    return state


@pytest.fixture
def served(tmp_path: Path, gate_env: dict[str, str]) -> Iterator[str]:
    with _serving(_gate(gate_env)) as url:
        yield url


def test_a_clone_through_the_server_shows_why_upstream_failed(tmp_path: Path, served: str) -> None:
    out = git(tmp_path, "clone", f"{served}/origin.git", "c", check=False)
    assert "git-gate: cannot fetch origin" in out and "never connects to" in out, out
    out = git(tmp_path, "clone", f"{served}/other.git", "d", check=False)
    assert "serves only this bottle's remotes: origin" in out, out


def test_no_request_reaches_the_hooks_probe_setting(gate_env: dict[str, str]) -> None:
    """The probe setting makes the hook pass a push unscanned: only the gate sets it, on its
    own probe. An agent's request names it in headers, in the query and in the path; the
    environment git's http-backend (and so the hook) gets has it nowhere."""
    import email.message

    headers = email.message.Message()
    for name in ("Bottle-Git-Gate-Probe", gate.PROBE_ENV, "Git-Protocol"):
        headers[name] = f"version=2:{gate.PROBE_ENV}=1"
    headers["Content-Type"] = "application/x-git-receive-pack-request"
    state = _gate(gate_env)
    [remote] = state.config.remotes
    env = state.cgi_env(
        remote,
        f"/origin.git/git-receive-pack?{gate.PROBE_ENV}=1",
        f"{gate.PROBE_ENV}=1",
        headers,
        3,
        protocol=gate_server.git_protocol(headers),
    )
    assert gate.PROBE_ENV not in env and gate.PROBE_ENV not in os.environ
    assert env["GIT_PROTOCOL"] == "version=2"  # the control: a header that is passed, alone
    assert not [k for k in env if "PROBE" in k.upper()]


def test_no_header_sets_a_git_variable(gate_env: dict[str, str]) -> None:
    """CGI would hand every header over as HTTP_*; the gate passes two as they are and the
    protocol version alone of Git-Protocol, so no header names a config, a git dir, an
    exec path or a hook."""
    import email.message

    headers = email.message.Message()
    evil = "/tmp/evil"
    for name in ("Git-Config-Count", "GIT_CONFIG_KEY_0", "Git-Config-Parameters", "Git-Dir",
                 "Git-Exec-Path", "Git-Core-Hookspath", "Http-Git-Protocol", "Path"):  # fmt: skip
        headers[name] = evil
    headers["Git-Protocol"] = f"version=2:GIT_CONFIG_COUNT=1:version=1\ncore.hooksPath={evil}"
    state = _gate(gate_env)
    [remote] = state.config.remotes
    protocol = gate_server.git_protocol(headers)
    env = state.cgi_env(remote, "/origin.git/git-receive-pack", "", headers, 3, protocol=protocol)
    assert not [k for k, v in env.items() if evil in v and k != "GIT_PROTOCOL"], env
    assert env["GIT_PROTOCOL"] == "version=2"  # "version=1\n…" is no version
    assert env["GIT_CONFIG_COUNT"] == "2" and env["GIT_CONFIG_VALUE_0"] == str(state.hooks)
    headers.replace_header("Git-Protocol", "version=2;x")
    protocol = gate_server.git_protocol(headers)
    env = state.cgi_env(remote, "/origin.git/git-upload-pack", "", headers, 3, protocol=protocol)
    assert "GIT_PROTOCOL" not in env


def _env_spy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``git`` first on PATH that writes the environment of every ``git http-backend``
    the gate starts (everything the agent's request runs inherits it) to a file in the
    directory returned, then runs the real git."""
    spy, dumps = tmp_path / "spy", tmp_path / "dumps"
    spy.mkdir()
    dumps.mkdir()
    real = shutil.which("git")
    (spy / "git").write_text(
        f'#!/bin/sh\n[ "$1" = http-backend ] && env -0 > "{dumps}/$$"\nexec {real} "$@"\n'
    )
    (spy / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{spy}:{os.environ['PATH']}")
    return dumps


def test_http_backend_gets_no_secret_and_the_hook_only_what_it_scans_for(
    tmp_path: Path,
    repo_pair: tuple[Path, Path, str],
    gate_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A fetch runs upload-pack and pack-objects on the agent's request: none holds a
    secret. A push runs the hook, which scans for the bottle's secrets and pushes with
    the remote's token: it gets those (its refusal of a leak proves it) and nothing
    else of the gate's environment."""
    _work, upstream_repo, _first = repo_pair
    config = tmp_path / "config"
    config.mkdir()
    remote = GateRemote(name="origin", url="ssh://git@127.0.0.1/r.git", token_ref="TOK")
    (config / gate.CONFIG_FILE).write_bytes(GateConfig(remotes=(remote,)).to_json())
    for key, value in {
        gate.CONFIG_ENV: str(config),
        "TOK": "route-token-7777",
        "UNRELATED": "not-for-git-3333",
        "GIT_CONFIG_PARAMETERS": "'core.hookspath'='/tmp/nowhere'",
    }.items():
        monkeypatch.setenv(key, value)
    dumps = _env_spy(tmp_path, monkeypatch)
    own_work(gate_env, tmp_path, monkeypatch)
    state = _prepared_without_relay(upstream_repo, monkeypatch)
    with _serving(state) as base:
        url = f"{base}/origin.git"
        git(tmp_path, "clone", "-q", url, "clone")
        clone = tmp_path / "clone"
        fetches = _dumps(dumps)
        git(clone, "checkout", "-q", "-B", "main", "origin/main")
        commit(clone, "leak.txt", f"{SECRET}\n")
        out = git(clone, "push", url, "HEAD:main", check=False)
    assert "secret:S (plain)" in out and SECRET not in out, out  # the hook had the secret
    pushes = [env for env in _dumps(dumps) if env not in fetches]
    assert len(fetches) >= 2 and pushes  # (advertisement and upload-pack; the push's)
    for env in fetches + pushes:
        assert "UNRELATED" not in env and "GIT_CONFIG_PARAMETERS" not in env
        assert env["GIT_CONFIG_NOSYSTEM"] == "1" and env["GIT_CONFIG_GLOBAL"] == "/dev/null"
    for env in fetches:
        assert {"S", "TOK", "BOTTLE_DLP_SECRETS"}.isdisjoint(env), env
        assert SECRET not in str(env) and "route-token-7777" not in str(env)
    [receive] = [e for e in pushes if e["PATH_INFO"].endswith("/git-receive-pack")]
    assert receive["S"] == SECRET and receive["TOK"] == "route-token-7777"


def _dumps(directory: Path) -> list[dict[str, str]]:
    out = []
    for path in sorted(directory.iterdir()):
        pairs = (item.partition("=") for item in path.read_text().split("\0") if item)
        out.append({k: v for k, _, v in pairs})
    return out


def _post(
    url: str, body: bytes, headers: dict[str, str], *, chunked: bool = False
) -> tuple[int, bytes]:
    """The status and body of a POST's answer, an error's included."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    assert parts.hostname is not None
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    try:
        if chunked:
            pieces = (body[at : at + 65536] for at in range(0, len(body), 65536))
            conn.request("POST", parts.path, body=pieces, headers=headers, encode_chunked=True)
        else:
            conn.request("POST", parts.path, body=body, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def _gzip(block: bytes, times: int) -> bytes:
    """``block`` repeated ``times`` times, gzipped without holding the whole."""
    import zlib

    packer = zlib.compressobj(6, wbits=31)
    return b"".join(packer.compress(block) for _ in range(times)) + packer.flush()


_UPLOAD = {"Content-Type": "application/x-git-upload-pack-request", "Content-Encoding": "gzip"}
_RECEIVE = {"Content-Type": "application/x-git-receive-pack-request", "Content-Encoding": "gzip"}


@pytest.fixture
def serving(
    tmp_path: Path, gate_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path]]:
    """The prepared gate served without the relay (a v2 request goes to http-backend), and
    the directory where every http-backend it starts leaves its environment."""
    dumps = _env_spy(tmp_path, monkeypatch)
    state = gate_server.Gate(
        gate.load_config(gate_env), Path(gate_env[gate.WORK_ENV]), os.environ, relaying=False
    )
    with _serving(state) as base:
        yield f"{base}/origin.git", dumps


def _still_serves(url: str) -> None:
    """The gate answers a gzipped v2 ls-refs through http-backend (an empty mirror lists
    nothing): the refusal before left it serving, and gzip still works."""
    ls_refs = gzip_bytes(b"0014command=ls-refs\n0000")
    status, answer = _post(
        f"{url}/git-upload-pack", ls_refs, {**_UPLOAD, "Git-Protocol": "version=2"}
    )
    assert (status, answer) == (200, b"0000"), (status, answer)


def gzip_bytes(data: bytes) -> bytes:
    import gzip

    return gzip.compress(data)


def pkt(text: str) -> bytes:
    return f"{len(text) + 4:04x}{text}".encode()


def test_a_gzip_bomb_of_haves_is_refused_by_the_gate_itself(
    serving: tuple[str, Path],
) -> None:
    """4 million ``have`` lines are 582 KB of gzip; inflated by http-backend, upload-pack
    held them all (141 MiB). The gate inflates into its spool and stops at its bound for
    a fetch's request: no git process starts."""
    url, dumps = serving
    line = b"0032have " + b"1" * 40 + b"\n"
    assert len(line) == 0x32
    bomb = _gzip(line * 1000, 4000)
    assert len(bomb) < 1 << 20
    status, answer = _post(f"{url}/git-upload-pack", bomb, _UPLOAD)
    assert status == 413 and b"inflates to more than 16777216 bytes" in answer, (status, answer)
    assert not list(dumps.iterdir())  # http-backend never ran
    _still_serves(url)
    [env] = _dumps(dumps)
    assert "HTTP_CONTENT_ENCODING" not in env and env["CONTENT_LENGTH"] == "24"


@pytest.mark.parametrize("chunked", [False, True])
def test_a_gzip_bomb_of_push_commands_is_refused_by_the_gate_itself(
    serving: tuple[str, Path], chunked: bool
) -> None:
    """``receive.maxInputSize`` bounds a push's pack, not the commands before it, which
    receive-pack holds in memory: past ``MAX_REQUEST_TEXT`` of them (inflated) the gate
    refuses, chunked or not, before any git process starts."""
    url, dumps = serving
    first = pkt(f"{gate.ZERO} {'1' * 40} refs/heads/main\0report-status\n")
    line = pkt(f"{gate.ZERO} {'1' * 40} refs/heads/{'b' * 40}\n")
    body = _gzip(first + line * 1000, 130)  # 18 MB of commands, never a flush
    assert len(body) < 1 << 20
    status, answer = _post(f"{url}/git-receive-pack", body, _RECEIVE, chunked=chunked)
    assert status == 413, (status, answer)
    assert b"the push's commands before its pack are more than 16777216 bytes" in answer
    assert not list(dumps.iterdir())
    _still_serves(url)


def test_a_gzip_pack_past_the_body_bound_is_refused_before_git_runs(
    tmp_path: Path, serving: tuple[str, Path], gate_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A small gzip body that inflates to a pack over the body bound is refused by the
    gate as a plain one of that size would be: no receive-pack, no hook."""
    url, dumps = serving
    monkeypatch.setattr(gate_server, "MAX_BODY", 64 << 10)
    work = tmp_path / "agent"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    tip = commit(work, "zeros.bin", "0" * (1 << 20))
    pack = subprocess.run(
        ["git", "-c", "pack.compression=0", "pack-objects", "--stdout", "--revs", "-q"],
        cwd=work, input=b"main\n", capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert len(pack) > 1 << 20
    command = f"{gate.ZERO} {tip} refs/heads/main\0report-status\n".encode()
    body = gzip_bytes(f"{len(command) + 4:04x}".encode() + command + b"0000" + pack)
    assert len(body) < 64 << 10
    status, answer = _post(f"{url}/git-receive-pack", body, _RECEIVE)
    assert status == 413 and b"inflates to more than 65536 bytes" in answer, (status, answer)
    assert not list(dumps.iterdir())  # neither receive-pack nor the hook ran
    log = Path(gate_env[gate.LOG_ENV])
    assert not log.exists() or '"op":"push"' not in log.read_text()
    _still_serves(url)


def test_a_gzipped_fetch_of_real_git_is_inflated_by_the_gate(
    tmp_path: Path,
    repo_pair: tuple[Path, Path, str],
    gate_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """git gzips a fetch request over 1 KB (here 40 wants): it still fetches, and the
    http-backend serving it gets the body inflated, with no Content-Encoding to act on,
    and the query the gate built, not the agent's."""
    import urllib.request

    work, upstream_repo, _first = repo_pair
    dumps = _env_spy(tmp_path, monkeypatch)
    own_work(gate_env, tmp_path, monkeypatch)
    state = _prepared_without_relay(upstream_repo, monkeypatch)
    with _serving(state) as base:
        url = f"{base}/origin.git"
        git(tmp_path, "clone", "-q", url, "clone")
        for n in range(40):
            git(work, "checkout", "-q", "-b", f"b{n}", "main")
            commit(work, "f.txt", f"{n}\n")
        git(work, "push", "-q", str(upstream_repo), "--all")
        out = git(tmp_path / "clone", "fetch", "origin", env={"GIT_TRACE_CURL": "1"})
        with urllib.request.urlopen(f"{url}/info/refs?service=git-upload-pack&x=1") as answer:
            assert answer.status == 200
    assert "Content-Encoding: gzip" in out  # the control: git did gzip a request
    assert git(tmp_path / "clone", "rev-parse", "origin/b39").strip()
    envs = _dumps(dumps)
    assert envs and not [e for e in envs if "HTTP_CONTENT_ENCODING" in e]
    assert {e["QUERY_STRING"] for e in envs} == {"service=git-upload-pack", ""}


@pytest.mark.parametrize(
    "query",
    [
        "service=git-upload-pack&service=git-receive-pack",
        "service=git-receive-pack&service=git-upload-pack",
        "service=git-upload-pack&service=git-upload-pack",
        "service=git-receive-pack",
    ],
)
def test_a_remote_without_pushes_never_advertises_receive_pack(
    tmp_path: Path,
    repo_pair: tuple[Path, Path, str],
    gate_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    query: str,
) -> None:
    """Python's parse_qs takes the first ``service``, http-backend the last: two of them
    once got a push: false remote's receive-pack advertisement. A query of more than one
    is refused, and http-backend only ever gets the query the gate built."""
    import urllib.error
    import urllib.request

    config = tmp_path / "config"
    config.mkdir()
    remote = GateRemote(
        name="origin", url="ssh://git@127.0.0.1/r.git", key_ref="K", policy=PushPolicy(refs=())
    )
    (config / gate.CONFIG_FILE).write_bytes(GateConfig(remotes=(remote,)).to_json())
    monkeypatch.setenv(gate.CONFIG_ENV, str(config))
    own_work(gate_env, tmp_path, monkeypatch)
    dumps = _env_spy(tmp_path, monkeypatch)
    state = gate_server.Gate(
        gate.load_config(os.environ), Path(os.environ[gate.WORK_ENV]), os.environ
    )
    state.prepare()
    _upstream_is(repo_pair[1], monkeypatch)  # the fetch before an advertisement succeeds
    with _serving(state) as base:
        url = f"{base}/origin.git/info/refs?{query}"
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(url, timeout=30)
    body = info.value.read()
    assert info.value.code == 403 and b"# service=" not in body, body
    assert not list(dumps.iterdir())  # no advertisement at all: http-backend never ran


@pytest.mark.parametrize(
    ("header", "relayed"),
    [("version=2", True), ("xversion=2", False), ("version=2x", False),
     ("version=2:version=1", False)],
)  # fmt: skip
def test_only_a_request_http_backend_would_serve_as_v2_takes_the_relay(
    served: str, monkeypatch: pytest.MonkeyPatch, header: str, relayed: bool
) -> None:
    """The relay was chosen by a substring test of ``Git-Protocol``, http-backend's
    version by a whole match: ``xversion=2`` went upstream as v2 while the mirror path
    would have served v0. A cold mirror's ls-refs tries upstream only when both say v2."""
    asked: list[str] = []

    def connect(remote: GateRemote, **_: object) -> upstream.Connection:
        asked.append(remote.name)
        raise upstream.UpstreamError("not in this test")

    monkeypatch.setattr(upstream, "connect", connect)
    headers = {**_UPLOAD, "Git-Protocol": header}
    del headers["Content-Encoding"]
    _post(f"{served}/origin.git/git-upload-pack", b"0014command=ls-refs\n0000", headers)
    assert asked == (["origin"] if relayed else [])


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not gzip at all", 400),
        (gzip_bytes(b"0000") + b"trailing", 400),  # (kept, it would grow without bound)
        (gzip_bytes(b"0000") + gzip_bytes(b"0000"), 400),  # a second member is the same
        (gzip_bytes(b"0014command=ls-refs\n0000")[:-9], 400),  # cut short
    ],
    ids=["not-gzip", "trailing-bytes", "two-members", "cut-short"],
)
def test_a_gzip_body_that_is_not_one_whole_stream_is_refused(
    serving: tuple[str, Path], body: bytes, status: int
) -> None:
    url, dumps = serving
    assert _post(f"{url}/git-upload-pack", body, _UPLOAD)[0] == status
    assert not list(dumps.iterdir())


def test_a_content_encoding_other_than_gzip_is_refused(serving: tuple[str, Path]) -> None:
    url, dumps = serving
    headers = {**_UPLOAD, "Content-Encoding": "deflate"}
    status, answer = _post(f"{url}/git-upload-pack", b"x\x9c", headers)
    assert status == 415 and b"plain or gzip, not deflate" in answer, answer
    assert not list(dumps.iterdir())


@pytest.mark.parametrize(
    ("service", "bound"),
    [("git-upload-pack", "MAX_REQUEST_TEXT"), ("git-receive-pack", "MAX_BODY")],
)
def test_the_server_bounds_request_bodies(
    served: str, monkeypatch: pytest.MonkeyPatch, service: str, bound: str
) -> None:
    """A fetch's request is all text, so bounded as that; a push's carries its pack."""
    import urllib.error
    import urllib.request

    monkeypatch.setattr(gate_server, bound, 10)
    request = urllib.request.Request(f"{served}/origin.git/{service}", data=b"x" * 11)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 413


@pytest.mark.parametrize("size", [b"-40", b"0x10", b"1_0", b"+8", b""])
def test_a_chunk_size_that_is_not_hex_digits_is_refused(served: str, size: bytes) -> None:
    """A negative size would take back what the body bound counted (then any length
    passes); Python's int() also reads 0x, _ and + where HTTP has hex digits alone."""
    import socket
    from urllib.parse import urlsplit

    host = urlsplit(served)
    with socket.create_connection((host.hostname, host.port), timeout=10) as conn:
        conn.sendall(
            b"POST /origin.git/git-upload-pack HTTP/1.1\r\nHost: g\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + size + b"\r\nabcd\r\n0\r\n\r\n"
        )
        answer = conn.recv(4096)
    assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400"), answer


def test_main_writes_status_once_listening(
    tmp_path: Path, gate_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle.runtime.git_gate.__main__ import GateStatus

    own_work(gate_env, tmp_path, monkeypatch)

    proc = subprocess.Popen([sys.executable, "-m", "bottle.runtime.git_gate"], env={**os.environ, "K": "key", gate.PORT_ENV: "0"},
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        from tests.conftest import wait_for

        path = Path(gate_env[gate.STATUS_ENV])
        wait_for(path.is_file, 20, "the status file")
        status = GateStatus.model_validate_json(path.read_text())
        assert status.ready and status.remotes == ("origin",)
        assert (Path(gate_env[gate.SECRETS_ENV]) / "origin.key").stat().st_mode & 0o777 == 0o600
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_new_mirror_takes_upstreams_default_branch(
    repo_pair: tuple[Path, Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work, upstream_repo, _first = repo_pair
    git(upstream_repo, "symbolic-ref", "HEAD", "refs/heads/main")
    git(work, "push", "-q", str(upstream_repo), "main:trunk")
    mirror = upstream_repo.parent / "m.git"
    git(work, "init", "-q", "--bare", "-b", "master", str(mirror))
    conn = upstream.Connection(
        str(upstream_repo), {**os.environ, **IDENT}, upstream.parse_url("git@h:r"), "10.0.0.1"
    )
    monkeypatch.setattr(upstream, "connect", lambda *a, **k: conn)
    remote = GateRemote(name="origin", url="git@h:r")

    def fetch() -> str:
        upstream.fetch(remote, mirror, config=mirror, secrets=mirror, environ=os.environ)
        return git(mirror, "symbolic-ref", "HEAD").strip()

    assert fetch() == "refs/heads/main"  # asked beside the first fetch
    git(upstream_repo, "symbolic-ref", "HEAD", "refs/heads/trunk")
    assert fetch() == "refs/heads/main"  # the mirror has main: not asked again
    git(upstream_repo, "update-ref", "-d", "refs/heads/main")
    assert fetch() == "refs/heads/trunk"  # the fetch pruned main: asked again


def test_the_hook_imports_nothing_from_the_mirror_it_runs_in(
    tmp_path: Path, gate_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """git runs the hook in the mirror, and ``python -m`` puts its directory first on
    sys.path: a ``bottle`` package there would be the hook. It is not (``-P``)."""
    own_work(gate_env, tmp_path, monkeypatch)
    state = _gate(gate_env)
    state.prepare()
    shadow = state.mirror("origin") / "bottle"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise SystemExit('the mirror shadowed bottle')\n")
    out, refs = _push_through_hook(tmp_path, gate_env, "clean\n")
    assert "shadowed" not in out and "could not push to origin" in out, out
    assert refs == ""  # (upstream is a loopback address the hook refuses)


def test_the_gate_refuses_to_serve_when_git_could_not_run_its_hook(
    tmp_path: Path, gate_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # As on a noexec mount: git would skip the hook and take pushes unscanned.
    own_work(gate_env, tmp_path, monkeypatch)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    state = _gate(gate_env)
    with pytest.raises(RuntimeError, match=r"pre-receive hook .* failed its probe"):
        state.prepare()


def test_a_mirror_keeps_what_a_fetch_brings_packed_and_merges_many_packs(
    repo_pair: tuple[Path, Path, str], gate_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Served again, a kept pack is copied as it is; loose objects would be packed anew."""
    work, upstream_repo, _first = repo_pair
    own_work(gate_env, work.parent, monkeypatch)
    state = _gate(gate_env)
    state.prepare()
    mirror = state.mirror("origin")
    conn = upstream.Connection(
        str(upstream_repo), {**os.environ, **IDENT}, upstream.parse_url("git@h:r"), "10.0.0.1"
    )
    monkeypatch.setattr(upstream, "MAX_PACKS", 3)
    packs = mirror / "objects" / "pack"
    for n in range(4):
        commit(work, "n.txt", f"{n}\n")
        git(work, "push", "-q", str(upstream_repo), "main")
        upstream.run_git(["fetch", "-q", conn.url, "+refs/heads/*:refs/heads/*"], conn, cwd=mirror)
        assert len(list(packs.glob("*.pack"))) == n + 1
    loose = [p for p in (mirror / "objects").glob("??/*")]
    assert loose == []  # three objects a fetch, each time in a pack
    upstream._tidy(conn, mirror)
    assert len(list(packs.glob("*.pack"))) < 4
    assert git(mirror, "rev-parse", "main").strip() == git(work, "rev-parse", "main").strip()


def test_a_secret_in_a_path_is_redacted_in_every_finding(
    tmp_path: Path, repo_pair: tuple[Path, Path, str], gate_env: dict[str, str]
) -> None:
    """A directory, a file and a submodule named after the secret: the findings about what
    is in them (or about their names) never carry the name itself."""
    work, mirror, first = repo_pair
    (work / SECRET).mkdir()
    commit(work, f"{SECRET}/conf.txt", f"token {GITHUB}\n")
    commit(work, f"{SECRET}.txt", f"token {GITHUB}\n")
    # (to a commit upstream has: the gitlink check lets it by, the scan reads its name)
    git(work, "update-index", "--add", "--cacheinfo", f"160000,{first},sub-{SECRET}")
    git(work, "commit", "-qm", "submodule")
    tip = git(work, "rev-parse", "HEAD").strip()
    found = _scan_pushed(work, mirror, "refs/heads/main")
    wheres = {where for _owner, where, _rule in found}
    assert "[secret:S]/conf.txt:1" in wheres and "[secret:S].txt:1" in wheres
    assert (tip, "a file name", "secret:S (plain)") in found
    assert not any(SECRET in where for where in wheres)
    # The same through the hook: its message, its log line.
    out = git(work, "push", str(_gate(gate_env).mirror("origin")), "main", check=False,
              env={gate.REMOTE_ENV: "origin"})  # fmt: skip
    assert "[secret:S]/conf.txt:1: github-token" in out and tip[:12] in out
    assert SECRET not in out
    log = Path(gate_env[gate.LOG_ENV]).read_text()
    assert "[secret:S].txt:1" in log and SECRET not in log


def test_the_hook_refuses_a_gitlink_as_policy_redacted_and_unallowable(
    tmp_path: Path, gate_env: dict[str, str]
) -> None:
    state = _gate(gate_env)
    work = tmp_path / "agent"
    work.mkdir()
    git(work, "init", "-q", "-b", "main")
    commit(work, "f.txt", "fine\n")
    _gitlink(work, f"mod-{SECRET}", "ab" * 20)
    out = git(work, "push", str(state.mirror("origin")), "main", check=False,
              env={gate.REMOTE_ENV: "origin"})  # fmt: skip
    assert "refused by the bottle's push policy" in out and "mod-[secret:S]" in out
    assert SECRET not in out and git(state.mirror("origin"), "for-each-ref") == ""
    [record] = [json.loads(line) for line in Path(gate_env[gate.LOG_ENV]).read_text().splitlines()]
    assert record["decision"] == "refuse" and record["reason"].startswith("policy: mod-[secret:S]")
    assert SECRET not in json.dumps(record)
