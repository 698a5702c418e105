"""A cold clone relayed to upstream and stored as it passes.

A channel is one protocol v2 conversation with upstream's ``git-upload-pack``: over ssh, a
child process's stdin/stdout (``ssh … git-upload-pack`` speaks it so; a local ``git
upload-pack`` in the tests); over https, ``POST …/git-upload-pack`` with ``Git-Protocol:
version=2``, TLS verified as the gate's own fetch verifies it. The gate asks upstream's
``ls-refs`` itself and answers the agent's from that ``Listing`` exactly as the mirror's
upload-pack would once fetched (``Listing.answer``). ``relay_fetch`` sends the agent's
fetch (a clone: wants, no haves) in the gate's own words and tees the answer: the agent
gets upstream's pkt-lines unchanged while the pack is spooled beside the mirror;
``store_pack`` indexes it afterwards (at low priority: the agent's own clone goes first) and
``store_refs`` moves the mirror's refs to the listing, only for tips whose whole history is
in the mirror. Every
doubt is ``Fallback``: the caller uses fetch-then-serve instead (before anything reached
the agent) or fails the request.
"""

from __future__ import annotations

import base64
import http.client
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, cast

from bottle.runtime.git_gate import pktline
from bottle.runtime.git_gate.pktline import (
    DELIM,
    FLUSH,
    FetchRequest,
    LsRefsRequest,
    ProtocolError,
    pkt,
)
from bottle.runtime.git_gate.upstream import FETCH_TIMEOUT, Target

_REF_LINE = re.compile(
    rb"^(?P<oid>[0-9a-f]{40}) (?P<ref>refs/(?:heads|tags)/[\x21-\x7e]{1,1000}|HEAD)"
    rb"(?: symref-target:(?P<target>refs/[\x21-\x7e]{1,1000}))?"
    rb"(?: peeled:(?P<peeled>[0-9a-f]{40}))?$"
)
_PREFIXES = (b"HEAD", b"refs/heads/", b"refs/tags/")
#: The gate's own ls-refs: everything the mirror would hold, symrefs and peeled tags shown.
LS_REFS = (
    pkt(b"command=ls-refs\n") + DELIM + pkt(b"symrefs\n") + pkt(b"peel\n")
    + b"".join(pkt(b"ref-prefix %s\n" % p) for p in _PREFIXES) + FLUSH
)  # fmt: skip
#: Refs a listing may hold; past it (an upstream that never ends its list) fall back.
MAX_REFS = 100_000
#: Bytes of upstream's answer held back before its pack starts (progress lines only).
MAX_HELD = 1 << 20
#: Bytes of a relayed pack spooled beside the mirror; past it (an upstream that never ends
#: its pack) the relayed clone fails and nothing is stored, before the disk is full.
MAX_PACK = 32 << 30
_BAD_REF_CHAR = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


class Fallback(Exception):
    """The relay cannot be used for this fetch; ``str()`` says why (for the log)."""


def valid_ref(name: str) -> bool:
    """git's ``check-ref-format`` rules (refs.c), as the mirror's own fetch applies them."""
    if (
        name in ("", "@")
        or name.endswith(("/", "."))
        or ".." in name
        or "//" in name
        or "@{" in name
        or _BAD_REF_CHAR.search(name)
    ):
        return False
    return all(part and not part.startswith(".") and not part.endswith(".lock")
               for part in name.split("/"))  # fmt: skip


@dataclass(frozen=True)
class Ref:
    name: str
    oid: str
    peeled: str | None = None


