"""The git-gate sidecar: a smart-HTTP git server for the agent, in front of real remotes.

``server.py`` serves each declared remote as ``http://git-gate:<port>/<name>.git`` from a
bare mirror (``git http-backend``), fetching from upstream first; ``hook.py`` is the mirror's
``pre-receive`` hook, which enforces the push policy, scans every new commit for secrets and
forwards a clean push upstream; ``upstream.py`` holds the gate's credential handling.

This module holds what the host and the sidecar share: the config file's format (written by
``bottle.sidecars.git_gate`` into ``live-config/git-gate/``), the decision-log record and the
paths. It imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from bottle import layout

NAME = "git-gate"
CONFIG_FILE = "remotes.json"  # in live-config/git-gate/
ALLOW_DIR = "allow"  # in live-config/git-gate/: the operator's approved git-push-allow
USED_DIR = "used-allowances"  # in the gate's work dir (tmpfs): allowances consumed
LOG_FILE = "git-gate.jsonl"  # in logs/
ZERO = "0" * 40

#: Environment overrides of the container paths (tests point them at temporary dirs).
CONFIG_ENV = "BOTTLE_GIT_GATE_CONFIG"  # the live-config directory
STATUS_ENV = "BOTTLE_GIT_GATE_STATUS"
LOG_ENV = "BOTTLE_GIT_GATE_LOG"
WORK_ENV = "BOTTLE_GIT_GATE_WORK"  # mirrors (a tmpfs in the container)
SECRETS_ENV = "BOTTLE_GIT_GATE_SECRETS"  # the gate's own key files (a tmpfs, 0700)
PORT_ENV = "BOTTLE_GIT_GATE_PORT"  # default layout.GIT_GATE_PORT
PROBE_ENV = "BOTTLE_GIT_GATE_PROBE"  # the hook exits 0 at once (a start-time check)
#: Set by the server for the hook: which remote a push is for.
REMOTE_ENV = "BOTTLE_GIT_GATE_REMOTE"

DEFAULT_WORK = Path("/var/lib/git-gate")
DEFAULT_SECRETS = Path("/run/git-gate/keys")  # under a tmpfs the gate may not chmod


def known_hosts_file(remote: str) -> str:
    """The name of a remote's pinned host key file in the config directory."""
    return f"{remote}.known_hosts"


class PushPolicy(BaseModel):
    """What a push to one remote may do; ref patterns are ``fnmatch`` over full ref names."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    refs: tuple[str, ...] = ("refs/heads/*",)  # () : no push at all
    force: tuple[str, ...] = ()
    delete: tuple[str, ...] = ()
    #: May a push add or change submodule entries naming commits the gate does not have.
    submodules: bool = False

    @staticmethod
    def matches(ref: str, patterns: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatchcase(ref, p) for p in patterns)


class GateRemote(BaseModel):
    """One remote as the gate sees it: no secret, only the name of the variable holding it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    url: str
    key_ref: str | None = None
    token_ref: str | None = None
    policy: PushPolicy = PushPolicy()


class GateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    remotes: tuple[GateRemote, ...] = ()

    def remote(self, name: str) -> GateRemote | None:
        return next((r for r in self.remotes if r.name == name), None)

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode() + b"\n"


class RefUpdate(BaseModel):
    ref: str
    old: str
    new: str


class Allowance(BaseModel):
    """An approved ``git-push-allow``: one push of ``commit`` to ``ref`` of ``remote`` may
    go through although the scan found ``findings`` (and nothing else) in what it brings.
    Written by the host, read (never written) by the gate, used at most once per gate run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    remote: str
    ref: str
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")
    proposal_id: int
    #: The gate's own findings the operator saw and allowed, as its refusal recorded them:
    #: a push that finds anything else is refused again.
    findings: tuple[str, ...] = ()

    @property
    def file_name(self) -> str:
        return allowance_name(self.remote, self.ref, self.commit)

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode() + b"\n"


def allowance_name(remote: str, ref: str, commit: str) -> str:
    """The one file name an allowance for this push can have: looked up, never listed."""
    key = hashlib.sha256(f"{remote}\0{ref}\0{commit}".encode()).hexdigest()[:32]
    return f"{key}.json"


class GateRecord(BaseModel):
    """One line of ``logs/git-gate.jsonl``: a fetch or a push, and what the gate decided.

    ``id`` is what the host imports a push into the audit log by, at most once."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex, pattern=r"^[0-9a-f]{32}$")
    time: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="milliseconds"))
    op: Literal["fetch", "push"]
    remote: str
    decision: Literal["allow", "refuse", "error"]
    reason: str = ""
    refs: list[RefUpdate] = []
    findings: list[str] = []  # "rule in file:line (commit)", never the matched text
    scan: str | None = None  # pushes: "clean" | "findings" | "failed" | "allowed"
    #: pushes: "ok" | "rejected" | None (not sent); "sending" in the record written (fsynced)
    #: before the push goes upstream, so a push that landed is never without a record
    upstream: str | None = None
    scan_ms: int | None = None  # pushes: the policy check and secret scan alone
    allowed_by: list[int] = []  # pushes: the git-push-allow proposals that let findings by
    refs_omitted: int = 0  # past MAX_RECORD_REFS: counted, not written
    findings_omitted: int = 0  # past MAX_RECORD_FINDINGS
    duration_ms: int = 0


def config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(CONFIG_ENV) or layout.LIVE_CONFIG / NAME)


