"""``pre-receive`` of every mirror (``python -m bottle.runtime.git_gate.hook``).

Runs inside ``git receive-pack`` after the pushed objects arrived (in quarantine) and before
any ref moves. In order: the push policy, the secret scan of every new commit, then the push
upstream with the gate's credential. Whatever this prints reaches the agent's ``git push``
as ``remote:`` lines; a non-zero exit leaves both the mirror and upstream unchanged.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from bottle.runtime import git_gate as gate

if __name__ == "__main__" and os.environ.get(gate.PROBE_ENV):
    # The gate checking at start that git can run this hook at all: that much is proven
    # here, before the scan's and the upstream's imports (a third of the hook's start).
    sys.exit(0)

from bottle.runtime.egress import dlp
from bottle.runtime.git_gate import (
    ZERO,
    Allowance,
    GateRecord,
    GateRemote,
    RefUpdate,
    gitlinks,
    policy,
    scan,
    upstream,
)

#: Findings shown to the agent; the log keeps them all.
SHOWN = 20


#: The most of pre-receive's input read: the bounds' worth of lines ("old new ref\n"), with
#: SHA-256 object names (64 hex digits; SHA-1's are 40).
MAX_INPUT_CHARS = gate.MAX_UPDATES * (64 + 1 + 64 + 1 + 1) + gate.MAX_REF_BYTES_TOTAL


def ref_bytes(ref: str) -> int:
    """A ref name's length as git counts it (stdin is decoded with surrogateescape)."""
    return len(ref.encode("utf-8", "surrogateescape"))


def oversized(text: str, updates: Sequence[RefUpdate]) -> str | None:
    """Why a push is too big for the gate to take at all, or ``None``. Checked before any
    record holds a ref name: an agent's 300 refs of 20 KB names must not reach the log."""
    if len(text) > MAX_INPUT_CHARS:
        return f"more than {MAX_INPUT_CHARS} characters of ref updates"
    if len(updates) > gate.MAX_UPDATES:
        return f"{len(updates)} ref updates, more than the {gate.MAX_UPDATES} a push may make"
    longest = max((ref_bytes(u.ref) for u in updates), default=0)
    if longest > gate.MAX_REF_BYTES:
        return f"a ref name of {longest} bytes, longer than the {gate.MAX_REF_BYTES} allowed"
    total = sum(ref_bytes(u.ref) for u in updates)
    if total > gate.MAX_REF_BYTES_TOTAL:
        return f"{total} bytes of ref names, more than the {gate.MAX_REF_BYTES_TOTAL} allowed"
    return None


def read_updates(stdin: TextIO) -> tuple[list[RefUpdate], str | None]:
    """(the updates, ``None``) or, for a push too big to take (``oversized``), ([], why):
    the record then says how big it was and holds none of it."""
    given = stdin.read(MAX_INPUT_CHARS + 1)
    updates = parse_updates(given.splitlines())
    too_big = oversized(given, updates)
    return ([], too_big) if too_big is not None else (updates, None)


def record_sending(record: GateRecord, environ: Mapping[str, str]) -> OSError | None:
    """Write (fsynced) that this push goes upstream now, under an id of its own; the error
    if that failed. Before the push, since a record written only after it could be lost
    (the disk full, the hook killed) while the push landed."""
    sending = record.model_copy(
        update={"id": uuid.uuid4().hex, "decision": "allow", "reason": "sending upstream",
                "upstream": "sending"}
    )  # fmt: skip
    try:
        gate.write_record(sending, environ)
    except OSError as exc:
        return exc
    return None


def write_outcome(record: GateRecord, stderr: TextIO, environ: Mapping[str, str]) -> None:
    """The push's final record. Its outcome stands if this fails: a refusal refused, and a
    push that went upstream has its ``sending`` record on disk already."""
    try:
        gate.write_record(record, environ)
    except OSError as exc:
        print(f"git-gate: the record of this push was not written: {exc}", file=stderr)


def parse_updates(lines: Sequence[str]) -> list[RefUpdate]:
    updates = []
    for line in lines:
        fields = line.split()
        if len(fields) == 3:
            updates.append(RefUpdate(old=fields[0], new=fields[1], ref=fields[2]))
    return updates


def secret_values(
    config: gate.GateConfig, environ: Mapping[str, str]
) -> tuple[dlp.KnownSecret, ...]:
    """The bottle's secrets: the names egress watches (``BOTTLE_DLP_SECRETS``) and the tokens
    of every remote. (SSH keys are files by now; their header is a token shape.)"""
    tokens = [r.token_ref for r in config.remotes if r.token_ref]
    return dlp.known_secrets(dlp.secret_names(tokens, environ), environ)


