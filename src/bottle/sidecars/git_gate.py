"""git-gate: brokered git to the bottle's declared remotes.

The agent's git rewrites each remote URL (``insteadOf``) to the gate; the gate
(``bottle.runtime.git_gate``) fetches from the real remote into a mirror and, on push,
enforces the push policy and scans every new commit for secrets before forwarding with a
credential only it holds. Enabled only when the bottle declares remotes.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from bottle import layout
from bottle.errors import ManifestError
from bottle.manifest.models import Name, Strict
from bottle.policy import EnvName
from bottle.runtime import git_gate as runtime
from bottle.runtime.git_gate import GateConfig, GateRemote, PushPolicy
from bottle.sidecars._common import bind, sidecar_base
from bottle.sidecars.base import AgentAddon, PlanContext, SidecarBase

if TYPE_CHECKING:
    from bottle.plan import BottlePlan

#: Where the gate keeps its mirrors and its key files: tmpfs, so nothing outlives the
#: instance and the root filesystem can stay read-only.
WORK = "/var/lib/git-gate"
SECRETS = "/run/git-gate"
_KEY_TYPES = frozenset(
    {
        "ssh-ed25519",
        "ssh-rsa",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "sk-ssh-ed25519@openssh.com",
        "sk-ecdsa-sha2-nistp256@openssh.com",
    }
)
_REFS = r"^[A-Za-z0-9._/*+-]+$"
RefList = tuple[str, ...]


def _ref_patterns(value: bool | RefList, *, every: str) -> tuple[str, ...]:
    """``true``: ``every``; ``false``: none; a list: full ref names (``main`` is a branch)."""
    if value is True:
        return (every,)
    if value is False:
        return ()
    return tuple(v if v.startswith("refs/") else f"refs/heads/{v}" for v in value)


class GitRemote(Strict):
    """A remote the agent may fetch from and push to, through git-gate."""

    name: Name
    url: str = Field(description="ssh (git@host:path, ssh://…) or https URL of the real remote")
    key_ref: EnvName | None = Field(
        None, description="host variable holding the private SSH key (ssh remotes)"
    )
    token_ref: EnvName | None = Field(
        None, description="host variable holding an HTTPS token (https remotes)"
    )
    host_key: str | None = Field(
        None, description="pinned known_hosts line (or 'type key') of the SSH host; required"
    )
    push: bool | RefList = Field(
        True, description="false, true (every branch) or the refs it may push (main, refs/…)"
    )
    force: bool | RefList = Field(False, description="refs that may be force-pushed")
    tags: bool = Field(False, description="may push tags (refs/tags/*)")
    delete: bool | RefList = Field(False, description="refs that may be deleted")
    submodules: bool = Field(
        False, description="may push submodule entries naming commits of other repositories"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if re.match(r"^(https://|ssh://)[^/\s]+/\S+$|^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:\S+$", value):
            return value
        raise ValueError(
            f"{value!r} is not a git remote URL: use https://host/path, ssh://user@host/path "
            "or user@host:path"
        )

    @field_validator("push", "force", "delete")
    @classmethod
    def _refs(cls, value: bool | RefList) -> bool | RefList:
        if isinstance(value, tuple):
            bad = [v for v in value if not re.match(_REFS, v) or ".." in v]
            if bad:
                raise ValueError(f"not ref names or patterns: {', '.join(map(repr, bad))}")
        return value

    @property
    def ssh(self) -> bool:
        return not self.url.startswith("https://")

    def policy(self) -> PushPolicy:
        refs = _ref_patterns(self.push, every="refs/heads/*")
        if self.tags and refs:
            refs += ("refs/tags/*",)
        return PushPolicy(
            refs=refs,
            force=_ref_patterns(self.force, every="*"),
            delete=_ref_patterns(self.delete, every="*"),
            submodules=self.submodules,
        )

    def public(self) -> dict[str, Any]:
        """What ``bottle ls``/``metadata.json`` show: never a credential, nor its name's value."""
        policy = self.policy()
        return {"name": self.name, "url": self.url, "push": list(policy.refs)}


def host_key_entry(line: str, alias: str) -> str:
    """``alias type key``: the pinned key under the name the gate's ssh looks it up by.

    Accepts a known_hosts line (``host[,host…] type key [comment]``) or ``type key``.
    """
    fields = line.split()
    for index, field in enumerate(fields[:-1]):
        if field in _KEY_TYPES:
            blob = fields[index + 1]
            try:
                raw = base64.b64decode(blob, validate=True)
            except (binascii.Error, ValueError):
                break
            size = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else 0
            if raw[4 : 4 + size] != field.encode():
                break
            return f"{alias} {field} {blob}"
    raise ValueError("not a pinned SSH host key: give 'type base64-key' or a known_hosts line")


class Git(Strict):
    """``git:`` of a bottle file."""

    remotes: tuple[GitRemote, ...] = ()

    @model_validator(mode="after")
    def _unique(self) -> Git:
        names = [r.name for r in self.remotes]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"remote names must be unique; repeated: {', '.join(dupes)}")
        return self


class GitGatePlan(Strict):
    remotes: tuple[GitRemote, ...]

    @property
    def secret_refs(self) -> tuple[str, ...]:
        refs = [r.key_ref or r.token_ref for r in self.remotes]
        return tuple(dict.fromkeys(ref for ref in refs if ref))


