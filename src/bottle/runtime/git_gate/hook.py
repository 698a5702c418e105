"""``pre-receive`` of every mirror (``python -m bottle.runtime.git_gate.hook``).

Runs inside ``git receive-pack`` after the pushed objects arrived (in quarantine) and before
any ref moves. In order: the push policy, the secret scan of every new commit, then the push
upstream with the gate's credential. Whatever this prints reaches the agent's ``git push``
as ``remote:`` lines; a non-zero exit leaves both the mirror and upstream unchanged.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

from bottle.runtime import git_gate as gate
from bottle.runtime.egress import dlp
from bottle.runtime.git_gate import ZERO, GateRecord, GateRemote, RefUpdate, policy, scan, upstream

#: Findings shown to the agent; the log keeps them all.
SHOWN = 20


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
    """(policy refusals, scan findings); ScanError when the scan could not run."""
    refused = policy.refusals(remote.policy, updates, git_dir, environ)
    if refused:
        return refused, []
    tips = [u.new for u in updates if u.new != ZERO]
    commits = scan.new_commits(git_dir, tips, environ)
    findings = scan.scan_known(
        scan.added_lines(git_dir, commits, environ), secret_values(config, environ)
    )
    findings += scan.scan_gitleaks(git_dir, commits, environ)
    return [], findings


def refusal_text(remote: str, refused: Sequence[str], findings: Sequence[scan.Finding]) -> str:
    if refused:
        lines = [f"git-gate: push to {remote} refused by the bottle's push policy:"]
        lines += [f"  {r}" for r in refused]
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
        "git commit --amend), not just the last one, then push again. If it is not a secret,",
        "ask the operator through supervise to let this push through.",
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
    updates = parse_updates(stdin.read().splitlines())
    record = GateRecord(op="push", remote=name, decision="refuse", refs=updates)

    def done(code: int, message: str, **fields: object) -> int:
        if message:
            print(message, file=stderr, flush=True)
        final = record.model_copy(
            update=fields | {"duration_ms": int((time.monotonic() - start) * 1000)}
        )
        gate.write_record(final, environ)
        return code

    if remote is None:
        return done(1, f"git-gate: no remote {name!r} in this bottle", reason="unknown remote")
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
        return done(1, refusal_text(name, refused, []), reason="policy: " + "; ".join(refused))
    if findings:
        return done(
            1,
            refusal_text(name, [], findings),
            reason="secret scan",
            scan="findings",
            findings=[str(f) for f in findings],
        )
    specs = policy.refspecs(remote.policy, updates, git_dir, environ)
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
        return done(
            1,
            f"git-gate: could not push to {name}: {exc}",
            decision="error",
            reason=str(exc),
            scan="clean",
        )
    secrets = secret_values(config, environ)
    shown = dlp.redact(answer, secrets)
    if ok:
        return done(
            0,
            f"git-gate: pushed to {name}:\n{shown}",
            decision="allow",
            scan="clean",
            upstream="ok",
        )
    return done(
        1,
        f"git-gate: {name} rejected the push:\n{shown}",
        decision="refuse",
        reason="upstream rejected",
        scan="clean",
        upstream="rejected",
    )


def main() -> None:
    sys.exit(run(sys.stdin, sys.stderr))


if __name__ == "__main__":
    main()
