"""A cold fetch relayed to upstream and stored as it passes (not wired into the server yet).

A ``Channel`` is one protocol v2 conversation with upstream's ``git-upload-pack`` over a
child process's stdin/stdout (``ssh … git-upload-pack`` speaks it so; a local ``git
upload-pack`` in the tests). ``relay_fetch`` sends the agent's request as it is and tees
the answer: the agent gets upstream's pkt-lines unchanged while ``git index-pack`` stores
the pack in the mirror; ``store_refs`` then moves the mirror's refs to what upstream listed,
only for tips whose whole history is in the mirror. Every doubt is ``Fallback``: the caller
uses fetch-then-serve instead (before anything reached the agent) or fails the request.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import IO

from bottle.runtime.git_gate import pktline
from bottle.runtime.git_gate.pktline import DELIM, FLUSH, FetchRequest, ProtocolError, pkt
from bottle.runtime.git_gate.upstream import FETCH_TIMEOUT, Target

_REF_LINE = re.compile(
    rb"^(?P<oid>[0-9a-f]{40}) (?P<ref>refs/(?:heads|tags)/[\x21-\x7e]{1,1000}|HEAD)"
    rb"(?: symref-target:(?P<target>refs/heads/[\x21-\x7e]{1,1000}))?"
    rb"(?: peeled:[0-9a-f]{40})?$"
)


#: What an ls-refs with "unborn" answers for an empty upstream's HEAD.
_UNBORN = re.compile(rb"^unborn HEAD symref-target:refs/heads/[\x21-\x7e]{1,1000}$")
_PREFIXES = (b"HEAD", b"refs/heads/", b"refs/tags/")


class Fallback(Exception):
    """The relay cannot be used for this fetch; ``str()`` says why (for the log)."""


def ssh_argv(ssh_command: str, target: Target, address: str) -> list[str]:
    """``ssh … git-upload-pack '<path>'`` as git itself runs it, asking for protocol v2."""
    path = target.path[1:] if target.path.startswith("/~") else target.path
    host = f"{target.user}@{address}" if target.user else address
    port = ["-p", str(target.port)] if target.port else []
    quoted = "'" + path.replace("'", "'\\''") + "'"
    return [*shlex.split(ssh_command), "-o", "SendEnv=GIT_PROTOCOL", *port, host,
            f"git-upload-pack {quoted}"]  # fmt: skip


class Channel:
    """Upstream's upload-pack, protocol v2, stateful, on a child process's pipes."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:  # fmt: skip
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=dict(env), cwd=cwd,
        )  # fmt: skip
        # A silent upstream must not hold the remote's lock: past the timeout its reads end.
        self.watchdog = threading.Timer(timeout, self.proc.kill)
        self.watchdog.daemon = True
        self.watchdog.start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.send: IO[bytes] = self.proc.stdin
        self.recv: IO[bytes] = self.proc.stdout
        try:
            self.capabilities = self._advertisement()
        except (ProtocolError, Fallback):
            self.close()
            raise
        if not {b"fetch", b"ls-refs"} <= {c.split(b"=", 1)[0] for c in self.capabilities}:
            self.close()
            raise Fallback("upstream offers no v2 fetch and ls-refs")

    def _advertisement(self) -> list[bytes]:
        _, first = pktline.read_pkt(self.recv)
        if first is None or first.rstrip(b"\n") != b"version 2":
            raise Fallback("upstream does not speak protocol v2 here")
        capabilities: list[bytes] = []
        while True:
            _, line = pktline.read_pkt(self.recv)
            if line is None:
                return capabilities
            capabilities.append(line.rstrip(b"\n"))

    def relay_ls_refs(self, body: bytes) -> bytes:
        """The agent's ls-refs (``pktline.is_plain_ls_refs``) answered by upstream, whole,
        every line checked before any of it is returned."""
        self.send.write(body)
        self.send.flush()
        answer = b""
        while True:
            raw, line = pktline.read_pkt(self.recv)
            answer += raw
            if line is None:
                if raw != FLUSH:
                    raise Fallback("upstream's ls-refs answer did not end with a flush")
                return answer
            text = line.rstrip(b"\n")
            if _REF_LINE.match(text) is None and _UNBORN.match(text) is None:
                raise Fallback("upstream listed a ref this relay does not take")

    def ls_refs(self) -> tuple[dict[str, str], str | None]:
        """Upstream's branches and tags (name -> id) and the branch its HEAD names."""
        self.send.write(
            pkt(b"command=ls-refs\n") + DELIM + pkt(b"symrefs\n")
            + b"".join(pkt(b"ref-prefix %s\n" % p) for p in _PREFIXES) + FLUSH
        )  # fmt: skip
        self.send.flush()
        refs: dict[str, str] = {}
        head = None
        while True:
            _, line = pktline.read_pkt(self.recv)
            if line is None:
                return refs, head
            match = _REF_LINE.match(line.rstrip(b"\n"))
            if match is None:
                raise Fallback("upstream listed a ref this relay does not take")
            if match["ref"] == b"HEAD":
                head = match["target"].decode() if match["target"] else None
            else:
                refs[match["ref"].decode()] = match["oid"].decode()

    def close(self) -> None:
        self.watchdog.cancel()
        for pipe in (self.send, self.recv):
            with suppress(OSError):
                pipe.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def relay_fetch(
    request: FetchRequest,
    channel: Channel,
    mirror: Path,
    out: pktline.Writer,
    answered: Callable[[], None] = lambda: None,
) -> str | None:
    """Send ``request`` upstream, forward the answer to ``out`` and store its pack in
    ``mirror``; the pack's name once ``git index-pack`` took it whole, None if no pack came.
    ``answered`` runs as soon as the whole answer is in ``out``. The pack stays kept
    (``.keep``) until ``release``: no repack drops it before its refs are stored.

    ProtocolError once bytes reached ``out`` (the agent's clone then fails; nothing
    unchecked is stored: index-pack keeps a pack only if its checksum and objects hold)."""
    packs = mirror / "objects" / "pack"
    before = set(packs.glob("tmp_pack_*"))
    index = subprocess.Popen(
        ["git", "index-pack", "--stdin", "--fix-thin", "--keep=relayed"], cwd=mirror,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert index.stdin is not None and index.stderr is not None and index.stdout is not None
    try:
        channel.send.write(request.raw)
        channel.send.flush()
        try:
            packed = pktline.tee_fetch_response(channel.recv, out, _Sink(index.stdin))
            # The agent has its whole answer: it need not wait for the mirror's index-pack.
            answered()
        finally:
            with suppress(OSError):
                index.stdin.close()
    finally:
        said = index.stdout.read()
        error = index.stderr.read()
        code = index.wait()
    if code != 0:
        for left in set(packs.glob("tmp_pack_*")) - before:  # index-pack's, half-written
            left.unlink(missing_ok=True)
    if packed and code != 0:
        raise ProtocolError("the relayed pack did not index: " + pktline.printable(error))
    kept = re.fullmatch(rb"keep\t([0-9a-f]{40})\n", said)
    if not packed or kept is None:
        return None
    return kept[1].decode()


def release(mirror: Path, pack: str) -> None:
    """Let the relayed pack go the way of any other, once its refs are stored."""
    (mirror / "objects" / "pack" / f"pack-{pack}.keep").unlink(missing_ok=True)


class _Sink:
    """index-pack's stdin; if index-pack stops reading, the agent is still served."""

    def __init__(self, pipe: IO[bytes]) -> None:
        self.pipe: IO[bytes] | None = pipe

    def write(self, data: bytes) -> int:
        if self.pipe is not None:
            try:
                self.pipe.write(data)
            except BrokenPipeError:
                self.pipe = None  # its exit status says why; the pack is then not stored
        return len(data)


def store_refs(mirror: Path, refs: Mapping[str, str], head: str | None) -> list[str]:
    """Move the mirror's branches and tags to ``refs`` where the mirror has each tip's
    whole history; the names it could not store (a later fetch brings them)."""
    stored: dict[str, str] = {}
    missing: list[str] = []
    for ref, oid in refs.items():
        valid = subprocess.run(["git", "check-ref-format", ref], capture_output=True, check=False)
        if valid.returncode != 0:
            missing.append(ref)
            continue
        check = subprocess.run(
            ["git", "rev-list", "--objects", "--quiet", oid, "--not", "--all"], cwd=mirror,
            capture_output=True, check=False,
        )  # fmt: skip
        if check.returncode == 0:
            stored[ref] = oid
        else:
            missing.append(ref)
    if stored:
        script = "".join(f"update {ref} {oid}\n" for ref, oid in stored.items())
        subprocess.run(
            ["git", "update-ref", "--stdin"], cwd=mirror, input=script.encode(),
            capture_output=True, check=True,
        )  # fmt: skip
    if head and head in stored:
        subprocess.run(["git", "symbolic-ref", "HEAD", head], cwd=mirror, check=True)
    return missing
