"""The gate's side of a remote: where it is, how to reach it, and its credential.

The credential never goes on a command line or into a log: an SSH key is a 0600 file on the
gate's tmpfs (``prepare_keys``), named by ``GIT_SSH_COMMAND``; an HTTPS token stays in the
gate's environment and reaches git through a credential helper that reads the variable.
The host is resolved and checked before every connection, and git is pointed at the address
that passed the check, so a name cannot be re-resolved to a loopback or metadata address.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
import socket
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bottle import layout
from bottle.runtime.git_gate import GateRemote, known_hosts_file

FETCH_TIMEOUT = 600.0
#: Packs a mirror may hold before a fetch merges them (see _tidy).
MAX_PACKS = 32
#: What any program the gate starts needs of its environment to run as the gate's user.
RUN_ENV = (
    "PATH",
    "HOME",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "TZ",
    "LD_PRELOAD",
    "NSS_WRAPPER_PASSWD",
    "NSS_WRAPPER_GROUP",
)
#: Variables git and ssh may see; everything else (other secrets above all) is left out.
#: (The object-directory ones let a push from the hook read the pushed, quarantined objects.)
_PASS_ENV = (
    *RUN_ENV,
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
)
#: Cloud metadata endpoints outside the link-local ranges.
_METADATA = frozenset(
    {ipaddress.ip_address("fd00:ec2::254"), ipaddress.ip_address("100.100.100.200")}
)
_SCP_LIKE = re.compile(
    r"^(?:(?P<user>[^@/\s]+)@)?(?P<host>\[[^\]]+\]|[^:/\s]+):(?P<path>[^/].*|/.*)$"
)


class UpstreamError(Exception):
    """An upstream could not be used; ``str()`` is meant for the agent and the log."""


@dataclass(frozen=True)
class Target:
    scheme: str  # "ssh" | "https"
    host: str
    port: int | None
    user: str | None
    path: str

    def url_for(self, address: str) -> str:
        """The URL of the same repository at ``address`` (the checked IP)."""
        host = f"[{address}]" if ":" in address else address
        user = f"{self.user}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        path = self.path if self.path.startswith("/") else "/~/" + self.path
        return f"{self.scheme}://{user}{host}{port}{path}"


def parse_url(url: str) -> Target:
    """``ssh://``, ``https://`` or scp-like ``user@host:path``; anything else is refused."""
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme not in ("ssh", "https") or not parts.hostname:
            raise UpstreamError(
                f"unsupported remote URL {url!r}: use ssh://, user@host: or https://"
            )
        if parts.password:
            raise UpstreamError("a remote URL must not carry a password; use token_ref")
        return Target(parts.scheme, parts.hostname, parts.port, parts.username, parts.path or "/")
    match = _SCP_LIKE.match(url)
    if not match:
        raise UpstreamError(f"unsupported remote URL {url!r}: use ssh://, user@host: or https://")
    return Target("ssh", match["host"].strip("[]"), None, match["user"], match["path"])