def check(
    remote: GateRemote,
    updates: Sequence[RefUpdate],
    git_dir: Path,
    config: gate.GateConfig,
    environ: Mapping[str, str],
) -> tuple[list[str], list[scan.Finding]]:
    """(policy refusals, scan findings); ScanError when the scan could not run. Submodule
    entries are policy: an allowance through supervise never lets one by."""
    refused = policy.refusals(remote.policy, updates, git_dir, environ)
    if refused:
        return refused, []
    content = scan.read_push(git_dir, updates, environ)
    refused = gitlinks.refusals(remote.policy, git_dir, content, environ)
    if refused:
        return refused, []
    return [], scan.scan_content(git_dir, content, secret_values(config, environ), environ)


def allowance_for(remote: str, update: RefUpdate, environ: Mapping[str, str]) -> Allowance | None:
    """The operator's allowance for exactly this ref update, if there is one."""
    if update.new == ZERO:
        return None
    path = (
        gate.config_dir(environ)
        / gate.ALLOW_DIR
        / gate.allowance_name(remote, update.ref, update.new)
    )
    try:
        allowance = Allowance.model_validate_json(path.read_bytes())
    except (OSError, ValueError):
        return None
    if (allowance.remote, allowance.ref, allowance.commit) != (remote, update.ref, update.new):
        return None
    return allowance


def covering_allowances(
    remote: str,
    updates: Sequence[RefUpdate],
    findings: Sequence[scan.Finding],
    git_dir: Path,
    environ: Mapping[str, str],
) -> list[Allowance] | None:
    """The allowances that cover every finding (each one the operator allowed, in what an
    allowed update brings), or ``None`` when some finding is covered by none."""
    allowed: list[tuple[Allowance, set[str]]] = []
    for update in updates:
        allowance = allowance_for(remote, update, environ)
        if allowance is not None:
            # What no commit brings (a tag, a blob under it, the ref name) is found under
            # the pushed id itself.
            content = scan.read_push(git_dir, [update], environ)
            allowed.append((allowance, {update.new, *content.commits}))

    def covered(finding: scan.Finding) -> bool:
        return any(
            finding.commit in brought and str(finding) in allowance.findings
            for allowance, brought in allowed
        )

    if not allowed or not all(covered(f) for f in findings):
        return None
    return [allowance for allowance, _ in allowed]