def _check(remote: GitRemote, index: int, ctx: PlanContext) -> None:
    def error(field: str, message: str, hint: str) -> ManifestError:
        return ManifestError(
            message, path=ctx.path, field=f"git.remotes[{index}].{field}", hint=hint
        )

    if remote.ssh:
        if remote.token_ref:
            raise error("token_ref", "an ssh remote takes key_ref, not token_ref", "Use key_ref.")
        if not remote.host_key:
            raise error(
                "host_key",
                f"ssh remote {remote.name!r} has no pinned host key",
                "Add host_key: the server's public host key, e.g. a line of "
                "'ssh-keyscan <host>' checked against what the host publishes.",
            )
        try:
            host_key_entry(remote.host_key, remote.name)
        except ValueError as exc:
            raise error("host_key", str(exc), "Copy a line of 'ssh-keyscan <host>'.") from None
    elif remote.key_ref or remote.host_key:
        field = "key_ref" if remote.key_ref else "host_key"
        raise error(field, f"an https remote takes no {field}", "Use token_ref for https.")


class _GitGate(SidecarBase[Git, GitGatePlan]):
    name = runtime.NAME
    section = "git"
    section_model = Git
    plan_model = GitGatePlan
    direct = True

    def merge(self, base: Git | None, child: Git | None) -> Git | None:
        """Remotes add up by name; the child's remote of a name wins."""
        remotes = {r.name: r for r in (base.remotes if base else ())}
        remotes.update({r.name: r for r in (child.remotes if child else ())})
        return Git(remotes=tuple(remotes.values())) if remotes else None

    def plan(self, section: Git | None, ctx: PlanContext) -> GitGatePlan | None:
        if not section or not section.remotes:
            return None
        for index, remote in enumerate(section.remotes):
            _check(remote, index, ctx)
        return GitGatePlan(remotes=section.remotes)

    def secret_refs(self, sub: GitGatePlan) -> tuple[str, ...]:
        return sub.secret_refs

    def cautions(self, sub: GitGatePlan) -> Sequence[tuple[str, str]]:
        found = []
        for remote in sub.remotes:
            if remote.ssh and not remote.key_ref:
                found.append(
                    (
                        f"ssh remote {remote.name!r} has no key_ref: fetches and pushes to it "
                        "fail to authenticate",
                        "add key_ref: the host variable holding its private key",
                    )
                )
            elif not remote.ssh and not remote.token_ref:
                found.append(
                    (
                        f"https remote {remote.name!r} has no token_ref: only anonymous "
                        "fetches work, pushes fail",
                        "add token_ref: the host variable holding its token",
                    )
                )
        return found

    def summary(self, section: Git | None) -> dict[str, int | bool]:
        return {"remotes": len(section.remotes) if section else 0}

    def describe(self, sub: GitGatePlan) -> dict[str, Any]:
        return {"remotes": [r.public() for r in sub.remotes]}

    def import_records(self, state_dir: Path) -> str | None:
        """Its pushes, logged to ``logs/``, become audit entries (``bottle.gate_audit``)."""
        from bottle import gate_audit

        return gate_audit.try_import(state_dir)

    def files(self, sub: GitGatePlan) -> Mapping[str, bytes]:
        config = GateConfig(
            remotes=tuple(
                GateRemote(
                    name=r.name,
                    url=r.url,
                    key_ref=r.key_ref,
                    token_ref=r.token_ref,
                    policy=r.policy(),
                )
                for r in sub.remotes
            )
        )
        files = {runtime.CONFIG_FILE: config.to_json()}
        for remote in sub.remotes:
            if remote.host_key:
                entry = host_key_entry(remote.host_key, remote.name)
                files[runtime.known_hosts_file(remote.name)] = entry.encode() + b"\n"
        return files

    def compose_service(self, sub: GitGatePlan, plan: BottlePlan) -> dict[str, Any]:
        state = plan.state_dir
        service = sidecar_base(plan, self.name, "bottle.runtime.git_gate")
        # Every secret of the bottle, by name: the gate scans pushes for their values (the
        # forms egress checks); its own credentials are among them.
        watched = tuple(dict.fromkeys((*plan.secret_refs, *sub.secret_refs)))
        service |= {
            "environment": [f"BOTTLE_DLP_SECRETS={','.join(watched)}", *watched],
            "volumes": [
                bind(
                    state / "live-config" / self.name,
                    layout.LIVE_CONFIG / self.name,
                    read_only=True,
                ),
                bind(state / "status", layout.STATUS),
                bind(state / "logs", layout.LOGS),
            ],
            # exec: the mirrors' pre-receive hook lives there (docker's default is noexec,
            # and git skips a hook it cannot run; the gate probes it at start).
            "tmpfs": [*service.get("tmpfs", []), f"{WORK}:exec,mode=1777", f"{SECRETS}:mode=1777"],
            "labels": service["labels"]
            | {"bottle.git-gate.remotes": " ".join(f"{r.name}={r.url}" for r in sub.remotes)},
            "networks": ["internal", "egress"],
        }
        return service

    def agent(self, sub: GitGatePlan, *, direct: Sequence[str]) -> AgentAddon:
        """insteadOf rewrites that send every declared remote through the gate."""
        lines = []
        for remote in sub.remotes:
            gate = f"http://{self.name}:{layout.GIT_GATE_PORT}/{remote.name}.git"
            lines += [f'[url "{gate}"]', f"\tinsteadOf = {remote.url}"]
        return AgentAddon(gitconfig="\n".join(lines) + "\n")


SIDECAR = GIT_GATE = _GitGate()