@dataclass(frozen=True)
class Listing:
    """Upstream's branches and tags (sorted by name, as git lists them) and HEAD's branch."""

    refs: tuple[Ref, ...]
    head: str

    @property
    def tips(self) -> dict[str, str]:
        return {r.name: r.oid for r in self.refs}

    def answer(self, request: LsRefsRequest) -> bytes:
        """The ls-refs answer the mirror would give once it fetched these refs: HEAD as a
        symref to its branch, branches that are symrefs upstream as plain refs (a fetch
        stores their values), peeled tags, refs outside the prefixes left out."""

        def wanted(name: str) -> bool:
            return any(name.startswith(p) for p in request.prefixes)

        by_name = {r.name: r for r in self.refs}
        lines: list[bytes] = []
        if wanted("HEAD"):
            head = by_name[self.head]
            line = f"{head.oid} HEAD"
            if request.symrefs:
                line += f" symref-target:{self.head}"
            if request.peel and head.peeled:
                line += f" peeled:{head.peeled}"
            lines.append(pkt(line.encode() + b"\n"))
        for ref in self.refs:
            if wanted(ref.name):
                line = f"{ref.oid} {ref.name}"
                if request.peel and ref.peeled:
                    line += f" peeled:{ref.peeled}"
                lines.append(pkt(line.encode() + b"\n"))
        return b"".join(lines) + FLUSH


def read_listing(src: IO[bytes]) -> Listing:
    """Upstream's answer to ``LS_REFS``, every line checked; Fallback on any doubt."""
    refs: dict[str, Ref] = {}
    head: str | None = None
    seen_head = False
    while True:
        raw, line = pktline.read_pkt(src)
        if line is None:
            if raw != FLUSH:
                raise Fallback("upstream's ls-refs answer did not end with a flush")
            break
        match = _REF_LINE.match(line.rstrip(b"\n"))
        if match is None:
            raise Fallback("upstream listed a ref this relay does not take")
        name = match["ref"].decode()
        if name == "HEAD":
            if seen_head:  # endless HEAD lines would never reach MAX_REFS
                raise Fallback("upstream listed HEAD twice")
            seen_head = True
            target = match["target"]
            head = target.decode() if target else None
            continue
        if not valid_ref(name) or name in refs or len(refs) >= MAX_REFS:
            raise Fallback("upstream listed a ref name git would not store")
        peeled = match["peeled"].decode() if match["peeled"] else None
        refs[name] = Ref(name, match["oid"].decode(), peeled)
    if head is None or not head.startswith("refs/heads/") or head not in refs:
        raise Fallback("upstream's HEAD names none of its branches")
    return Listing(tuple(sorted(refs.values(), key=lambda r: r.name.encode())), head)


class Channel(Protocol):
    def ls_refs(self) -> Listing: ...

    def fetch(self, request: bytes) -> IO[bytes]:
        """Send a fetch command; the stream its answer comes on."""
        ...

    def alive(self) -> bool: ...

    def close(self) -> None: ...


def ssh_argv(ssh_command: str, target: Target, address: str) -> list[str]:
    """``ssh … git-upload-pack '<path>'`` as git itself runs it, asking for protocol v2."""
    path = target.path[1:] if target.path.startswith("/~") else target.path
    host = f"{target.user}@{address}" if target.user else address
    port = ["-p", str(target.port)] if target.port else []
    quoted = "'" + path.replace("'", "'\\''") + "'"
    return [*shlex.split(ssh_command), "-o", "SendEnv=GIT_PROTOCOL", *port, host,
            f"git-upload-pack {quoted}"]  # fmt: skip


