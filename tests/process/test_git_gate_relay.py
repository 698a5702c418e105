"""The relay against real git: a stateful ``git upload-pack`` stands in for upstream (it is
what ``ssh … git-upload-pack`` runs), the agent's request is a real clone's."""

from __future__ import annotations

import io
import json
import os
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest

from bottle.runtime import git_gate as gate
from bottle.runtime.git_gate import GateConfig, GateRemote, pktline, relay
from bottle.runtime.git_gate import server as gate_server
from bottle.runtime.git_gate import upstream as upstream_mod
from bottle.runtime.git_gate.pktline import DELIM, FLUSH, pkt
from tests.unit.test_git_gate_pktline import ENV, git


def failed_clone(url: str, cwd: Path, name: str) -> str:
    """A v2 clone of ``url`` that must fail: its stderr, what the agent's git shows."""
    done = subprocess.run(
        ["git", "-c", "protocol.version=2", "clone", url, name], cwd=cwd, env=ENV,
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode != 0, done.stderr
    return done.stderr


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("upstream")
    git(repo, "init", "-q", "-b", "trunk")
    for index in range(3):
        (repo / f"f{index}.txt").write_bytes(os.urandom(20000).hex().encode())
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", f"c{index}")
    git(repo, "tag", "-a", "v1", "-m", "tag")
    git(repo, "branch", "side", "HEAD~1")
    return repo


def channel(repo: Path, cwd: Path, version: str = "version=2") -> relay.PipeChannel:
    return relay.PipeChannel(
        ["git", "upload-pack", str(repo)], {**ENV, "GIT_PROTOCOL": version}, cwd
    )


def request(*args: bytes) -> bytes:
    lines = [pkt(b"command=fetch\n"), pkt(b"agent=git/2.39.5\n"), DELIM]
    return b"".join(lines + [pkt(a + b"\n") for a in args] + [FLUSH])


def test_a_cold_clone_is_relayed_stored_and_then_served_from_the_mirror(
    upstream: Path, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror.git"
    git(tmp_path, "init", "-q", "--bare", str(mirror))
    conn = channel(upstream, mirror)
    try:
        listing = conn.ls_refs()
        refs, head = listing.tips, listing.head
        assert head == "refs/heads/trunk"
        assert set(refs) == {"refs/heads/trunk", "refs/heads/side", "refs/tags/v1"}
        wants = sorted(set(refs.values()))
        body = request(*(b"want " + w.encode() for w in wants), b"ofs-delta", b"done")
        parsed = pktline.parse_fetch_request(body)
        assert parsed is not None and relay.takes(parsed, listing)
        out = io.BytesIO()
        spool = relay.relay_fetch(parsed, conn, mirror, relay.Held(lambda: out))
        pack = relay.store_pack(mirror, spool)
        assert not spool.exists()
    finally:
        conn.close()
    # The pack the agent got is byte for byte the one the mirror stored.
    sent = io.BytesIO()
    assert pktline.tee_fetch_response(io.BytesIO(out.getvalue()), io.BytesIO(), sent)
    (stored,) = (mirror / "objects" / "pack").glob("*.pack")
    assert stored.read_bytes() == sent.getvalue()
    assert stored == mirror / "objects" / "pack" / f"pack-{pack}.pack"
    assert stored.with_suffix(".keep").is_file()  # until its refs are stored
    assert relay.store_refs(mirror, refs, head) == []
    relay.release(mirror, pack)
    assert not stored.with_suffix(".keep").exists()
    assert git(mirror, "for-each-ref", "--format=%(objectname) %(refname)") == git(
        upstream, "for-each-ref", "--format=%(objectname) %(refname)"
    )
    assert git(mirror, "symbolic-ref", "HEAD") == b"refs/heads/trunk\n"
    # The mirror now serves a clone by itself, whole and checked.
    git(tmp_path, "clone", "-q", str(mirror), str(tmp_path / "work"))
    git(tmp_path / "work", "fsck", "--strict")
    assert (tmp_path / "work" / "f2.txt").read_bytes() == (upstream / "f2.txt").read_bytes()


def test_an_upstream_that_speaks_v0_falls_back(upstream: Path, tmp_path: Path) -> None:
    with pytest.raises(relay.Fallback, match="v2"):
        channel(upstream, tmp_path, version="")


def test_refs_without_their_history_or_with_bad_names_are_not_stored(
    upstream: Path, tmp_path: Path
) -> None:
    git(tmp_path, "init", "-q", "--bare")
    tip = git(upstream, "rev-parse", "trunk").decode().strip()
    # An empty mirror: upstream "listed" a tip whose objects never arrived.
    assert relay.store_refs(tmp_path, {"refs/heads/trunk": tip}, "refs/heads/trunk") == [
        "refs/heads/trunk"
    ]
    assert git(tmp_path, "for-each-ref") == b""
    # Only the first commit arrived: its branch is stored, the newer tip is not.
    first = git(upstream, "rev-list", "--max-parents=0", "trunk").decode().strip()
    pack = git(upstream, "pack-objects", "--stdout", "--revs", data=first.encode() + b"\n")
    git(tmp_path, "index-pack", "--stdin", data=pack)
    missing = relay.store_refs(
        tmp_path,
        {"refs/heads/old": first, "refs/heads/trunk": tip, "refs/heads/a..b": first},
        None,
    )
    assert sorted(missing) == ["refs/heads/a..b", "refs/heads/trunk"]
    assert git(tmp_path, "for-each-ref", "--format=%(refname)") == b"refs/heads/old\n"


def test_a_pack_index_pack_refuses_is_not_stored_and_raises(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "--bare")
    # A "pack" with the right magic and a wrong checksum, relayed by an upstream stand-in.
    bogus = b"PACK\x00\x00\x00\x02\x00\x00\x00\x01" + b"\x00" * 30
    answer = pkt(b"packfile\n") + pkt(b"\x01" + bogus) + FLUSH
    script = tmp_path / "upstream.sh"
    advert = pkt(b"version 2\n") + pkt(b"ls-refs\n") + pkt(b"fetch\n") + FLUSH
    (tmp_path / "answer").write_bytes(advert + answer)
    script.write_text(f"#!/bin/sh\ncat {tmp_path / 'answer'}\ncat >/dev/null\n")
    script.chmod(0o755)
    conn = relay.PipeChannel([str(script)], ENV, tmp_path)
    parsed = pktline.parse_fetch_request(request(b"want " + b"a" * 40, b"done"))
    assert parsed is not None
    try:
        spool = relay.relay_fetch(parsed, conn, tmp_path, relay.Held(io.BytesIO))
        with pytest.raises(pktline.ProtocolError, match="did not index"):
            relay.store_pack(tmp_path, spool)
    finally:
        conn.close()
    assert list((tmp_path / "objects" / "pack").iterdir()) == []  # nor a temporary one
    assert not spool.exists()


# -- the relay in the server, reached by a real git clone over loopback HTTP ---------------


@contextmanager
def gate_for(
    upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    kind: type[relay.PipeChannel] = relay.PipeChannel, opened: list[str] | None = None,
) -> Iterator[tuple[str, list[str], Path, Path]]:  # fmt: skip
    """A gate (relay on, as by default); its ssh upstream is ``git upload-pack`` on
    ``upstream`` (stateful v2 on stdio, as over ssh), its fallback fetch a local ``git fetch``."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    config, work = tmp_path / "config", tmp_path / "work"
    config.mkdir()
    remote = GateRemote(name="origin", url="ssh://git@127.0.0.1/r.git")
    (config / gate.CONFIG_FILE).write_bytes(GateConfig(remotes=(remote,)).to_json())
    log = tmp_path / "git-gate.jsonl"
    env = {
        **ENV,
        gate.CONFIG_ENV: str(config),
        gate.LOG_ENV: str(log),
        gate.WORK_ENV: str(work),
        gate.SECRETS_ENV: str(tmp_path / "keys"),
        "PYTHONPATH": str(Path(gate.__file__).parents[3]),
    }
    fetched: list[str] = []
    opened = [] if opened is None else opened

    def channel(self: gate_server.Gate, remote: GateRemote) -> relay.Channel:
        opened.append(remote.name)
        return kind(
            ["git", "upload-pack", str(upstream)], {**ENV, "GIT_PROTOCOL": "version=2"},
            self.mirror(remote.name),
        )  # fmt: skip

    def fetch(self: gate_server.Gate, remote: GateRemote) -> None:
        fetched.append(remote.name)
        mirror = self.mirror(remote.name)
        specs = ("+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")
        git(mirror, "fetch", "-q", str(upstream), *specs)
        git(mirror, "symbolic-ref", "HEAD", "refs/heads/trunk")  # as upstream.fetch sets it

    monkeypatch.setattr(gate_server.Gate, "channel", channel)
    monkeypatch.setattr(gate_server.Gate, "fetch", fetch)
    state = gate_server.Gate(gate.load_config(env), work, env)
    state.prepare()
    httpd = gate_server.serve(state, "127.0.0.1", 0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield (
            f"http://127.0.0.1:{httpd.server_address[1]}/origin.git",
            fetched,
            state.mirror("origin"),
            log,
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        for conn, _listing in state.idle.values():
            conn.close()


@pytest.fixture
def relayed(
    upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, list[str], Path, Path]]:
    opened: list[str] = []
    with gate_for(upstream, tmp_path, monkeypatch, opened=opened) as served:
        yield served
    # A relayed clone's ls-refs and fetch went over one upstream connection.
    if any(str(r["reason"]).startswith("relayed:") for r in records(served[3])):
        assert opened == ["origin"]


def wait_for_record(log: Path, count: int = 1) -> None:
    """The relayed answer ends before the gate has stored it all: its log line comes after."""
    deadline = time.monotonic() + 60
    while len(records(log)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(records(log)) >= count


def post(url: str, body: bytes) -> bytes:
    req = urllib.request.Request(
        url + "/git-upload-pack", data=body,
        headers={"Git-Protocol": "version=2", "Content-Type": "application/x-git-upload-pack-request"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as answer:
        return bytes(answer.read())


def all_records(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def records(log: Path) -> list[dict[str, object]]:
    """The log's fetch lines but a relayed listing's (each test of a pack counts these)."""
    return [r for r in all_records(log) if "refs listed" not in str(r["reason"])]


def refs_of(repo: Path) -> bytes:
    return git(repo, "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags")


def test_a_cold_v2_clone_is_relayed_and_the_mirror_is_warm_after(
    relayed: tuple[str, list[str], Path, Path], upstream: Path, tmp_path: Path
) -> None:
    url, fetched, mirror, log = relayed
    git(tmp_path, "-c", "protocol.version=2", "clone", "-q", url, "a")
    assert fetched == []  # no fetch before serving: the relay carried it
    git(tmp_path / "a", "fsck", "--strict")
    assert git(tmp_path / "a", "rev-parse", "HEAD") == git(upstream, "rev-parse", "trunk")
    # The agent's answer ends before the gate has stored it all: its log line comes after.
    deadline = time.monotonic() + 60
    while not records(log) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert refs_of(mirror) == refs_of(upstream)
    listed, line = all_records(log)  # upstream asked twice: its refs, then the pack
    assert listed["reason"] == "relayed: 3 refs listed for the agent"
    assert line["op"] == "fetch" and line["decision"] == "allow"
    assert "relayed" in str(line["reason"])
    assert list((mirror / "objects" / "pack").glob("*.keep")) == []
    # Warm now: the next clone fetches first and is served by the mirror, as before.
    git(tmp_path, "clone", "-q", url, "b")
    assert fetched == ["origin"]
    assert git(tmp_path / "b", "rev-parse", "HEAD") == git(upstream, "rev-parse", "trunk")


@pytest.mark.parametrize(
    "args",
    [
        ("-c", "protocol.version=0", "clone", "-q"),  # no v2: nothing to relay
        ("-c", "protocol.version=2", "clone", "-q", "--depth=1"),  # deepen: falls back
        ("-c", "protocol.version=2", "clone", "-q", "--shallow-since=2000-01-01"),
    ],
)
def test_a_clone_the_relay_does_not_take_is_fetched_then_served(
    relayed: tuple[str, list[str], Path, Path],
    upstream: Path,
    tmp_path: Path,
    args: tuple[str, ...],
) -> None:
    url, fetched, _mirror, log = relayed
    git(tmp_path, *args, url, "c")
    assert fetched == ["origin"]
    assert git(tmp_path / "c", "rev-parse", "HEAD") == git(upstream, "rev-parse", "trunk")
    assert not any("relayed" in str(r["reason"]) for r in records(log))


def test_a_want_beyond_upstreams_branches_and_tags_is_not_relayed(
    relayed: tuple[str, list[str], Path, Path], upstream: Path
) -> None:
    url, fetched, _mirror, log = relayed
    hidden = git(upstream, "rev-parse", "trunk~2").decode().strip()  # no ref names it
    body = b"".join(
        [pkt(b"command=fetch\n"), DELIM, pkt(b"want %s\n" % hidden.encode()), pkt(b"done\n"), FLUSH]
    )
    req = urllib.request.Request(
        url + "/git-upload-pack", data=body,
        headers={"Git-Protocol": "version=2", "Content-Type": "application/x-git-upload-pack-request"},
    )  # fmt: skip
    with urllib.request.urlopen(req, timeout=60) as answer:
        answer.read()
    # It went the old way (fetch, then the mirror's own upload-pack judged the want).
    assert fetched == ["origin"]
    assert not any("relayed" in str(r["reason"]) for r in records(log))


@pytest.mark.parametrize(
    ("url", "tail"),
    [
        ("ssh://git@h.test/srv/r.git", ["git@10.0.0.1", "git-upload-pack '/srv/r.git'"]),
        (
            "ssh://git@h.test:2222/~/r.git",
            ["-p", "2222", "git@10.0.0.1", "git-upload-pack '~/r.git'"],
        ),
        ("git@h.test:me/r.git", ["git@10.0.0.1", "git-upload-pack 'me/r.git'"]),
        ("h.test:it's.git", ["10.0.0.1", "git-upload-pack 'it'\\''s.git'"]),
    ],
)
def test_the_ssh_command_is_the_one_git_runs_asking_for_v2(url: str, tail: list[str]) -> None:
    from bottle.runtime.git_gate import upstream as up

    argv = relay.ssh_argv("ssh -F /dev/null -o BatchMode=yes", up.parse_url(url), "10.0.0.1")
    assert argv[:3] == ["ssh", "-F", "/dev/null"]
    assert argv[5:7] == ["-o", "SendEnv=GIT_PROTOCOL"]
    assert argv[7:] == tail


def test_a_silent_upstream_is_cut_off_at_the_timeout(tmp_path: Path) -> None:
    with pytest.raises(pktline.ProtocolError, match="ended"):
        relay.PipeChannel(["sleep", "60"], ENV, tmp_path, timeout=0.5)


def test_a_fallback_fetch_that_fails_reaches_the_agent_as_a_message(
    relayed: tuple[str, list[str], Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _fetched, _mirror, _log = relayed

    def broken(self: gate_server.Gate, remote: GateRemote) -> relay.Channel:
        raise relay.Fallback("no v2 here")

    def fails(self: gate_server.Gate, remote: GateRemote) -> None:
        raise upstream_mod.UpstreamError("the SSH host key of h does not match the key pinned")

    monkeypatch.setattr(gate_server.Gate, "channel", broken)
    monkeypatch.setattr(gate_server.Gate, "fetch", fails)
    stderr = failed_clone(url, tmp_path, "d")
    assert "git-gate: cannot fetch origin: the SSH host key of h does not match" in stderr


# -- what the agent gets is what the mirror would serve ------------------------------------


@pytest.fixture(scope="module")
def rich(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An upstream with every kind of ref a mirror treats specially."""
    repo = tmp_path_factory.mktemp("rich")
    git(repo, "init", "-q", "-b", "trunk")
    for index in range(3):
        (repo / f"f{index}.txt").write_text(f"content {index}\n")
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", f"c{index}")
    git(repo, "symbolic-ref", "refs/heads/alias", "refs/heads/trunk")  # a symref branch
    git(repo, "tag", "-a", "v1", "-m", "annotated", "HEAD~1")
    git(repo, "tag", "light", "HEAD~2")
    tree = git(repo, "rev-parse", "HEAD^{tree}").decode().strip()
    git(repo, "tag", "-a", "of-a-tree", "-m", "a tree", tree)
    git(repo, "update-ref", "refs/pull/1/head", "HEAD~1")  # not a branch or tag
    git(repo, "notes", "add", "-m", "note", "HEAD")
    git(repo, "update-ref", "refs/heads/secret", "HEAD~1")
    git(repo, "config", "uploadpack.hideRefs", "refs/heads/secret")  # hidden from both
    return repo


def mirror_path_answer(upstream: Path, tmp_path: Path, body: bytes) -> bytes:
    """What the gate answered before the relay: fetch into a mirror, then its upload-pack."""
    mirror = tmp_path / "plain.git"
    if not mirror.exists():
        git(tmp_path, "init", "-q", "--bare", str(mirror))
        git(mirror, "fetch", "-q", "--no-write-fetch-head", "file://" + str(upstream),
            "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*")  # fmt: skip
        git(mirror, "symbolic-ref", "HEAD", "refs/heads/trunk")
    return git(mirror, "upload-pack", "--stateless-rpc", ".", data=body, GIT_PROTOCOL="version=2")


def ls_refs_body(*args: bytes) -> bytes:
    head = [pkt(b"command=ls-refs\n"), pkt(b"agent=git/2.39.5\n"), pkt(b"object-format=sha1\n")]
    return b"".join([*head, DELIM, *(pkt(a + b"\n") for a in args), FLUSH])


@pytest.mark.parametrize(
    "args",
    [
        (b"peel", b"symrefs", b"unborn", b"ref-prefix HEAD", b"ref-prefix refs/heads/",
         b"ref-prefix refs/tags/"),  # what git clone asks
        (b"ref-prefix HEAD", b"ref-prefix refs/heads/", b"ref-prefix refs/tags/"),
        (b"symrefs", b"ref-prefix refs/heads/"),  # the symref branch is plain in a mirror
        (b"peel", b"ref-prefix refs/tags/"),
        (b"ref-prefix refs/heads/tr", b"ref-prefix refs/heads/trunk"),
        (b"symrefs", b"ref-prefix HEAD"),
        (b"ref-prefix refs/tags/nothing-here",),
    ],
)  # fmt: skip
def test_a_relayed_ls_refs_is_the_mirrors_answer_byte_for_byte(
    rich: Path, tmp_path: Path, args: tuple[bytes, ...]
) -> None:
    body = ls_refs_body(*args)
    parsed = pktline.parse_ls_refs(body)
    assert parsed is not None
    conn = channel(rich, tmp_path)
    try:
        listing = conn.ls_refs()
    finally:
        conn.close()
    # Hidden, pull and notes refs never enter the listing; the symref branch is a value.
    assert "refs/heads/secret" not in listing.tips and "refs/pull/1/head" not in listing.tips
    assert listing.answer(parsed) == mirror_path_answer(rich, tmp_path, body)


def test_a_relayed_clone_of_every_ref_kind_matches_a_clone_of_the_mirror(
    rich: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with gate_for(rich, tmp_path, monkeypatch) as (url, fetched, mirror, log):
        git(tmp_path, "-c", "protocol.version=2", "clone", "-q", "--bare", url, "relayed.git")
        assert fetched == []
        wait_for_record(log)
        plain = tmp_path / "plain.git"
        mirror_path_answer(rich, tmp_path, ls_refs_body(b"ref-prefix HEAD"))
        git(tmp_path, "clone", "-q", "--bare", str(plain), "direct.git")
        assert refs_of(tmp_path / "relayed.git") == refs_of(tmp_path / "direct.git")
        assert refs_of(mirror) == refs_of(plain)
        objects = ["cat-file", "--batch-all-objects", "--batch-check=%(objectname)"]
        assert git(tmp_path / "relayed.git", *objects) == git(tmp_path / "direct.git", *objects)


# -- the attacker's side: upstream and agent bytes the relay must not take ----------------


def listing_of(*lines: bytes) -> bytes:
    return b"".join(pkt(line + b"\n") for line in lines) + FLUSH


A, B = "a" * 40, "b" * 40


@pytest.mark.parametrize(
    "answer",
    [
        listing_of(f"{A} refs/heads/main".encode()),  # no HEAD: which branch is checked out?
        listing_of(f"{A} HEAD".encode(), f"{A} refs/heads/main".encode()),  # detached HEAD
        listing_of(f"{A} HEAD symref-target:refs/tags/v1".encode(), f"{A} refs/tags/v1".encode()),
        listing_of(f"{A} HEAD symref-target:refs/heads/gone".encode()),
        listing_of(f"{A} HEAD symref-target:refs/heads/m".encode(), f"{A} refs/heads/m".encode(),
                   f"{B} refs/heads/m".encode()),  # the same name twice
        listing_of(f"{A} HEAD symref-target:refs/heads/m".encode(), f"{A} refs/heads/m".encode(),
                   f"{A} refs/pull/1/head".encode()),  # beyond branches and tags
        *(
            listing_of(f"{A} HEAD symref-target:refs/heads/m".encode(), f"{A} refs/heads/m".encode(),
                       f"{A} {bad}".encode())
            for bad in ("refs/heads/a..b", "refs/heads/x.lock", "refs/heads/a@{1}", "refs/tags/.hid",
                        "refs/heads/a//b", "refs/heads/end/", "refs/heads/a~1", "refs/heads/a\\b")
        ),
        listing_of(b"c" * 64 + b" HEAD symref-target:refs/heads/m", b"c" * 64 + b" refs/heads/m"),
        listing_of(f"{A} HEAD symref-target:refs/heads/m".encode(), f"{A} refs/heads/m".encode())[:-4]
        + DELIM,
        pkt(f"{A} HEAD symref-target:refs/heads/m\n".encode()) + b"ffff",
    ],
)  # fmt: skip
def test_a_listing_with_any_doubt_is_not_taken(answer: bytes) -> None:
    with pytest.raises((relay.Fallback, pktline.ProtocolError)):
        relay.read_listing(io.BytesIO(answer))


def test_a_listing_past_its_bound_is_not_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay, "MAX_REFS", 3)
    lines = [f"{A} refs/heads/b{i}".encode() for i in range(4)]
    head = f"{A} HEAD symref-target:refs/heads/b0".encode()
    with pytest.raises(relay.Fallback):
        relay.read_listing(io.BytesIO(listing_of(head, *lines)))
    assert relay.read_listing(io.BytesIO(listing_of(head, *lines[:3]))).head == "refs/heads/b0"


@pytest.mark.parametrize(
    "name",
    ["refs/heads/ok", "refs/heads/a..b", "refs/heads/x.lock", "refs/heads/a@{1}",
     "refs/tags/.hid", "refs/heads/a//b", "refs/heads/end/", "refs/heads/end.", "refs/heads/a~1",
     "refs/heads/a^", "refs/heads/a:b", "refs/heads/a?", "refs/heads/a*", "refs/heads/a[",
     "refs/heads/a\\b", "refs/heads/@", "refs/heads/a@b", "refs/heads/é", "refs/heads/a.lock/b",
     "refs/heads/-dash", "refs/tags/v1.0"],
)  # fmt: skip
def test_ref_names_are_judged_as_git_judges_them(name: str, tmp_path: Path) -> None:
    judged = subprocess.run(["git", "check-ref-format", name], capture_output=True, check=False)
    assert relay.valid_ref(name) == (judged.returncode == 0)


def test_only_a_clones_fetch_is_taken(upstream: Path, tmp_path: Path) -> None:
    conn = channel(upstream, tmp_path)
    try:
        listing = conn.ls_refs()
    finally:
        conn.close()
    tip = listing.tips["refs/heads/trunk"].encode()
    first = git(upstream, "rev-list", "--max-parents=0", "trunk").strip()
    tag = git(upstream, "rev-parse", "v1").strip()

    def takes(*args: bytes) -> bool:
        parsed = pktline.parse_fetch_request(request(*args))
        assert parsed is not None
        return relay.takes(parsed, listing)

    assert takes(b"want " + tip, b"done")
    assert not takes(b"want " + tip, b"have " + first, b"done")  # haves: not a clone
    assert not takes(b"want " + tip)  # no done: a negotiation, not a clone
    assert takes(b"want " + tag, b"want " + tip, b"done")  # a tag object is a tip
    assert not takes(b"want " + first, b"done")


class Scripted(relay.PipeChannel):
    """A real upstream whose fetch answer is replaced (or cut) by a test."""

    answer: Callable[[bytes], bytes]

    def fetch(self, request: bytes) -> IO[bytes]:
        return io.BytesIO(type(self).answer(request))


def real_answer(upstream: Path, body: bytes) -> bytes:
    return git(upstream, "upload-pack", "--stateless-rpc", ".", data=body, GIT_PROTOCOL="version=2")


@pytest.mark.parametrize(
    "answer",
    [
        lambda body: pkt(b"ERR upstream says no\n"),
        lambda body: pkt(b"packfile\n") + pkt(b"\x03fatal: upstream broke\n") + FLUSH,
        lambda body: pkt(b"packfile\n") + pkt(b"\x01JUNKJUNK") + FLUSH,
        lambda body: pkt(b"acknowledgments\n") + pkt(b"NAK\n") + FLUSH,  # no pack at all
        lambda body: pkt(b"wanted-refs\n") + FLUSH,
        lambda body: b"",
    ],
    ids=["err", "error-band", "not-a-pack", "no-pack", "unknown-section", "silent"],
)
def test_upstreams_doubt_before_its_pack_falls_back_unseen(
    upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    answer: Callable[[bytes], bytes],
) -> None:  # fmt: skip
    monkeypatch.setattr(Scripted, "answer", staticmethod(answer), raising=False)
    with gate_for(upstream, tmp_path, monkeypatch, Scripted) as (url, fetched, _mirror, log):
        git(tmp_path, "-c", "protocol.version=2", "clone", "-q", url, "c")
        assert fetched == ["origin"]  # the agent got the mirror's answer, whole
        assert git(tmp_path / "c", "rev-parse", "HEAD") == git(upstream, "rev-parse", "trunk")
        assert not any("relayed" in str(r["reason"]) for r in records(log))


def test_upstream_breaking_off_inside_its_pack_fails_the_clone_and_stores_nothing(
    upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def cut(body: bytes) -> bytes:
        # Past the pkt-line that starts the pack (the agent has seen the pack begin), however
        # much progress upstream's git sent before it: that depends on the machine's load.
        # A cut before it would rightly be served from the mirror instead.
        answer, at = real_answer(upstream, body), 0
        while answer[at : at + 4] not in (b"", b"0000"):
            size = max(int(answer[at : at + 4], 16), 4)
            if answer[at + 4 : at + 9] == b"\x01PACK":
                assert at + size + 100 < len(answer)  # the pack goes on past that line
                return answer[: at + size + 100]
            at += size
        raise AssertionError("no pack in upstream's answer")

    monkeypatch.setattr(Scripted, "answer", staticmethod(cut), raising=False)
    with gate_for(upstream, tmp_path, monkeypatch, Scripted) as (url, fetched, mirror, log):
        assert "git-gate: the relayed clone broke off" in failed_clone(url, tmp_path, "c")
        assert refs_of(mirror) == b"" and fetched == []
        assert list(mirror.glob("relayed-*")) == []
        assert list((mirror / "objects" / "pack").iterdir()) == []
        (line,) = records(log)
        assert line["decision"] == "error" and "broke off" in str(line["reason"])
        # Still cold: the next clone is relayed whole.
        monkeypatch.setattr(
            Scripted, "answer", staticmethod(lambda body: real_answer(upstream, body)),
            raising=False,
        )  # fmt: skip
        git(tmp_path, "-c", "protocol.version=2", "clone", "-q", url, "d")
        wait_for_record(log, 2)
        assert refs_of(mirror) == refs_of(upstream)


def test_a_fetch_with_haves_or_a_large_request_takes_the_mirror_path(
    upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = git(upstream, "rev-list", "--max-parents=0", "trunk").strip()
    tip = git(upstream, "rev-parse", "trunk").strip()
    with gate_for(upstream, tmp_path, monkeypatch) as (url, fetched, _mirror, _log):
        body = b"".join([pkt(b"command=fetch\n"), DELIM, pkt(b"want %s\n" % tip),
                         pkt(b"have %s\n" % first), pkt(b"done\n"), FLUSH])  # fmt: skip
        post(url, body)
        assert fetched == ["origin"]
    monkeypatch.setattr(gate_server, "MAX_RELAY_REQUEST", 40)
    with gate_for(upstream, tmp_path / "big", monkeypatch) as (url, fetched, _mirror, log):
        git(tmp_path, "-c", "protocol.version=2", "clone", "-q", url, "e")
        assert fetched == ["origin"]
        assert not any("relayed" in str(r["reason"]) for r in records(log))


def test_progress_past_the_bound_before_the_pack_falls_back(
    upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(relay, "MAX_HELD", 8)
    with gate_for(upstream, tmp_path, monkeypatch) as (url, fetched, _mirror, _log):
        git(tmp_path, "-c", "protocol.version=2", "clone", "-q", url, "f")
        assert fetched == ["origin"]


def test_two_cold_clones_at_once_both_get_everything(
    upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with gate_for(upstream, tmp_path, monkeypatch) as (url, _fetched, mirror, log):
        clones = [
            subprocess.Popen(
                ["git", "-c", "protocol.version=2", "clone", "-q", url, name], cwd=tmp_path, env=ENV
            )
            for name in ("x", "y")
        ]
        assert [c.wait(timeout=120) for c in clones] == [0, 0]
        for name in ("x", "y"):
            git(tmp_path / name, "fsck", "--strict")
            assert git(tmp_path / name, "rev-parse", "HEAD") == git(upstream, "rev-parse", "trunk")
        wait_for_record(log)
        assert refs_of(mirror) == refs_of(upstream)


def test_upstream_gets_the_gates_words_not_the_agents(
    upstream: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[bytes] = []
    monkeypatch.setattr(
        Scripted, "answer",
        staticmethod(lambda body: (sent.append(body), real_answer(upstream, body))[1]),
        raising=False,
    )  # fmt: skip
    tips = sorted(git(upstream, "rev-parse", "trunk", "side").split())
    body = b"".join([
        pkt(b"command=fetch\n"), pkt(b"agent=EXFIL-0123456789abcdef\n"),
        pkt(b"session-id=MORE-EXFIL\n"), DELIM, pkt(b"ofs-delta\n"),
        *(pkt(b"want %s\n" % t) for t in reversed(tips)), pkt(b"want %s\n" % tips[0]),
        pkt(b"done\n"), FLUSH,
    ])  # fmt: skip
    with gate_for(upstream, tmp_path, monkeypatch, Scripted) as (url, fetched, _mirror, log):
        answer = post(url, body)
        assert fetched == [] and b"PACK" in answer
        wait_for_record(log)
    (upstream_body,) = sent
    assert b"EXFIL" not in upstream_body
    assert upstream_body == b"".join([
        pkt(b"command=fetch\n"), pkt(b"agent=git/bottle-git-gate\n"), DELIM, pkt(b"ofs-delta\n"),
        *(pkt(b"want %s\n" % t) for t in tips), pkt(b"done\n"), FLUSH,
    ])  # fmt: skip


def test_a_mirror_is_cold_only_without_any_branch_or_tag(tmp_path: Path) -> None:
    config = GateConfig(remotes=(GateRemote(name="o", url="ssh://git@h.test/r.git"),))
    state = gate_server.Gate(config, tmp_path, ENV)
    mirror = state.mirror("o")
    git(tmp_path, "init", "-q", "--bare", str(mirror))
    remote = config.remotes[0]
    assert state.cold(remote)
    work = tmp_path / "w"
    git(tmp_path, "init", "-q", "-b", "main", str(work))
    (work / "f").write_text("x")
    git(work, "add", "f")
    git(work, "commit", "-q", "-m", "c")
    git(mirror, "fetch", "-q", str(work), "refs/heads/main:refs/heads/main")
    assert not state.cold(remote)  # a loose branch
    git(mirror, "pack-refs", "--all")
    assert not (mirror / "refs" / "heads" / "main").exists()
    assert not state.cold(remote)  # a packed one
    git(mirror, "update-ref", "-d", "refs/heads/main")
    git(mirror, "update-ref", "refs/notes/x", git(work, "rev-parse", "main").decode().strip())
    assert state.cold(remote)  # other refs do not make a clone's refs
    git(mirror, "tag", "v1", git(work, "rev-parse", "main").decode().strip())
    assert not state.cold(remote)
    assert not gate_server.Gate(config, tmp_path, ENV, relaying=False).may_relay(
        remote, "version=2"
    )
    assert state.may_relay(remote, "version=2")
    assert not state.may_relay(remote, "version=1")
    assert not state.may_relay(remote, None)


@pytest.mark.parametrize(
    ("header", "version"),
    [
        ("version=2", "version=2"),
        ("version=1:version=2", "version=2"),
        ("version=2:version=1", "version=1"),  # the last one counts, for both
        ("xversion=2", None),  # a substring test once took these for v2
        ("version=2x", None),
        ("version=22", None),
        ("object-format=sha1:version=2", "version=2"),
    ],
)
def test_the_relay_and_http_backend_read_one_protocol_version(
    tmp_path: Path, header: str, version: str | None
) -> None:
    """A request is relayed as v2 only if http-backend would be told v2: one parse of
    ``Git-Protocol`` serves both."""
    import email.message

    headers = email.message.Message()
    headers["Git-Protocol"] = header
    remote = GateRemote(name="r", url="https://example.com/r.git")
    state = gate_server.Gate(GateConfig(remotes=(remote,)), tmp_path, ENV)
    protocol = gate_server.git_protocol(headers)
    assert protocol == version
    env = state.cgi_env(remote, "/r.git/git-upload-pack", "", headers, 3, protocol=protocol)
    assert env.get("GIT_PROTOCOL") == version
    assert state.may_relay(remote, protocol) is (version == "version=2")
