"""git-gate's pushes imported into the host's audit log: once each, chained, verifiable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bottle import gate_audit
from bottle.audit import AuditLog
from bottle.bottle import Bottle
from bottle.errors import ApplyError, StateError
from bottle.instance import Instance
from bottle.operator import approve, audit_log, proposal_queue, reject
from bottle.runtime import git_gate as gate
from bottle.runtime.git_gate import GateRecord, RefUpdate
from bottle.settings import Settings
from tests.conftest import run_cli_here, user_owned
from tests.fakes import FakeEngine

NEW = "1" * 40


def state_dir(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    return tmp_path


def log_record(state: Path, record: GateRecord) -> None:
    gate.write_record(record, {gate.LOG_ENV: str(state / "logs" / gate.LOG_FILE)})


def push(decision: str = "allow", **fields: object) -> GateRecord:
    return GateRecord.model_validate(
        {
            "op": "push",
            "remote": "origin",
            "decision": decision,
            "refs": [RefUpdate(ref="refs/heads/main", old=gate.ZERO, new=NEW)],
            "scan": "clean",
            "upstream": "ok" if decision == "allow" else None,
        }
        | fields
    )


def test_each_push_becomes_one_verifiable_entry_once(tmp_path: Path) -> None:
    state = state_dir(tmp_path)
    first = push()
    log_record(state, first)
    log_record(state, GateRecord(op="fetch", remote="origin", decision="allow"))
    refused = push("refuse", scan="findings", reason="secret scan", findings=["r in a:1 (c)"])
    log_record(state, refused)

    assert gate_audit.import_pushes(state) == 2
    assert gate_audit.import_pushes(state) == 0  # idempotent by the gate's id

    log = AuditLog(state / "audit.jsonl")
    assert log.verify().ok
    entries = log.entries()
    assert [e.action for e in entries] == ["git-push", "git-push"]
    assert [e.who for e in entries] == ["git-gate", "git-gate"]
    pushed = json.loads(entries[0].after or "")
    assert pushed["id"] == first.id
    assert pushed["refs"] == [{"ref": "refs/heads/main", "old": gate.ZERO, "new": NEW}]
    assert (pushed["scan"], pushed["upstream"]) == ("clean", "ok")
    assert json.loads(entries[1].after or "")["findings"] == ["r in a:1 (c)"]
    assert entries[1].reason == "refuse push to origin: secret scan"

    later = push()
    log_record(state, later)
    assert gate_audit.import_pushes(state) == 1
    assert json.loads(log.entries()[-1].after or "")["id"] == later.id


def test_a_fetch_loop_cannot_grow_the_log_past_its_bound_nor_keep_a_push_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The agent fetches as often as it likes: past MAX_FETCH_LOG no fetch is logged (the
    last one says so), while every push still is, and is imported into the audit log."""
    monkeypatch.setattr(gate, "MAX_FETCH_LOG", 4096)
    state = state_dir(tmp_path)
    path = state / "logs" / gate.LOG_FILE
    first = push()
    log_record(state, first)
    for _ in range(200):
        log_record(state, GateRecord(op="fetch", remote="origin", decision="allow"))
    assert path.stat().st_size < 4096 + 512  # the bound, and the line that says so
    later = push()
    log_record(state, later)
    for _ in range(50):
        log_record(state, GateRecord(op="fetch", remote="origin", decision="allow"))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    fetches = [x for x in lines if x["op"] == "fetch"]
    assert "no more fetches are logged" in fetches[-1]["reason"]
    assert sum("no more fetches" in x["reason"] for x in fetches) == 1
    assert lines[-1]["id"] == later.id  # the push after the bound is there, last
    assert gate_audit.import_pushes(state) == 2