def check_address(host: str, port: int) -> str:
    """The first address of ``host``, refusing the name if any address is one the gate must
    never connect to (loopback, link-local, unspecified, multicast, cloud metadata)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UpstreamError(f"cannot resolve {host}: {exc}") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    for text in addresses:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
            ip = ip.ipv4_mapped
        if (
            ip.is_loopback
            or ip.is_link_local
            or ip.is_unspecified
            or ip.is_multicast
            or ip in _METADATA
        ):
            raise UpstreamError(f"{host} resolves to {ip}, an address git-gate never connects to")
    if not addresses:
        raise UpstreamError(f"cannot resolve {host}")
    return addresses[0]


def key_path(secrets: Path, remote: str) -> Path:
    return secrets / f"{remote}.key"


def prepare_keys(remotes: Sequence[GateRemote], environ: dict[str, str], secrets: Path) -> None:
    """Write each SSH key from its variable to a 0600 file, then drop the variable, so no
    child process (http-backend, a hook, git) inherits the key itself."""
    secrets.mkdir(parents=True, exist_ok=True)
    os.chmod(secrets, 0o700)
    for remote in remotes:
        if not remote.key_ref or remote.key_ref not in environ:
            continue
        key = environ[remote.key_ref].replace("\r\n", "\n").strip() + "\n"
        path = key_path(secrets, remote.name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(key)
    for remote in remotes:
        if remote.key_ref:
            environ.pop(remote.key_ref, None)


def _base_env(environ: Mapping[str, str]) -> dict[str, str]:
    env = {k: environ[k] for k in _PASS_ENV if k in environ}
    env.setdefault("HOME", "/tmp")
    env |= {
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
    }
    return env


def config_env(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    env = {"GIT_CONFIG_COUNT": str(len(pairs))}
    for index, (key, value) in enumerate(pairs):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def ssh_command(known_hosts: Path, key: Path | None, alias: str) -> str:
    argv = [
        "ssh",
        "-F",
        "/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
        "-o",
        f"HostKeyAlias={alias}",
        "-o",
        "CheckHostIP=no",
        "-o",
        "ConnectTimeout=20",
        "-o",
        "IdentitiesOnly=yes",
    ]
    argv += ["-i", str(key)] if key is not None else ["-o", "PubkeyAuthentication=no"]
    return shlex.join(argv)


@dataclass(frozen=True)
class Connection:
    """How to run git against one remote now: its URL (at a checked address) and environment."""

    url: str
    env: dict[str, str]
    target: Target
    address: str


def connect(
    remote: GateRemote, *, config: Path, secrets: Path, environ: Mapping[str, str]
) -> Connection:
    target = parse_url(remote.url)
    port = target.port or (22 if target.scheme == "ssh" else 443)
    address = check_address(target.host, port)
    env = _base_env(environ)
    if target.scheme == "ssh":
        key = key_path(secrets, remote.name)
        env["GIT_SSH_COMMAND"] = ssh_command(
            config / known_hosts_file(remote.name), key if key.is_file() else None, remote.name
        )
        env["GIT_SSH_VARIANT"] = "ssh"
        return Connection(target.url_for(address), env, target, address)
    pairs = [("http.curloptResolve", f"{target.host}:{port}:{address}")]
    if remote.token_ref and environ.get(remote.token_ref):
        # The helper reads the token from the gate's environment when git asks: it is never
        # in an argument list or a config file.
        user = target.user or "x-access-token"
        helper = (
            "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' "
            f'{shlex.quote(user)} "${remote.token_ref}"; }}; f'
        )
        pairs.append(("credential.helper", helper))
        env[remote.token_ref] = environ[remote.token_ref]
    env["GIT_SSL_CAINFO"] = environ.get("GIT_SSL_CAINFO") or str(layout.HOST_CA)
    env |= config_env(pairs)
    url = f"https://{target.host}{f':{target.port}' if target.port else ''}{target.path}"
    return Connection(url, env, target, address)


def run_git(
    args: Sequence[str], conn: Connection, *, cwd: Path, timeout: float = FETCH_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=conn.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            errors="replace",
        )
    except subprocess.TimeoutExpired:
        raise UpstreamError(f"{conn.target.host} did not answer within {timeout:.0f}s") from None


def fetch(
    remote: GateRemote, mirror: Path, *, config: Path, secrets: Path, environ: Mapping[str, str]
) -> None:
    """Bring the mirror's branches and tags to upstream's; UpstreamError says why not."""
    conn = connect(remote, config=config, secrets=secrets, environ=environ)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # A new mirror asks upstream for its default branch too: over a connection of its
        # own, beside the fetch rather than after it (a cold clone waits for both).
        head = None if _has_head(conn, mirror) else pool.submit(_upstream_head, conn, mirror)
        done = run_git(
            [
                "fetch",
                "--quiet",
                "--prune",
                "--no-write-fetch-head",
                conn.url,
                "+refs/heads/*:refs/heads/*",
                "+refs/tags/*:refs/tags/*",
            ],
            conn,
            cwd=mirror,
        )
        if done.returncode != 0:
            raise UpstreamError(_explain(remote, conn, done.stderr, config))
        branch = head.result() if head is not None else None
    if head is None and not _has_head(conn, mirror):  # the fetch pruned HEAD's branch
        branch = _upstream_head(conn, mirror)
    if branch:
        run_git(["symbolic-ref", "HEAD", branch], conn, cwd=mirror)
    _tidy(conn, mirror)


def _tidy(conn: Connection, mirror: Path) -> None:
    """Every fetch that brings something keeps it as a pack of its own: past ``MAX_PACKS``
    they are merged geometrically (big packs stay as they are, so it stays cheap)."""
    packs = list((mirror / "objects" / "pack").glob("*.pack"))
    if len(packs) > MAX_PACKS:
        run_git(["repack", "-d", "-q", "--geometric=2"], conn, cwd=mirror)


def _has_head(conn: Connection, mirror: Path) -> bool:
    """Whether the mirror's HEAD names a branch it has (so a clone checks it out)."""
    head = run_git(["symbolic-ref", "-q", "HEAD"], conn, cwd=mirror).stdout.strip()
    return (
        bool(head)
        and run_git(["rev-parse", "-q", "--verify", head], conn, cwd=mirror).returncode == 0
    )


