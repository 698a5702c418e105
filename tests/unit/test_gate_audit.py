"""git-gate's pushes imported into the host's audit log: once each, chained, verifiable."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bottle import gate_audit
from bottle.audit import AuditLog
from bottle.errors import StateError
from bottle.runtime import git_gate as gate
from bottle.runtime.git_gate import GateRecord, RefUpdate

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