def test_pushes_past_the_fetch_bound_still_end_fetches_with_the_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pushes alone take the log past MAX_FETCH_LOG: the next fetch is logged, saying it is
    the last, and none after it."""
    monkeypatch.setattr(gate, "MAX_FETCH_LOG", 4096)
    state = state_dir(tmp_path)
    path = state / "logs" / gate.LOG_FILE
    log_record(state, push())
    while path.stat().st_size < 4096:
        log_record(state, push())
    for _ in range(3):
        log_record(state, GateRecord(op="fetch", remote="origin", decision="allow"))
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    [fetch] = [x for x in lines if x["op"] == "fetch"]
    assert lines[-1] == fetch and "no more fetches are logged" in fetch["reason"]


def test_one_record_is_capped_whatever_it_was_given(tmp_path: Path) -> None:
    """Refs, findings and reason past their caps are counted, not written: one record has a
    known maximum size, and the worst within the caps (every character escaped) fits."""
    state = state_dir(tmp_path)
    many = push(
        "refuse",
        refs=[RefUpdate(ref=f"refs/heads/{n}", old=gate.ZERO, new=NEW) for n in range(3000)],
        findings=[f"{n} " + "f" * 5000 for n in range(1000)],
        reason="r" * 100_000,
    )
    log_record(state, many)
    [line] = (state / "logs" / gate.LOG_FILE).read_bytes().splitlines()
    written = json.loads(line)
    assert len(written["refs"]) == gate.MAX_RECORD_REFS
    assert written["refs_omitted"] == 3000 - gate.MAX_RECORD_REFS
    assert len(written["findings"]) == gate.MAX_RECORD_FINDINGS
    assert written["findings_omitted"] == 1000 - gate.MAX_RECORD_FINDINGS
    assert written["findings"][0].endswith("… (3978 more characters)")
    assert written["reason"].endswith(f"… ({100_000 - gate.MAX_REASON_CHARS} more characters)")
    # The worst a hook can hand over: the most refs and ref bytes it takes, each character
    # (and every finding's and the reason's) a lone surrogate, six bytes as JSON.
    odd = "\udcff"
    per_ref = gate.MAX_REF_BYTES_TOTAL // gate.MAX_UPDATES
    worst = push(
        "refuse",
        refs=[RefUpdate(ref=odd * per_ref, old=gate.ZERO, new=NEW)] * gate.MAX_UPDATES,
        findings=[odd * gate.MAX_FINDING_CHARS] * gate.MAX_RECORD_FINDINGS,
        reason=odd * gate.MAX_REASON_CHARS,
    )
    size = len(gate._line(gate.bounded(worst)))
    assert 2 << 20 < size <= gate.MAX_RECORD_BYTES == gate_audit.MAX_LINE_BYTES


def test_a_short_write_is_finished_and_a_failed_one_ends_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = state_dir(tmp_path)
    real_write = os.write
    calls: list[int] = []

    def short(fd: int, data: bytes) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:100]))  # what a signal or a full disk leaves

    monkeypatch.setattr(gate.os, "write", short)
    first = push()
    log_record(state, first)
    assert len(calls) > 1  # finished in pieces, not left cut short
    monkeypatch.setattr(gate.os, "write", real_write)
    assert [r.id for r in gate_audit.push_records(state / "logs")] == [first.id]

    def full(fd: int, data: bytes) -> int:
        if len(calls) > 1 and data != b"\n":
            raise OSError(28, "No space left on device")
        calls.append(len(data))
        return real_write(fd, bytes(data[:100]))

    calls.clear()
    monkeypatch.setattr(gate.os, "write", full)
    with pytest.raises(gate.RecordWriteError, match="No space left"):
        log_record(state, push())
    monkeypatch.setattr(gate.os, "write", real_write)
    later = push()
    log_record(state, later)  # on a line of its own, not merged into the cut one
    assert [r.id for r in gate_audit.push_records(state / "logs")] == [first.id, later.id]


def test_a_huge_line_or_log_never_switches_the_import_off(tmp_path: Path) -> None:
    """A gate log past the old 64 MiB bound, holding a 70 MiB line with no newline in it
    (sparse: no disk used), between two pushes: both are imported, with memory bounded by
    the line bound, and ``try_import`` reports the skipped line."""
    state = state_dir(tmp_path)
    path = state / "logs" / gate.LOG_FILE
    first, later = push(), push()
    log_record(state, first)
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size + (70 << 20))
    with path.open("ab") as handle:
        handle.write(b"\n" + b'{"op":"push",' * 400_000 + b"\n")  # 5 MiB: also too long
        handle.write(b"[" * 200_000 + b"\n")  # deeper than json goes: RecursionError
    log_record(state, later)
    assert path.stat().st_size > 64 << 20
    problem = gate_audit.try_import(state)
    assert problem is not None and "2 line(s) of git-gate.jsonl longer than" in problem
    entries = AuditLog(state / "audit.jsonl").entries()
    assert [json.loads(e.after or "")["id"] for e in entries] == [first.id, later.id]


def test_the_reader_stops_at_the_size_the_log_had_when_opened(tmp_path: Path) -> None:
    """A gate writing all along cannot keep the host reading."""
    state = state_dir(tmp_path)
    log_record(state, push())
    records = gate_audit.PushRecords(state / "logs")
    seen = []
    for record in records:
        seen.append(record.id)
        log_record(state, push())  # more, as fast as it is read
    assert len(seen) == 1


def test_lines_that_are_not_push_records_are_skipped(tmp_path: Path) -> None:
    state = state_dir(tmp_path)
    path = state / "logs" / gate.LOG_FILE
    path.write_text('not json\n{"op":"push"}\n{"id":"../x","op":"push","remote":"o",'
                    '"decision":"allow"}\n')  # fmt: skip
    log_record(state, push())
    assert gate_audit.import_pushes(state) == 1


def test_a_linked_gate_log_is_never_followed(tmp_path: Path) -> None:
    state = state_dir(tmp_path)
    elsewhere = tmp_path / "elsewhere.jsonl"
    gate.write_record(push(), {gate.LOG_ENV: str(elsewhere)})
    os.symlink(elsewhere, state / "logs" / gate.LOG_FILE)
    with pytest.raises(OSError):
        gate_audit.import_pushes(state)
    assert gate_audit.try_import(state) is not None
    assert not (state / "audit.jsonl").exists()


def test_a_damaged_audit_log_is_not_extended(tmp_path: Path) -> None:
    state = state_dir(tmp_path)
    log_record(state, push())
    gate_audit.import_pushes(state)
    audit = state / "audit.jsonl"
    audit.write_bytes(audit.read_bytes().replace(b"git-push", b"git-pull"))
    log_record(state, push())
    with pytest.raises(StateError):
        gate_audit.import_pushes(state)
    assert gate_audit.try_import(state) is not None
    assert len(audit.read_bytes().splitlines()) == 1


# -- git-push-allow: the operator's approval is one allowance file, audited ----------------


@pytest.fixture
def running(tmp_path: Path) -> Instance:
    (tmp_path / "home").mkdir()
    (tmp_path / "repo").mkdir()
    user_owned(tmp_path / "repo")
    settings = Settings(home=tmp_path / "home")
    bottle = Bottle("shell", cwd=tmp_path / "repo", settings=settings, environ={},
                    engine=FakeEngine())  # fmt: skip
    return bottle.start()


ASK = {"remote": "origin", "ref": "refs/heads/main", "commit": NEW, "finding": "x a:1: r"}


def test_approving_git_push_allow_writes_one_allowance_and_audits_it(running: Instance) -> None:
    config = running.state.live_config(gate.NAME)
    config.mkdir(parents=True, exist_ok=True)
    remote = gate.GateRemote(name="origin", url="git@git.test:r.git", key_ref="K")
    (config / gate.CONFIG_FILE).write_bytes(gate.GateConfig(remotes=(remote,)).to_json())
    queue = proposal_queue(running)
    wrong = queue.create("git-push-allow", ASK | {"remote": "other"}, "not a secret").id
    with pytest.raises(ApplyError, match="no git remote 'other'"):
        approve(running, wrong)
    assert queue.get(wrong).status == "pending" and not (config / gate.ALLOW_DIR).exists()

    asked = queue.create("git-push-allow", ASK, "a test fixture, not a secret").id
    # The gate never refused this push: nothing to let through, whatever the agent says.
    with pytest.raises(ApplyError, match="git-gate never refused a push of 111111111111 to"):
        approve(running, asked)
    assert queue.get(asked).status == "pending" and not (config / gate.ALLOW_DIR).exists()
    # Refused for a policy reason, or to another ref: still nothing the scan refused.
    log_record(running.state.path, push("refuse", scan=None, reason="policy: tags"))
    other_ref = push("refuse", scan="findings", findings=["c a:1: r"])
    other_ref.refs[0].ref = "refs/heads/x"
    log_record(running.state.path, other_ref)
    with pytest.raises(ApplyError, match="never refused"):
        approve(running, asked)

    gates_own = ["111111111111 conf.txt:2: github-token [ghp_… (40 chars)]"]
    log_record(running.state.path, push("refuse", scan="findings", findings=gates_own))
    rejected = queue.create("git-push-allow", ASK | {"ref": "refs/heads/x"}, "j").id
    reject(running, rejected, reason="no")
    approve(running, asked)
    [name] = [p.name for p in (config / gate.ALLOW_DIR).iterdir()]
    assert name == gate.allowance_name("origin", "refs/heads/main", NEW)
    allowance = gate.Allowance.model_validate_json((config / gate.ALLOW_DIR / name).read_bytes())
    assert (allowance.commit, allowance.proposal_id) == (NEW, asked)
    # The gate's findings, not the agent's "x a:1: r", are what is allowed and audited.
    assert allowance.findings == tuple(gates_own)
    entries = [e for e in audit_log(running).entries() if e.tool == "git-push-allow"]
    assert [(e.action, e.tool) for e in entries] == [
        ("reject", "git-push-allow"), ("approve", "git-push-allow"),
    ]  # fmt: skip
    assert NEW in (entries[-1].after or "") and "github-token" in (entries[-1].after or "")


def test_git_push_allow_on_a_bottle_without_git_gate_is_refused(running: Instance) -> None:
    asked = proposal_queue(running).create("git-push-allow", ASK, "j").id
    with pytest.raises(ApplyError, match="has no git-gate"):
        approve(running, asked)
    assert proposal_queue(running).get(asked).status == "pending"


def test_audit_verify_imports_pushes_and_fails_on_a_linked_gate_log(
    running: Instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"BOTTLE_HOME": str(tmp_path / "home")}
    logs = running.state.path / "logs"
    logs.mkdir(exist_ok=True)
    log_record(running.state.path, push())
    done = run_cli_here("audit", "verify", running.slug, cwd=tmp_path, env=env,
                        monkeypatch=monkeypatch)  # fmt: skip
    assert done.returncode == 0 and "intact: 1 entries" in done.stderr, done.stderr
    (logs / gate.LOG_FILE).rename(tmp_path / "moved.jsonl")
    os.symlink(tmp_path / "moved.jsonl", logs / gate.LOG_FILE)
    done = run_cli_here("audit", "verify", running.slug, cwd=tmp_path, env=env,
                        monkeypatch=monkeypatch)  # fmt: skip
    assert done.returncode == 1 and "could not be added to the audit log" in done.stderr, (
        done.stderr
    )
    assert "Traceback" not in done.stderr


def test_a_record_without_an_id_is_imported_once(tmp_path: Path) -> None:
    state = state_dir(tmp_path)
    old = push().model_dump(mode="json")
    del old["id"]
    (state / "logs" / gate.LOG_FILE).write_text(json.dumps(old) + "\n")
    assert gate_audit.import_pushes(state) == 1
    assert gate_audit.import_pushes(state) == 0


def test_an_allowance_that_landed_is_retired_at_import(tmp_path: Path) -> None:
    state = state_dir(tmp_path)
    allow_dir = state / "live-config" / gate.NAME / gate.ALLOW_DIR
    allow_dir.mkdir(parents=True)
    names = [gate.allowance_name("origin", ref, NEW) for ref in ("refs/heads/main", "refs/x")]
    for name in names:
        (allow_dir / name).write_text("{}")
    log_record(state, push("error", allowed_by=[4], upstream=None))  # never landed
    gate_audit.import_pushes(state)
    assert sorted(p.name for p in allow_dir.iterdir()) == sorted(names)
    log_record(state, push(allowed_by=[4]))
    gate_audit.import_pushes(state)
    assert [p.name for p in allow_dir.iterdir()] == [names[1]]


def test_approve_edit_of_a_push_still_shows_the_gates_findings_and_asks(
    running: Instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle_cli import editor

    config = running.state.live_config(gate.NAME)
    config.mkdir(parents=True, exist_ok=True)
    remote = gate.GateRemote(name="origin", url="git@git.test:r.git", key_ref="K")
    (config / gate.CONFIG_FILE).write_bytes(gate.GateConfig(remotes=(remote,)).to_json())
    gates_own = ["111111111111 conf.txt:2: github-token [ghp_… (40 chars)] \x1b[2J"]
    log_record(running.state.path, push("refuse", scan="findings", findings=gates_own))
    asked = proposal_queue(running).create("git-push-allow", ASK, "harmless").id
    monkeypatch.setattr(editor, "edit_text", lambda text, *, extension: text)
    env = {"BOTTLE_HOME": str(tmp_path / "home")}
    done = run_cli_here("approve", running.slug, str(asked), "--edit", cwd=tmp_path, env=env,
                        monkeypatch=monkeypatch)  # fmt: skip
    # --edit is no way around the confirmation: no terminal, nothing approved.
    assert done.returncode == 2, done.stderr
    assert "github-token" in done.stderr and "\x1b" not in done.stderr
    assert "no terminal to confirm" in done.stderr
    assert proposal_queue(running).get(asked).status == "pending"
    assert not (config / gate.ALLOW_DIR).exists()


def test_every_field_of_the_gates_record_shown_at_approve_is_inert(
    running: Instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The gate's log is hostile input: a record whose time carries terminal controls is
    shown with them written out, never obeyed."""
    config = running.state.live_config(gate.NAME)
    config.mkdir(parents=True, exist_ok=True)
    remote = gate.GateRemote(name="origin", url="git@git.test:r.git", key_ref="K")
    (config / gate.CONFIG_FILE).write_bytes(gate.GateConfig(remotes=(remote,)).to_json())
    forged = push("refuse", scan="findings", findings=["c a:1: r"], time="\x1b]0;owned\x07")
    log_record(running.state.path, forged)
    asked = proposal_queue(running).create("git-push-allow", ASK, "harmless").id
    env = {"BOTTLE_HOME": str(tmp_path / "home")}
    done = run_cli_here("approve", running.slug, str(asked), cwd=tmp_path, env=env,
                        monkeypatch=monkeypatch)  # fmt: skip
    assert done.returncode == 2 and "c a:1: r" in done.stderr, done.stderr
    assert "\x1b" not in done.stderr and "\x07" not in done.stderr
    assert "owned" in done.stderr  # the control: the field is shown, written out