def _upstream_head(conn: Connection, mirror: Path) -> str | None:
    """Upstream's default branch (``refs/heads/…``), or None if it names none."""
    listed = run_git(["ls-remote", "--symref", conn.url, "HEAD"], conn, cwd=mirror).stdout
    match = re.search(r"^ref: (refs/heads/\S+)\tHEAD$", listed, flags=re.MULTILINE)
    return match[1] if match else None


def push(
    remote: GateRemote,
    mirror: Path,
    refspecs: Sequence[str],
    *,
    config: Path,
    secrets: Path,
    environ: Mapping[str, str],
) -> tuple[bool, str]:
    """Push ``refspecs`` upstream; (accepted, upstream's answer as git printed it)."""
    conn = connect(remote, config=config, secrets=secrets, environ=environ)
    options = [s for s in refspecs if s.startswith("--")]
    specs = [s for s in refspecs if not s.startswith("--")]
    # --atomic: all refs land or none do, so a "refused" record never hides a ref that landed.
    argv = ["push", "--porcelain", "--atomic", *options, conn.url, *specs]
    done = run_git(argv, conn, cwd=mirror)
    answer = (done.stdout + done.stderr).strip()
    if done.returncode != 0 and "Host key verification failed" in done.stderr:
        answer = _explain(remote, conn, done.stderr, config)
    return done.returncode == 0, answer


def _explain(remote: GateRemote, conn: Connection, stderr: str, config: Path) -> str:
    if "Host key verification failed" in stderr:
        expected = fingerprints(
            (config / known_hosts_file(remote.name)).read_text(errors="replace")
        )
        seen = _scan_host_keys(conn)
        return (
            f"the SSH host key of {conn.target.host} does not match the key pinned for remote "
            f"{remote.name!r}: expected {', '.join(expected) or 'none'}; seen "
            f"{', '.join(seen) or 'unknown'}. Nothing was fetched or pushed. If the host's key "
            "really changed, the operator updates git.remotes[].host_key in the bottle."
        )
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return f"upstream {conn.target.host} refused: " + (" / ".join(lines[-3:]) or "no answer")


def fingerprints(known_hosts: str) -> list[str]:
    """``TYPE SHA256:…`` of every key in a known_hosts text (its host field ignored)."""
    out = []
    for line in known_hosts.splitlines():
        fields = line.split()
        if len(fields) < 3 or line.startswith("#"):
            continue
        done = subprocess.run(
            ["ssh-keygen", "-l", "-f", "-"],
            input=f"x {fields[-2]} {fields[-1]}\n",
            capture_output=True,
            text=True,
            check=False,
        )
        parts = done.stdout.split()
        if done.returncode == 0 and len(parts) >= 2:
            out.append(f"{parts[-1].strip('()')} {parts[1]}")
    return out


def _scan_host_keys(conn: Connection) -> list[str]:
    port = conn.target.port or 22
    try:
        done = subprocess.run(
            ["ssh-keyscan", "-T", "5", "-p", str(port), conn.address],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return []
    return fingerprints(done.stdout)