class PipeChannel:
    """Upstream's upload-pack, protocol v2, stateful, on a child process's pipes (ssh)."""

    def __init__(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path,
        timeout: float = FETCH_TIMEOUT,
    ) -> None:  # fmt: skip
        self.proc = subprocess.Popen(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, env=dict(env), cwd=cwd,
        )  # fmt: skip
        self.timeout = timeout
        self.watchdog: threading.Timer | None = None
        self._arm()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.send: IO[bytes] = self.proc.stdin
        self.recv: IO[bytes] = self.proc.stdout
        try:
            self.capabilities = self._advertisement()
        except (ProtocolError, Fallback):
            self.close()
            raise
        self._disarm()
        if not {b"fetch", b"ls-refs"} <= {c.split(b"=", 1)[0] for c in self.capabilities}:
            self.close()
            raise Fallback("upstream offers no v2 fetch and ls-refs")

    def _arm(self) -> None:
        """A silent upstream must not hold the remote's lock: past the timeout of one
        operation its reads end. Per operation, so a channel parked between ls-refs and
        fetch is not charged for the agent's pause."""
        self._disarm()
        self.watchdog = threading.Timer(self.timeout, self.proc.kill)
        self.watchdog.daemon = True
        self.watchdog.start()

    def _disarm(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    def _advertisement(self) -> list[bytes]:
        _, first = pktline.read_pkt(self.recv)
        if first is None or first.rstrip(b"\n") != b"version 2":
            raise Fallback("upstream does not speak protocol v2 here")
        capabilities: list[bytes] = []
        while True:
            _, line = pktline.read_pkt(self.recv)
            if line is None:
                return capabilities
            if len(capabilities) >= 1000:
                raise Fallback("upstream advertised too much")
            capabilities.append(line.rstrip(b"\n"))

    def ls_refs(self) -> Listing:
        self._arm()
        self.send.write(LS_REFS)
        self.send.flush()
        listing = read_listing(self.recv)
        self._disarm()
        return listing

    def fetch(self, request: bytes) -> IO[bytes]:
        self._arm()  # until close: the answer is read after this returns
        self.send.write(request)
        self.send.flush()
        return self.recv

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self._disarm()
        for pipe in (self.send, self.recv):
            with suppress(OSError):
                pipe.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class _PinnedHTTPS(http.client.HTTPSConnection):
    """TLS to the checked address, the certificate verified for the remote's host name."""

    def __init__(
        self, host: str, address: str, port: int, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._address = address
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self.host)


class _Answer:
    """An HTTP answer's body whose breaks are ProtocolError, as on a pipe: http.client's
    own (a body cut short, an overlong chunk line) are no OSError."""

    def __init__(self, answer: http.client.HTTPResponse) -> None:
        self._answer = answer

    def read(self, size: int = -1) -> bytes:
        try:
            return self._answer.read(size)
        except http.client.HTTPException as exc:
            raise ProtocolError(f"upstream's answer broke off: {exc!r}"[:200]) from None

    def close(self) -> None:
        self._answer.close()


class HttpChannel:
    """Upstream's upload-pack over smart HTTP, protocol v2 (stateless: one POST each)."""

    def __init__(
        self, target: Target, address: str, cafile: str, auth: tuple[str, str] | None,
        timeout: float = FETCH_TIMEOUT, *, deadline: float | None = None,
    ) -> None:  # fmt: skip
        # The socket's timeout ends a silent upstream; the deadline (per POST, as the ssh
        # watchdog) a trickling one, which would otherwise hold the remote's lock forever.
        self.deadline = timeout if deadline is None else deadline
        self.watchdog: threading.Timer | None = None
        context = ssl.create_default_context(cafile=cafile)
        # The chain and the host name checked as curl checks them for the gate's own fetch:
        # Python's stricter X.509 profile would refuse CAs git accepts (no fallback needed).
        context.verify_flags &= ~ssl.VERIFY_X509_STRICT
        self.conn = _PinnedHTTPS(target.host, address, target.port or 443, context, timeout)
        self.path = target.path.rstrip("/") + "/git-upload-pack"
        self.headers = {
            "Content-Type": "application/x-git-upload-pack-request",
            "Accept": "application/x-git-upload-pack-result",
            "Git-Protocol": "version=2",
            "User-Agent": "git/bottle-git-gate",
        }
        if auth is not None:
            basic = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self.headers["Authorization"] = f"Basic {basic}"

    def _cut(self) -> None:
        sock = self.conn.sock
        if sock is not None:
            # The plain socket's shutdown: SSLSocket's own would drop its TLS state under
            # the reading thread. Blocked reads then end, as a killed ssh's pipe does.
            with suppress(OSError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    def _disarm(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None

    def _post(self, body: bytes) -> http.client.HTTPResponse:
        self._disarm()
        self.watchdog = threading.Timer(self.deadline, self._cut)
        self.watchdog.daemon = True
        self.watchdog.start()
        try:
            self.conn.request("POST", self.path, body, self.headers)
            answer = self.conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            raise Fallback(f"upstream's upload-pack could not be reached: {exc}") from None
        kind = answer.getheader("Content-Type", "")
        if answer.status != 200 or kind != "application/x-git-upload-pack-result":
            answer.close()
            raise Fallback(f"upstream answered HTTP {answer.status} ({kind[:60]!r})")
        return answer

    def ls_refs(self) -> Listing:
        answer = self._post(LS_REFS)
        try:
            listing = read_listing(answer)
            if answer.read(1):
                raise Fallback("upstream sent more than its ls-refs answer")
        except (OSError, http.client.HTTPException) as exc:
            raise Fallback(f"upstream's ls-refs broke off: {exc}") from None
        finally:
            self._disarm()
        return listing

    def fetch(self, request: bytes) -> IO[bytes]:
        return cast(IO[bytes], _Answer(self._post(request)))

    def alive(self) -> bool:
        return True

    def close(self) -> None:
        self._disarm()
        self.conn.close()


def takes(request: FetchRequest, listing: Listing) -> bool:
    """Whether the relay may carry this fetch: a clone's (wants, no haves, ``done``) of
    tips the listing holds, so upstream's pack holds what the mirror's would, no more."""
    return (
        not request.haves
        and b"done" in request.flags
        and set(request.wants) <= {r.oid for r in listing.refs}
    )


class Held:
    """The agent's answer, held back until upstream's pack has started: until ``open`` the
    caller may still fall back and the agent has seen nothing."""

    def __init__(self, opener: Callable[[], pktline.Writer]) -> None:
        self._opener = opener
        self._held: list[bytes] = []
        self._size = 0
        self.out: pktline.Writer | None = None

    def write(self, data: bytes) -> int:
        if self.out is not None:
            self.out.write(data)
        else:
            self._size += len(data)
            if self._size > MAX_HELD:
                raise ProtocolError("upstream sent too much before its pack")
            self._held.append(data)
        return len(data)

    def open(self) -> None:
        if self.out is None:
            self.out = self._opener()
            for data in self._held:
                self.out.write(data)
            self._held.clear()


class _Capped:
    """The spool, refusing to grow past ``MAX_PACK``."""

    def __init__(self, spool: IO[bytes]) -> None:
        self._spool = spool
        self._size = 0

    def write(self, data: bytes) -> int:
        self._size += len(data)
        if self._size > MAX_PACK:
            raise ProtocolError(f"upstream's pack is larger than {MAX_PACK} bytes")
        return self._spool.write(data)


def relay_fetch(request: FetchRequest, channel: Channel, mirror: Path, out: Held) -> Path:
    """Send ``request`` upstream (``canonical``: the agent's choices of words stay here)
    and forward the answer through ``out`` (opened once the
    pack starts); its pack is spooled beside the mirror, the spool's path returned.

    Fallback or ProtocolError while ``out`` is unopened (nothing reached the agent);
    ProtocolError once it is open (the agent's clone then fails)."""
    spool = tempfile.NamedTemporaryFile(dir=mirror, prefix="relayed-", delete=False)  # noqa: SIM115
    try:
        with spool:
            packed = pktline.tee_fetch_response(
                channel.fetch(request.canonical()), out, _Capped(spool), out.open
            )
        if not packed:
            raise Fallback("upstream's answer to a clone carried no pack")
    except BaseException:
        Path(spool.name).unlink(missing_ok=True)
        raise
    return Path(spool.name)


def store_pack(mirror: Path, spool: Path) -> str:
    """Index the spooled pack into the mirror, kept (``.keep``) until ``release``: no
    repack drops it before its refs are stored. At low priority: the agent's own index
    and checkout of the same pack run now too. ProtocolError if it does not index (then
    nothing of it is stored: index-pack keeps a pack only if its checksum and objects hold)."""
    packs = mirror / "objects" / "pack"
    before = set(packs.glob("tmp_pack_*"))
    nice = ["nice", "-n", "19"] if shutil.which("nice") else []
    try:
        with spool.open("rb") as data:
            done = subprocess.run(
                [*nice, "git", "index-pack", "--stdin", "--keep=relayed"], cwd=mirror,
                stdin=data, capture_output=True, check=False, timeout=FETCH_TIMEOUT,
            )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise ProtocolError("the relayed pack took too long to index") from None
    finally:
        spool.unlink(missing_ok=True)
    kept = re.fullmatch(rb"keep\t([0-9a-f]{40})\n", done.stdout)
    if done.returncode != 0 or kept is None:
        for left in set(packs.glob("tmp_pack_*")) - before:  # index-pack's, half-written
            left.unlink(missing_ok=True)
        raise ProtocolError("the relayed pack did not index: " + pktline.printable(done.stderr))
    return kept[1].decode()


def release(mirror: Path, pack: str) -> None:
    """Let the relayed pack go the way of any other, once its refs are stored."""
    (mirror / "objects" / "pack" / f"pack-{pack}.keep").unlink(missing_ok=True)


class RefsTimedOut(Exception):
    """Checking the relayed refs took past the deadline; ``missing`` names those left
    (the mirror holds only refs checked before it, so it stays consistent)."""

    def __init__(self, missing: list[str]) -> None:
        super().__init__(f"checking the relayed refs timed out; {len(missing)} left")
        self.missing = missing


def _left(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise subprocess.TimeoutExpired("git", 0)
    return left


def _complete(mirror: Path, oids: Sequence[str], deadline: float) -> bool:
    """Whether the mirror holds the whole history of every one of ``oids``."""
    for start in range(0, len(oids), 1000):  # on the command line: unambiguously positive
        check = subprocess.run(
            ["git", "rev-list", "--objects", "--quiet", *oids[start : start + 1000],
             "--not", "--all"], cwd=mirror, capture_output=True, check=False,
            timeout=_left(deadline),
        )  # fmt: skip
        if check.returncode != 0:
            return False
    return True


def _update(mirror: Path, refs: Mapping[str, str], deadline: float) -> None:
    script = "".join(f"update {ref} {oid}\n" for ref, oid in refs.items())
    subprocess.run(
        ["git", "update-ref", "--stdin"], cwd=mirror, input=script.encode(),
        capture_output=True, check=True, timeout=_left(deadline),
    )  # fmt: skip


def store_refs(
    mirror: Path, refs: Mapping[str, str], head: str | None, timeout: float = FETCH_TIMEOUT
) -> list[str]:
    """Move the mirror's branches and tags to ``refs`` where the mirror has each tip's
    whole history; the names it could not store (a later fetch brings them).

    One check for a whole clone; if it fails, one per ref, each stored as soon as it holds
    so the next check's ``--not --all`` stops at history already checked (not a walk of
    the whole history per tag). RefsTimedOut past ``timeout``: the remote's lock is held."""
    deadline = time.monotonic() + timeout
    named = {ref: oid for ref, oid in refs.items() if valid_ref(ref)}
    missing = [ref for ref in refs if ref not in named]
    stored: dict[str, str] = {}
    try:
        if _complete(mirror, list(named.values()), deadline):
            _update(mirror, named, deadline)
            stored = named
        else:
            for ref, oid in named.items():
                if _complete(mirror, [oid], deadline):
                    _update(mirror, {ref: oid}, deadline)
                    stored[ref] = oid
                else:
                    missing.append(ref)
    except subprocess.TimeoutExpired:
        left = [r for r in named if r not in stored and r not in missing]
        raise RefsTimedOut(missing + left) from None
    if head and head in stored:
        subprocess.run(
            ["git", "symbolic-ref", "HEAD", head], cwd=mirror, check=True, timeout=FETCH_TIMEOUT
        )
    return missing