def claim(allowances: Sequence[Allowance], environ: Mapping[str, str]) -> bool:
    """Mark each allowance used (O_EXCL in the gate's tmpfs); ``False`` if one already was,
    and then none stays claimed. Two pushes of one allowance at once: one wins."""
    used = gate.work_dir(environ) / gate.USED_DIR
    used.mkdir(parents=True, exist_ok=True)
    claimed: list[Allowance] = []
    for allowance in allowances:
        try:
            os.close(os.open(used / allowance.file_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            release(claimed, environ)
            return False
        claimed.append(allowance)
    return True


def release(allowances: Sequence[Allowance], environ: Mapping[str, str]) -> None:
    """Give allowances back: the push they were claimed for never reached upstream."""
    for allowance in allowances:
        with contextlib.suppress(FileNotFoundError):
            (gate.work_dir(environ) / gate.USED_DIR / allowance.file_name).unlink()


def how_to_ask(remote: str, updates: Sequence[RefUpdate]) -> list[str]:
    asks = [f"  remote={remote} ref={u.ref} commit={u.new}" for u in updates if u.new != ZERO]
    return [
        "If it is not a secret, ask the operator through supervise to let this push through",
        "once: the git-push-allow tool with the findings above, a justification and",
        *asks,
    ]


def one_of_each_rule_first(refused: Sequence[str]) -> list[str]:
    """At most SHOWN of ``refused`` (``ref: why``), in their order, with one of each distinct
    why among them: a hundred deletions must not hide that the push also sent a tag."""
    firsts: dict[str, int] = {}
    for index, line in enumerate(refused):
        firsts.setdefault(line.partition(": ")[2], index)
    picked = set(list(firsts.values())[:SHOWN])
    for index in range(len(refused)):
        if len(picked) >= SHOWN:
            break
        picked.add(index)
    return [refused[index] for index in sorted(picked)]


def refusal_text(
    remote: str,
    refused: Sequence[str],
    findings: Sequence[scan.Finding],
    updates: Sequence[RefUpdate] = (),
) -> str:
    if refused:
        lines = [f"git-gate: push to {remote} refused by the bottle's push policy:"]
        lines += [f"  {r}" for r in one_of_each_rule_first(refused)]
        if len(refused) > SHOWN:
            lines.append(f"  … and {len(refused) - SHOWN} more")
        lines.append(
            "Nothing was pushed upstream. The policy is the operator's; ask them if it must change."
        )
        return "\n".join(lines)
    lines = [f"git-gate: push to {remote} refused: the commits contain what looks like a secret:"]
    lines += [f"  {f}" for f in findings[:SHOWN]]
    if len(findings) > SHOWN:
        lines.append(f"  … and {len(findings) - SHOWN} more")
    lines += [
        "Nothing was pushed upstream. Remove it from every commit that has it (git rebase -i,",
        "git commit --amend), not just the last one, then push again.",
        *how_to_ask(remote, updates),
    ]
    return "\n".join(lines)


def run(stdin: TextIO, stderr: TextIO, environ: Mapping[str, str] = os.environ) -> int:
    if environ.get(gate.PROBE_ENV):
        return 0  # the gate checking at start that git can run this hook at all
    start = time.monotonic()
    name = environ.get(gate.REMOTE_ENV, "")
    config = gate.load_config(environ)
    remote = config.remote(name)
    git_dir = Path(environ.get("GIT_DIR", ".")).resolve()
    updates, too_big = read_updates(stdin)
    # A ref's name is the agent's text too: a secret in it goes to no log and no message.
    known = secret_values(config, environ)
    shown_refs = [u.model_copy(update={"ref": dlp.redact(u.ref, known)}) for u in updates]
    record = GateRecord(op="push", remote=name, decision="refuse", refs=shown_refs)

    def elapsed() -> dict[str, object]:
        return {"duration_ms": int((time.monotonic() - start) * 1000)}

    def done(code: int, message: str, **fields: object) -> int:
        if message:
            print(message, file=stderr, flush=True)
        write_outcome(record.model_copy(update=fields | elapsed()), stderr, environ)
        return code

    if remote is None:
        return done(1, f"git-gate: no remote {name!r} in this bottle", reason="unknown remote")
    if too_big is not None:
        return done(
            1,
            f"git-gate: push to {name} refused: {too_big}. Nothing was pushed upstream. "
            f"Push at most {gate.MAX_UPDATES} refs at once, each name at most "
            f"{gate.MAX_REF_BYTES} bytes.",
            reason=f"policy: {too_big}",
        )
    try:
        refused, findings = check(remote, updates, git_dir, config, environ)
        record = record.model_copy(update={"scan_ms": int((time.monotonic() - start) * 1000)})
    except scan.ScanError as exc:
        return done(
            1,
            f"git-gate: push refused: the secret scan failed ({exc}); nothing was pushed",
            reason=str(exc),
            scan="failed",
        )
    if refused:
        refused = [dlp.redact(r, known) for r in refused]
        return done(1, refusal_text(name, refused, []), reason="policy: " + "; ".join(refused))
    allowed: list[Allowance] = []
    if findings:
        found = {"scan": "findings", "findings": [str(f) for f in findings]}
        try:
            covering = covering_allowances(name, updates, findings, git_dir, environ)
        except scan.ScanError as exc:
            return done(1, f"git-gate: push refused: {exc}", reason=str(exc), **found)
        if covering is None:
            text = refusal_text(name, [], findings, shown_refs)
            return done(1, text, reason="secret scan", **found)
        if not claim(covering, environ):
            return done(
                1,
                f"git-gate: push to {name} refused: the operator's allowance for it was "
                "used already (an allowance lets one push through, once). Ask again.",
                reason="secret scan; allowance used already",
                **found,
            )
        allowed = covering
        ids = [a.proposal_id for a in allowed]
        print(
            f"git-gate: the scan found {len(findings)} finding(s); pushing anyway, once, as "
            f"the operator allowed (proposal {', '.join(map(str, ids))})",
            file=stderr,
            flush=True,
        )
        record = record.model_copy(update=found | {"allowed_by": ids})
    scanned = "allowed" if allowed else "clean"
    specs = policy.refspecs(remote.policy, updates, git_dir, environ)
    unrecorded = record_sending(record.model_copy(update={"scan": scanned} | elapsed()), environ)
    if unrecorded is not None:
        release(allowed, environ)
        print(
            f"git-gate: push to {name} refused: the gate could not record it ({unrecorded}); "
            "nothing was pushed upstream",
            file=stderr,
            flush=True,
        )
        return 1
    try:
        ok, answer = upstream.push(
            remote,
            git_dir,
            specs,
            config=gate.config_dir(environ),
            secrets=gate.secrets_dir(environ),
            environ=environ,
        )
    except upstream.UpstreamError as exc:
        release(allowed, environ)
        return done(
            1,
            f"git-gate: could not push to {name}: {exc}",
            decision="error",
            reason=str(exc),
            scan=scanned,
        )
    secrets = secret_values(config, environ)
    shown = dlp.redact(answer, secrets)
    if ok:
        return done(
            0,
            f"git-gate: pushed to {name}:\n{shown}",
            decision="allow",
            scan=scanned,
            upstream="ok",
        )
    release(allowed, environ)
    return done(
        1,
        f"git-gate: {name} rejected the push:\n{shown}",
        decision="refuse",
        reason="upstream rejected",
        scan=scanned,
        upstream="rejected",
    )


def main() -> None:
    # Ref names are bytes to git: surrogateescape carries any of them through to the
    # upstream push unchanged (and into the log only as JSON escapes).
    stdin = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
    sys.exit(run(stdin, sys.stderr))


if __name__ == "__main__":
    main()