def test_a_cut_audit_tail_stays_visible_through_the_cli(
    running: Instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"BOTTLE_HOME": str(tmp_path / "home")}
    log = AuditLog(running.state.audit_log)
    for n in range(3):
        log.append(who="op", action="allow", reason=f"change {n}")
    log.path.write_bytes(b"".join(log.path.read_bytes().splitlines(keepends=True)[:2]))
    cut = (log.path.read_bytes(), log.anchor_path.read_bytes())
    # The next operator change must not re-anchor the cut end and so hide it for good.
    done = run_cli_here("allow", running.slug, "example.org", cwd=tmp_path, env=env,
                        monkeypatch=monkeypatch)  # fmt: skip
    assert done.returncode != 0 and "its tail was cut" in done.stderr, done.stderr
    assert (log.path.read_bytes(), log.anchor_path.read_bytes()) == cut
    done = run_cli_here("audit", "verify", running.slug, cwd=tmp_path, env=env,
                        monkeypatch=monkeypatch)  # fmt: skip
    assert done.returncode == 1 and "1 entry was cut off the end" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_an_audit_log_deleted_with_its_anchor_fails_verify_through_the_cli(
    running: Instance, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"BOTTLE_HOME": str(tmp_path / "home")}
    log_record(running.state.path, push())  # git-gate's push, imported into the log first
    log = audit_log(running)  # the instance's log, as every operator change appends to it
    for host in ("example.org", "example.com"):
        log.append(who="op", action="allow", after=host)
    entries = len(log.entries())
    assert entries == 3
    mark = running.state.read_metadata().audit
    assert mark is not None and (mark.seq, mark.head) == (entries, log.head())
    log.path.unlink()
    log.anchor_path.unlink()
    done = run_cli_here("audit", "verify", running.slug, cwd=tmp_path, env=env,
                        monkeypatch=monkeypatch)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert f"checkpoint says {entries}: {entries} entries were cut" in done.stderr
    assert "intact" not in done.stderr and "Traceback" not in done.stderr
    # The next change is refused: a fresh chain would make the removal verify.
    again = run_cli_here("allow", running.slug, "example.net", cwd=tmp_path, env=env,
                         monkeypatch=monkeypatch)  # fmt: skip
    assert again.returncode != 0 and f"checkpoint says {entries} entries" in again.stderr
    assert not log.anchor_path.exists()
