"""The audit log: append-only JSON lines whose hash chain shows any change."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from bottle.audit import GENESIS, AuditLog, canonical, diff_routes, entry_hash, routes_yaml
from bottle.errors import StateError
from bottle.policy import Auth, Route, Routes
from bottle.state import InstanceStatus, StateDir
from tests.unit.test_lifecycle import make_state

BEFORE = Routes(routes=(Route(host="pypi.org"),))
AFTER = BEFORE.with_route(
    Route(
        host="api.github.com",
        methods=("GET",),
        auth=Auth(scheme="bearer", token_ref="GITHUB_TOKEN"),
    )
)


@pytest.fixture
def log(tmp_path: Path) -> AuditLog:
    return AuditLog(tmp_path / "audit" / "audit.jsonl")


def _fill(log: AuditLog, n: int = 4) -> None:
    for i in range(n):
        log.append(
            who="alice",
            action="approve",
            tool="egress-block",
            proposal_id=i + 1,
            before=BEFORE,
            after=AFTER,
            reason=f"reason {i} — ünïcode",
        )


def _lines(log: AuditLog) -> list[bytes]:
    return log.path.read_bytes().splitlines(keepends=True)


def test_entry_wire_format(log: AuditLog) -> None:
    entry = log.append(
        who="alice",
        action="approve",
        tool="egress-block",
        proposal_id=3,
        before=BEFORE,
        after=AFTER,
        reason="ok",
    )
    raw = log.path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    data = json.loads(raw)
    assert sorted(data) == sorted(
        [
            "seq",
            "at",
            "who",
            "action",
            "tool",
            "proposal_id",
            "before",
            "after",
            "diff",
            "reason",
            "prev",
            "hash",
        ]
    )
    assert data["seq"] == 1 and data["prev"] == GENESIS
    assert data["at"].endswith("Z")
    assert data["before"] == routes_yaml(BEFORE)
    assert "+- host: api.github.com" in data["diff"]
    assert "token_ref: GITHUB_TOKEN" in data["after"]
    assert (
        data["hash"]
        == hashlib.sha256(canonical({k: v for k, v in data.items() if k != "hash"})).hexdigest()
    )
    assert raw[:-1] == canonical(data)
    assert entry.hash == data["hash"] == entry_hash(data)


def test_chain_links_each_line_to_the_previous(log: AuditLog) -> None:
    _fill(log, 3)
    lines = _lines(log)
    entries = log.entries()
    assert [e.seq for e in entries] == [1, 2, 3]
    assert entries[1].prev == hashlib.sha256(lines[0].rstrip(b"\n")).hexdigest()
    assert entries[2].prev == hashlib.sha256(lines[1].rstrip(b"\n")).hexdigest()
    result = log.verify()
    assert result.ok and result.entries == 3 and result.first_bad_line is None
    assert result.head == hashlib.sha256(lines[2].rstrip(b"\n")).hexdigest() == log.head()


def test_empty_and_missing_logs_verify(log: AuditLog) -> None:
    assert log.verify().ok and log.verify().entries == 0
    assert log.entries() == []
    assert log.head() == GENESIS
    log.path.parent.mkdir(parents=True)
    log.path.touch()
    assert log.verify().ok


def _tamper(log: AuditLog, edit: object) -> None:
    lines = _lines(log)
    assert callable(edit)
    log.path.write_bytes(b"".join(edit(lines)))


@pytest.mark.parametrize(
    ("edit", "bad_line", "word"),
    [
        # one changed byte in the middle of line 2 (inside the reason text)
        (lambda ls: [ls[0], ls[1].replace(b"reason 1", b"reason 9"), *ls[2:]], 2, "hash"),
        # a changed byte on the last line
        (lambda ls: [*ls[:3], ls[3].replace(b"alice", b"alicf")], 4, "hash"),
        # line 3 rewritten with its hash recomputed: line 4's prev gives it away
        ("rehash", 4, "prev does not match line 3"),
        # two lines swapped
        (lambda ls: [ls[0], ls[2], ls[1], ls[3]], 2, "seq"),
        # a line deleted in the middle
        (lambda ls: [ls[0], ls[2], ls[3]], 2, "seq"),
        # the file cut in the middle of a line
        (lambda ls: [ls[0], ls[1][:40]], 2, "cut off"),
        # a line that is not JSON
        (lambda ls: [ls[0], b"garbage\n", *ls[2:]], 2, "not JSON"),
        # a field added
        (
            lambda ls: [ls[0], ls[1].replace(b'{"action"', b'{"x":1,"action"'), *ls[2:]],
            2,
            "wrong fields",
        ),
        # whitespace added: same JSON, different bytes
        (lambda ls: [ls[0], ls[1].replace(b'","', b'", "', 1), *ls[2:]], 2, "canonical"),
    ],
)
def test_verify_finds_the_first_bad_line(
    log: AuditLog, edit: object, bad_line: int, word: str
) -> None:
    _fill(log)
    if edit == "rehash":
        lines = _lines(log)
        data = json.loads(lines[2])
        data["who"] = "mallory"
        data["hash"] = entry_hash(data)
        lines[2] = canonical(data) + b"\n"
        log.path.write_bytes(b"".join(lines))
    else:
        _tamper(log, edit)
    result = log.verify()
    assert not result.ok
    assert result.first_bad_line == bad_line
    assert result.entries == bad_line - 1
    assert result.problem is not None and word in result.problem
    with pytest.raises(StateError, match=f"line {bad_line}"):
        log.entries()


def test_cutting_lines_off_the_end_is_caught_by_the_head_anchor(log: AuditLog) -> None:
    _fill(log)
    lines = _lines(log)
    log.path.write_bytes(b"".join(lines[:3]))
    result = log.verify()
    assert not result.ok and result.entries == 3
    assert result.problem is not None and "1 entry was cut off the end" in result.problem
    log.path.write_bytes(b"")  # every line
    assert "4 entries were cut" in (log.verify().problem or "")


def test_a_deleted_anchor_or_a_re_chained_last_line_is_caught(log: AuditLog) -> None:
    _fill(log)
    good = log.path.read_bytes()
    log.anchor_path.unlink()
    assert "anchor is missing" in (log.verify().problem or "")
    # Replace the last entry by a validly chained forgery, with an anchor to match it.
    lines = _lines(log)
    log.path.write_bytes(b"".join(lines[:3]))
    anchor = {"seq": 3, "head": hashlib.sha256(lines[2].rstrip(b"\n")).hexdigest()}
    log.anchor_path.write_text(json.dumps(anchor))
    AuditLog(log.path).append(who="mallory", action="allow")  # rewrites the anchor: seq 4
    forged_anchor = log.anchor_path.read_bytes()
    log.path.write_bytes(good)
    log.anchor_path.write_bytes(forged_anchor)
    assert "it was replaced" in (log.verify().problem or "")


def test_entries_after_the_anchor_are_not_vouched_for(log: AuditLog) -> None:
    _fill(log, 2)
    anchor = log.anchor_path.read_bytes()
    log.append(who="op", action="allow")
    log.anchor_path.write_bytes(anchor)  # as if written behind bottle's back
    result = log.verify()
    assert not result.ok and "entries 3..3 come after the anchored head" in (result.problem or "")
    log.append(who="op", action="allow")  # bottle's next append re-anchors the new end
    assert log.verify().ok


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        ("cut", "its tail was cut"),
        ("replaced", "it was replaced"),
        ("no anchor", "anchor is missing"),
        ("two behind", "entries 3..4 come after"),
    ],
)
def test_append_never_extends_a_log_its_anchor_disowns(
    log: AuditLog, damage: str, words: str
) -> None:
    # Each append re-anchors the end: one after a cut would hide the cut for good.
    _fill(log, 4)
    lines, anchor = _lines(log), log.anchor_path.read_bytes()
    if damage == "cut":
        log.path.write_bytes(b"".join(lines[:3]))
    elif damage == "replaced":
        log.path.write_bytes(b"".join(lines[:3]))
        log.anchor_path.write_text(
            json.dumps({"seq": 3, "head": hashlib.sha256(lines[2].rstrip(b"\n")).hexdigest()})
        )
        AuditLog(log.path).append(who="mallory", action="allow")
        log.anchor_path.write_bytes(anchor)
    elif damage == "no anchor":
        log.anchor_path.unlink()
    else:
        log.path.write_bytes(b"".join(lines[:2]))
        log.anchor_path.write_text(
            json.dumps({"seq": 2, "head": hashlib.sha256(lines[1].rstrip(b"\n")).hexdigest()})
        )
        log.path.write_bytes(b"".join(lines))
    before = (log.path.read_bytes(), log.anchor_path.read_bytes() if damage != "no anchor" else b"")
    for attempt in (log.check_appendable, lambda: log.append(who="op", action="allow")):
        with pytest.raises(StateError, match=words) as caught:
            attempt()
        assert "bottle audit verify" in (caught.value.hint or "")
    after = (log.path.read_bytes(), log.anchor_path.read_bytes() if damage != "no anchor" else b"")
    assert after == before and not log.verify().ok


def test_append_refuses_to_extend_a_damaged_log(log: AuditLog) -> None:
    _fill(log, 2)
    with log.path.open("ab") as handle:
        handle.write(b'{"partial')
    with pytest.raises(StateError, match="partial line"):
        log.append(who="op", action="approve")
    log.path.write_bytes(_lines(log)[0] + b"not an entry\n")
    with pytest.raises(StateError, match="not an audit entry"):
        log.append(who="op", action="approve")


def test_concurrent_appends_keep_one_chain(log: AuditLog) -> None:
    def worker(n: int) -> None:
        for i in range(10):
            log.append(who=f"w{n}", action="apply", reason=str(i))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    result = log.verify()
    assert result.ok and result.entries == 50


def test_text_before_after_and_explicit_diff(log: AuditLog) -> None:
    entry = log.append(who="op", action="capability", before=None, after="FROM x\n")
    assert entry.diff.startswith("--- before\n+++ after\n")
    assert "+FROM x\n" in entry.diff
    entry = log.append(who="op", action="note", diff="custom")
    assert entry.diff == "custom" and entry.before is None and entry.seq == 2
    assert log.verify().ok


def test_diff_routes() -> None:
    diff = diff_routes(BEFORE, AFTER)
    assert diff.startswith("--- before\n+++ after\n")
    assert "+- host: api.github.com\n" in diff
    assert "+    token_ref: GITHUB_TOKEN\n" in diff
    assert not [line for line in diff.splitlines()[2:] if line.startswith("-")]
    assert diff_routes(BEFORE, BEFORE) == ""
    assert routes_yaml(Routes()) == "routes: []\n"


# -- the checkpoint in metadata.json ------------------------------------------------------


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    return make_state(tmp_path, "shell-audit1", InstanceStatus.RUNNING)


def _head_of(line: bytes) -> str:
    return hashlib.sha256(line.rstrip(b"\n")).hexdigest()


def test_every_append_checkpoints_the_head_in_metadata(state: StateDir) -> None:
    log = AuditLog.of(state)
    _fill(log, 3)
    mark = state.read_metadata().audit
    assert mark is not None and (mark.seq, mark.head) == (3, _head_of(_lines(log)[2]))
    assert mark.head == log.head()
    assert log.verify().ok


def test_a_log_removed_with_its_anchor_fails_against_the_checkpoint(state: StateDir) -> None:
    log = AuditLog.of(state)
    _fill(log, 3)
    log.path.unlink()
    log.anchor_path.unlink()
    result = log.verify()
    assert not result.ok and result.entries == 0 and result.first_bad_line == 1
    assert "metadata.json's checkpoint says 3: 3 entries were cut" in (result.problem or "")
    with pytest.raises(StateError, match="checkpoint says 3: 3 entries were cut"):
        log.entries()
    # Nothing starts a fresh chain over the removal: that would hide it for good.
    for attempt in (log.check_appendable, lambda: log.append(who="op", action="allow")):
        with pytest.raises(StateError, match="checkpoint says 3 entries") as caught:
            attempt()
        assert "bottle audit verify" in (caught.value.hint or "")
        assert f'remove "audit" from {state.metadata_file}' in (caught.value.hint or "")
    assert not log.anchor_path.exists() and not log.verify().ok
    # Without the instance, a log has only its .head to go by: today's behaviour.
    assert AuditLog(state.audit_log).verify().ok
    # Starting afresh is the operator's decision, taken as the hint says.
    state.write_metadata(state.read_metadata().model_copy(update={"audit": None}))
    assert state.read_metadata().audit is not None  # a stale copy never takes it back...
    raw = json.loads(state.metadata_file.read_text())
    del raw["audit"]
    state.metadata_file.write_text(json.dumps(raw))  # ...the operator's edit does
    log.append(who="op", action="allow")
    assert log.verify().ok and log.verify().entries == 1


def test_a_tail_cut_with_a_matching_anchor_fails_against_the_checkpoint(state: StateDir) -> None:
    log = AuditLog.of(state)
    _fill(log, 3)
    lines = _lines(log)
    log.path.write_bytes(b"".join(lines[:2]))
    log.anchor_path.write_text(json.dumps({"seq": 2, "head": _head_of(lines[1])}))
    result = log.verify()
    assert not result.ok and result.entries == 2 and result.first_bad_line == 3
    assert "checkpoint says 3: 1 entry was cut" in (result.problem or "")
    with pytest.raises(StateError, match="its tail was cut"):
        log.append(who="op", action="allow")
    assert log.path.read_bytes() == b"".join(lines[:2])


def test_a_log_replaced_by_another_valid_chain_fails_against_the_checkpoint(
    state: StateDir, tmp_path: Path
) -> None:
    log = AuditLog.of(state)
    _fill(log, 3)
    forged = AuditLog(tmp_path / "forged" / "audit.jsonl")
    _fill(forged, 3)  # the same length, other times: another chain, anchored to match
    log.path.write_bytes(forged.path.read_bytes())
    log.anchor_path.write_bytes(forged.anchor_path.read_bytes())
    assert AuditLog(log.path).verify().ok  # the chain and its .head agree with each other
    result = log.verify()
    assert not result.ok and result.first_bad_line == 3
    assert "entry 3 is not the one metadata.json's checkpoint recorded" in (result.problem or "")
    with pytest.raises(StateError, match=r"not the one metadata\.json.s checkpoint recorded"):
        log.append(who="op", action="allow")


def test_entries_past_the_checkpoint_verify_and_it_catches_up(state: StateDir) -> None:
    # An append through a path-only AuditLog (or one whose checkpoint write was lost) is
    # vouched for by the .head; the checkpoint only says how far the log went at least.
    log = AuditLog.of(state)
    _fill(log, 2)
    AuditLog(state.audit_log).append(who="op", action="allow")
    assert log.verify().ok and log.verify().entries == 3
    log.append(who="op", action="allow")
    mark = state.read_metadata().audit
    assert mark is not None and mark.seq == 4 and log.verify().ok


def test_a_state_dir_from_before_checkpoints_verifies_as_before(state: StateDir) -> None:
    AuditLog(state.audit_log).append(who="op", action="allow")
    assert state.read_metadata().audit is None
    assert AuditLog.of(state).verify().ok


def test_the_checkpoint_never_goes_back(state: StateDir) -> None:
    # metadata.json is rewritten from copies read earlier (a status change, a capability):
    # none of them may take the checkpoint back to before the appends since.
    stale = state.read_metadata()
    log = AuditLog.of(state)
    _fill(log, 2)
    state.write_metadata(stale.model_copy(update={"error": "written from a stale copy"}))
    state.transition(InstanceStatus.STOPPING)
    metadata = state.read_metadata()
    assert metadata.error == "written from a stale copy"
    assert metadata.audit is not None and metadata.audit.seq == 2 and log.verify().ok


def test_appends_and_metadata_writes_at_once_keep_the_checkpoint(state: StateDir) -> None:
    log = AuditLog.of(state)
    stale = state.read_metadata()
    done = threading.Event()

    def writer() -> None:
        while not done.is_set():
            state.write_metadata(stale)

    def appender(n: int) -> None:
        for i in range(10):
            log.append(who=f"w{n}", action="apply", reason=str(i))

    background = threading.Thread(target=writer)
    background.start()
    threads = [threading.Thread(target=appender, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    done.set()
    background.join(timeout=30)
    mark = state.read_metadata().audit
    assert mark is not None and mark.seq == 30
    assert log.verify().ok and log.verify().entries == 30


def test_a_log_removed_but_its_anchor_left_is_not_started_afresh(log: AuditLog) -> None:
    _fill(log, 2)
    log.path.unlink()
    with pytest.raises(StateError, match="it is empty but its anchor says 2 entries"):
        log.append(who="op", action="allow")
    assert "2 entries were cut" in (log.verify().problem or "")