def status_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(STATUS_ENV) or layout.STATUS / f"{NAME}.json")


def log_path(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(LOG_ENV) or layout.LOGS / LOG_FILE)


def work_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(WORK_ENV) or DEFAULT_WORK)


def secrets_dir(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(SECRETS_ENV) or DEFAULT_SECRETS)


def load_config(environ: Mapping[str, str] = os.environ) -> GateConfig:
    path = config_dir(environ) / CONFIG_FILE
    return GateConfig.model_validate_json(path.read_bytes())


#: Fetch records stop once the log holds this much: the agent can fetch in a loop, and
#: the log is on the host's disk (``bottle.gate_audit`` reads it). Pushes, which the audit
#: log imports, are always written.
MAX_FETCH_LOG = 8 << 20

#: A push the hook takes at all (``hook.oversized``): git's own refs are far below (a
#: branch or tag name is tens of bytes; a mirror push of a big project, a few thousand
#: refs of ~40 bytes), and these keep one push record, and the upstream push's argv (a
#: delete is two arguments naming the ref), bounded whatever the agent sends.
MAX_UPDATES = 1000
MAX_REF_BYTES = 1024
MAX_REF_BYTES_TOTAL = 256 << 10

#: What one record keeps; the rest is counted (``refs_omitted``…), never written. No push
#: the policy let by loses a ref (``MAX_UPDATES``); a finding cut short or left out is
#: simply not allowable (``git-push-allow`` matches the gate's findings exactly).
MAX_RECORD_REFS = MAX_UPDATES
MAX_RECORD_FINDINGS = 200
MAX_FINDING_CHARS = 1024
MAX_REASON_CHARS = 4096
#: The longest line ``write_record`` writes. Within the caps above a record is at most
#: ~3 MiB (every character of a ref name or finding escaped as ``\udcXX``); the host reads
#: lines up to this and skips (and counts) longer ones (``bottle.gate_audit``).
MAX_RECORD_BYTES = 4 << 20

#: Logs whose fetch records stopped, with the note that says so, in this process (the
#: server: the one writer of fetch records). A gate restarted past the bound says it once more.
_fetches_stopped: set[str] = set()


class RecordWriteError(OSError):
    """A push record could not be written whole: the push must not go upstream."""


def bounded(record: GateRecord) -> GateRecord:
    """``record`` within the caps above: the first of each list and a count of the rest."""
    update: dict[str, object] = {}
    if len(record.refs) > MAX_RECORD_REFS:
        update["refs"] = record.refs[:MAX_RECORD_REFS]
        update["refs_omitted"] = record.refs_omitted + len(record.refs) - MAX_RECORD_REFS
    findings = record.findings
    if len(findings) > MAX_RECORD_FINDINGS or any(len(f) > MAX_FINDING_CHARS for f in findings):
        update["findings"] = [_cut(f, MAX_FINDING_CHARS) for f in findings[:MAX_RECORD_FINDINGS]]
        update["findings_omitted"] = record.findings_omitted + max(
            0, len(findings) - MAX_RECORD_FINDINGS
        )
    if len(record.reason) > MAX_REASON_CHARS:
        update["reason"] = _cut(record.reason, MAX_REASON_CHARS)
    return record.model_copy(update=update) if update else record


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters)"


def write_record(record: GateRecord, environ: Mapping[str, str] = os.environ) -> None:
    """Append one line; O_APPEND keeps the server's and the hooks' lines whole.

    A push record is on disk (fsynced) when this returns; ``RecordWriteError`` (an
    ``OSError``) when it could not be written whole."""
    path = log_path(environ)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        record = bounded(record)
        if record.op == "fetch":
            size = os.fstat(fd).st_size
            key = str(path)
            if key in _fetches_stopped:
                return
            if size + len(_line(record)) > MAX_FETCH_LOG:
                # The last one, and it says so; also when pushes took the log past the bound.
                _fetches_stopped.add(key)
                reason = "; ".join(
                    r
                    for r in (
                        record.reason,
                        f"no more fetches are logged: the log holds {MAX_FETCH_LOG >> 20} MiB "
                        "(pushes still are)",
                    )
                    if r
                )
                record = record.model_copy(update={"reason": reason})
        line = _line(record)
        if len(line) > MAX_RECORD_BYTES:  # not within the caps: keep what says what it was
            record = record.model_copy(
                update={
                    "refs": [],
                    "refs_omitted": record.refs_omitted + len(record.refs),
                    "findings": [],
                    "findings_omitted": record.findings_omitted + len(record.findings),
                }
            )
            line = _line(record)
        _write_all(fd, line)
        if record.op == "push":
            os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, line: bytes) -> None:
    """Write the whole line or raise. A line cut short (the disk full) is ended with a
    newline if at all possible, so the next record is not merged into it and lost."""
    view = memoryview(line)
    try:
        while view:
            written = os.write(fd, view)
            if written <= 0:
                raise RecordWriteError(f"wrote nothing of a {len(line)}-byte record")
            view = view[written:]
    except OSError as exc:
        if len(view) < len(line):
            with contextlib.suppress(OSError):
                os.write(fd, b"\n")
        if isinstance(exc, RecordWriteError):
            raise
        raise RecordWriteError(exc.errno, f"the gate's log: {exc.strerror}") from exc


def _line(record: GateRecord) -> bytes:
    return (json.dumps(record.model_dump(mode="json"), separators=(",", ":")) + "\n").encode()
