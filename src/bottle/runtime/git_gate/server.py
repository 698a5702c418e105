"""The gate's HTTP side: ``git http-backend`` behind a small threaded server.

Only the smart protocol, only ``/<remote>.git/{info/refs,git-upload-pack,git-receive-pack}``
of declared remotes. The ref advertisement of either service is preceded by a fetch from
upstream into the mirror, so the agent always sees upstream's refs and a push is judged
against them. Pushes to one remote are serialised with its fetches. Request bodies are
bounded and spooled before http-backend sees them (chunked uploads included); a gzip body
is inflated into the spool under the same bound, so http-backend never inflates anything.
"""

from __future__ import annotations

import http.server
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator, Mapping
from contextlib import nullcontext, suppress
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from bottle.runtime import git_gate as gate
from bottle.runtime.egress import dlp
from bottle.runtime.git_gate import GateConfig, GateRecord, GateRemote, pktline, relay, upstream

#: Largest request body (a push pack) the gate takes, inflated if it came gzipped.
MAX_BODY = int(os.environ.get("BOTTLE_GIT_GATE_MAX_BODY", str(1 << 30)))
#: Largest pkt-line text of a request, inflated: a whole upload-pack request, or a push's
#: commands before its pack. Both are held in memory line by line (upload-pack keeps every
#: ``have``: 4 million of them took 141 MiB), and a real client's stay far below: a fetch
#: sends its wants and one round of haves (git grows a round by a tenth past 16384: the
#: largest is about 110 000, 5.5 MB, for a million commits with none in common), a push
#: one line per ref it updates.
MAX_REQUEST_TEXT = 16 << 20
_PATH = re.compile(
    r"^/(?P<name>[a-z0-9][a-z0-9_.-]*)\.git/(?P<rest>info/refs|git-upload-pack|git-receive-pack)$"
)
_SERVICES = ("git-upload-pack", "git-receive-pack")
_CHUNK_SIZE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_CHUNK = 1 << 16
_PKT_LEN = re.compile(rb"[0-9A-Fa-f]{4}")
#: How much, and how long, the gate reads on after refusing a body (``Handler._linger``).
_LINGER_BYTES = 8 << 20
_LINGER_SECONDS = 2.0
#: Largest upload-pack request the relay reads to judge (a clone's wants are ~50 bytes each).
MAX_RELAY_REQUEST = 1 << 20
#: The Content-Encodings the gate takes, and whether each is gzip (inflated in the gate).
_ENCODINGS = {"identity": False, "gzip": True, "x-gzip": True}
#: What git http-backend and everything it runs (upload-pack, receive-pack, the hook) get of
#: the gate's environment: how to run (the hook is Python importing bottle), where the
#: gate's files are. Nothing else: no secret, no ``GIT_*`` of the gate's own.
_CHILD_ENV = (
    *upstream.RUN_ENV,
    "PYTHONPATH",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "GIT_SSL_CAINFO",  # the CA bundle of the hook's push upstream
    gate.CONFIG_ENV,
    gate.STATUS_ENV,
    gate.LOG_ENV,
    gate.WORK_ENV,
    gate.SECRETS_ENV,
)
#: The one thing of ``Git-Protocol`` git acts on; any other key is dropped, not passed.
_PROTOCOL_VERSION = re.compile(r"version=[0-2]")


def git_protocol(headers: Any) -> str | None:
    """The version ``Git-Protocol`` asks for (its last whole ``version=N``), or None: read
    once per request, for the relay's choice and for http-backend alike."""
    versions = [
        item
        for item in (headers.get("Git-Protocol") or "").split(":")
        if _PROTOCOL_VERSION.fullmatch(item)
    ]
    return versions[-1] if versions else None


class BodyTooLarge(Exception):
    def __init__(self, what: str, limit: int) -> None:
        super().__init__(f"git-gate: {what} more than {limit} bytes")


class UnknownEncoding(Exception):
    pass


class Gate:
    """The state the handlers share: config, mirrors and one lock per remote."""

    def __init__(
        self, config: GateConfig, work: Path, environ: Mapping[str, str], *, relaying: bool = True
    ) -> None:
        self.config = config
        self.environ = dict(environ)
        self.mirrors = work / "mirrors"
        self.hooks = work / "hooks"
        self.locks = {r.name: threading.Lock() for r in config.remotes}
        #: A cold mirror relays a v2 clone upstream and stores it as it passes (``relay``)
        #: instead of fetching first and serving after.
        self.relay = relaying
        #: A relayed ls-refs leaves its upstream connection and listing here for the fetch
        #: that follows (one handshake and one listing per clone, as a direct clone has);
        #: used under the remote's lock.
        self.idle: dict[str, tuple[relay.Channel, relay.Listing]] = {}

    def mirror(self, name: str) -> Path:
        return self.mirrors / f"{name}.git"

    def prepare(self) -> None:
        """Bare mirrors and the hook. A mirror left by a previous run is kept (warm)."""
        self.hooks.mkdir(parents=True, exist_ok=True)
        hook = self.hooks / "pre-receive"
        # git runs the hook in the mirror, which ``-m`` would put first on sys.path; -P
        # keeps it off, so nothing a push leaves there is ever imported.
        hook.write_text(f"#!/bin/sh\nexec {sys.executable} -P -m bottle.runtime.git_gate.hook\n")
        hook.chmod(0o755)
        # git skips a hook it cannot execute (a noexec mount) and takes the push unscanned:
        # refuse to serve rather than fail open.
        try:
            # The environment a push's hook gets: a variable it needs and lacks fails here.
            probe = subprocess.run(
                [str(hook)], env={**self.child_env(push=True), gate.PROBE_ENV: "1"},
                capture_output=True,
                check=False, timeout=60,
            )  # fmt: skip
        except OSError as exc:
            raise RuntimeError(f"the pre-receive hook {hook} cannot run: {exc}") from None
        if probe.returncode != 0:
            raise RuntimeError(f"the pre-receive hook {hook} failed its probe: {probe.stderr!r}")
        for remote in self.config.remotes:
            path = self.mirror(remote.name)
            if not (path / "HEAD").is_file():
                subprocess.run(["git", "init", "--quiet", "--bare", str(path)], check=True)
            for key, value in (
                ("core.hooksPath", str(self.hooks)),
                ("http.receivepack", "true"),
                ("receive.fsckObjects", "true"),
                ("receive.advertisePushOptions", "false"),
                ("gc.auto", "0"),
                # Keep what a fetch brings as the pack it came in, however few its objects:
                # served again, it is copied as it is, never inflated, deflated or
                # delta-searched again (a clone through a cold mirror packed twice).
                ("fetch.unpackLimit", "1"),
            ):
                subprocess.run(["git", "--git-dir", str(path), "config", key, value], check=True)

    def fetch(self, remote: GateRemote) -> None:
        start = time.monotonic()
        try:
            upstream.fetch(
                remote,
                self.mirror(remote.name),
                config=gate.config_dir(self.environ),
                secrets=gate.secrets_dir(self.environ),
                environ=self.environ,
            )
        except upstream.UpstreamError as exc:
            self.log(
                GateRecord(op="fetch", remote=remote.name, decision="error", reason=str(exc)), start
            )
            raise
        self.log(GateRecord(op="fetch", remote=remote.name, decision="allow"), start)

    def may_relay(self, remote: GateRemote, protocol: str | None) -> bool:
        """Whether an upload-pack request could take the relay: on, v2 (``protocol`` is
        ``git_protocol``'s, what http-backend would be told), ssh or https."""
        if not self.relay or protocol != "version=2":
            return False
        try:
            return upstream.parse_url(remote.url).scheme in ("ssh", "https")
        except upstream.UpstreamError:
            return False

    def unpark(self, remote: GateRemote) -> None:
        """Close a connection parked after a relayed ls-refs: of no use once the mirror
        is warm (or the relay not asked), it must not stay open upstream."""
        parked = self.idle.pop(remote.name, None)
        if parked is not None:
            parked[0].close()

    def cold(self, remote: GateRemote) -> bool:
        """Whether the mirror holds no branch or tag yet (only then is a clone relayed).

        Read from the mirror's files (asked on every v2 upload-pack request, so no git
        process): any doubt (a leftover directory, an unreadable file) says warm, which
        is the mirror path."""
        path = self.mirror(remote.name)
        try:
            for kind in ("heads", "tags"):
                with suppress(FileNotFoundError), os.scandir(path / "refs" / kind) as entries:
                    if next(entries, None) is not None:
                        return False
            packed = path / "packed-refs"
            text = packed.read_bytes() if packed.exists() else b""
        except OSError:
            return False
        return b" refs/heads/" not in text and b" refs/tags/" not in text

    def channel(self, remote: GateRemote) -> relay.Channel:
        """A v2 conversation with upstream's upload-pack, with the gate's credential."""
        conn = upstream.connect(
            remote, config=gate.config_dir(self.environ),
            secrets=gate.secrets_dir(self.environ), environ=self.environ,
        )  # fmt: skip
        if conn.target.scheme == "https":
            token = self.environ.get(remote.token_ref or "") if remote.token_ref else None
            auth = (conn.target.user or "x-access-token", token) if token else None
            return relay.HttpChannel(conn.target, conn.address, conn.env["GIT_SSL_CAINFO"], auth)
        argv = relay.ssh_argv(conn.env["GIT_SSH_COMMAND"], conn.target, conn.address)
        env = {**conn.env, "GIT_PROTOCOL": "version=2"}
        return relay.PipeChannel(argv, env, self.mirror(remote.name))

    def log(self, record: GateRecord, start: float) -> None:
        record = record.model_copy(update={"duration_ms": int((time.monotonic() - start) * 1000)})
        try:
            gate.write_record(record, self.environ)
        except OSError as exc:
            print(f"git-gate: cannot write the decision log: {exc}", file=sys.stderr, flush=True)

    def child_env(self, *, push: bool) -> dict[str, str]:
        """The gate's environment as far as http-backend's children need it. Only a push
        runs the hook, which scans for every secret of the bottle (``BOTTLE_DLP_SECRETS``
        and the remotes' tokens) and pushes upstream with one: only a push gets them."""
        env = {k: self.environ[k] for k in _CHILD_ENV if k in self.environ}
        if push:
            tokens = [r.token_ref for r in self.config.remotes if r.token_ref]
            names = (dlp.DLP_SECRETS_ENV, *dlp.secret_names(tokens, self.environ))
            env |= {k: self.environ[k] for k in names if k in self.environ}
        return env

    def cgi_env(
        self, remote: GateRemote, path: str, query: str, headers: Any, length: int | None,
        *, protocol: str | None,
    ) -> dict[str, str]:  # fmt: skip
        # (a receive-pack advertisement runs no hook: only the POST does)
        env = self.child_env(push=path.endswith("/git-receive-pack"))
        env |= {
            "GIT_PROJECT_ROOT": str(self.mirrors),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_HTTP_MAX_REQUEST_BUFFER": str(MAX_BODY),
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REMOTE_USER": "agent",
            "REMOTE_ADDR": "agent",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_NO_REPLACE_OBJECTS": "1",
            gate.REMOTE_ENV: remote.name,
        }
        # Command-line scope, above the mirror's own config: the gate's hooks and no other,
        # and the pack bounded again by receive-pack (the gate bounded the whole body).
        env |= upstream.config_env(
            [("core.hooksPath", str(self.hooks)), ("receive.maxInputSize", str(MAX_BODY))]
        )
        # (never Content-Encoding: the gate inflated the body itself, under its bound)
        content_type = headers.get("Content-Type")
        if content_type:
            env["CONTENT_TYPE"] = content_type
        if protocol is not None:
            env["GIT_PROTOCOL"] = protocol
        if length is not None:
            env["CONTENT_LENGTH"] = str(length)
        return env


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "git-gate"
    gate: Gate  # set on the subclass made by serve()

    def log_message(self, format: str, *args: Any) -> None:
        return  # the decision log records what matters; no request lines with paths

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _fail(self, code: int, message: str) -> None:
        # git shows a text/plain body of an error answer to the user as "remote: …" lines.
        body = (message.rstrip() + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        match = _PATH.match(parts.path)
        remote = self.gate.config.remote(match["name"]) if match else None
        if match is None or remote is None:
            names = ", ".join(r.name for r in self.gate.config.remotes)
            self._fail(404, f"git-gate serves only this bottle's remotes: {names}")
            return
        rest = match["rest"]
        if rest == "info/refs":
            # One service, or none: Python takes the first of several, http-backend the last.
            services = parse_qs(parts.query).get("service") or []
            service = services[0] if len(services) == 1 else ""
            if method != "GET" or service not in _SERVICES:
                self._fail(403, "git-gate speaks the smart HTTP protocol only")
                return
        else:
            service = rest
            if method != "POST":
                self._fail(405, "POST only")
                return
        if service == "git-receive-pack" and not remote.policy.refs:
            self._fail(
                403,
                f"git-gate: remote {remote.name} takes no pushes from this bottle "
                "(git.remotes[].push is false)",
            )
            return
        lock = self.gate.locks[remote.name]
        protocol = git_protocol(self.headers)
        relaying = (
            service == "git-upload-pack"
            and self.gate.may_relay(remote, protocol)
            and self.gate.cold(remote)
        )
        # Advertisements fetch first and pushes hold the lock, so a push is checked against
        # refs no fetch is moving; upload-pack POSTs only read the mirror (but a relay
        # writes it).
        exclusive = rest == "info/refs" or service == "git-receive-pack" or relaying
        with lock if exclusive else nullcontext():
            # Another request may have filled the mirror while this one waited.
            relaying = relaying and self.gate.cold(remote)
            if not relaying:
                self.gate.unpark(remote)
            if relaying and rest == "info/refs":
                pass  # the capabilities are the gate's own; ls-refs and fetch go upstream
            elif rest == "info/refs":
                try:
                    self.gate.fetch(remote)
                except upstream.UpstreamError as exc:
                    self._fail(502, f"git-gate: cannot fetch {remote.name}: {exc}")
                    return
            spooled = self._spooled(service) if method == "POST" else (None, None)
            if spooled is None:
                return  # refused
            body, length = spooled
            try:
                if relaying and body is not None and self._relay(remote, body, length or 0):
                    return
                if relaying and body is not None:  # fell back: fetch, then serve
                    try:
                        self.gate.fetch(remote)
                    except upstream.UpstreamError as exc:
                        # git shows no body of a failed POST, but a v2 ERR line it does.
                        self._err(f"git-gate: cannot fetch {remote.name}: {exc}")
                        return
                query = _query(rest, service)
                self._backend(remote, parts.path, query, body, length, protocol=protocol)
            finally:
                if body is not None:
                    body.close()

    def _relay(self, remote: GateRemote, body: IO[bytes], length: int) -> bool:
        """Answer a cold mirror's ls-refs or fetch from upstream; False (nothing sent yet)
        when the relay does not take the request and the caller must fetch and serve."""
        if length > MAX_RELAY_REQUEST:
            return False
        data = body.read(MAX_RELAY_REQUEST + 1)
        body.seek(0)
        ls_refs = pktline.parse_ls_refs(data)
        request = None if ls_refs else pktline.parse_fetch_request(data)
        if ls_refs is None and request is None:
            return False
        start = time.monotonic()
        channel, listing = self.gate.idle.pop(remote.name, (None, None))
        if channel is not None and (ls_refs is not None or not channel.alive()):
            channel.close()  # an ls-refs lists afresh; a dead connection is no use
            channel = None
        try:
            if channel is None:
                channel = self.gate.channel(remote)
            if ls_refs is not None or listing is None:
                listing = channel.ls_refs()
        except (relay.Fallback, pktline.ProtocolError, upstream.UpstreamError, OSError):
            if channel is not None:
                channel.close()
            return False
        if ls_refs is not None:
            # Upstream was asked, so it is a line of its own (an ls-remote may end here).
            reason = f"relayed: {len(listing.refs)} refs listed for the agent"
            self.gate.log(GateRecord(op="fetch", remote=remote.name, decision="allow",
                                     reason=reason), start)  # fmt: skip
            self.gate.idle[remote.name] = (channel, listing)
            answer = listing.answer(ls_refs)
            self._result_headers(len(answer))
            with suppress(OSError):
                self.wfile.write(answer)
            return True
        assert request is not None
        try:
            return self._relay_fetch(remote, request, channel, listing, start)
        finally:
            channel.close()

    def _relay_fetch(
        self, remote: GateRemote, request: pktline.FetchRequest, channel: relay.Channel,
        listing: relay.Listing, start: float,
    ) -> bool:  # fmt: skip
        if not relay.takes(request, listing):
            return False
        mirror = self.gate.mirror(remote.name)

        def opener() -> pktline.Writer:
            self._result_headers(None)
            return self.wfile

        out = relay.Held(opener)
        try:
            spool = relay.relay_fetch(request, channel, mirror, out)
        except (relay.Fallback, pktline.ProtocolError, OSError) as exc:
            if out.out is None:
                return False  # the agent has seen nothing: fetch and serve instead
            # Logged first: the agent's git exits as soon as it reads the error line.
            self.gate.log(GateRecord(op="fetch", remote=remote.name, decision="error",
                                     reason=f"relayed fetch broke off: {exc}"), start)  # fmt: skip
            with suppress(OSError):  # git shows a side-band 3 line as "remote error: …"
                self.wfile.write(pktline.pkt(b"\x03git-gate: the relayed clone broke off\n"))
            return True
        self._end()
        answered = int((time.monotonic() - start) * 1000)
        try:
            pack = relay.store_pack(mirror, spool)
        except pktline.ProtocolError as exc:
            self.gate.log(GateRecord(op="fetch", remote=remote.name, decision="error",
                                     reason=f"relayed: not stored: {exc}"), start)  # fmt: skip
            return True
        timed_out = False
        try:
            missing = relay.store_refs(mirror, listing.tips, listing.head)
        except relay.RefsTimedOut as exc:
            missing, timed_out = exc.missing, True
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
            missing = [f"all ({exc})"]
        finally:
            relay.release(mirror, pack)
        reason = f"relayed: the agent got the pack the mirror stored (answered in {answered} ms)"
        if missing:
            reason += f"; {len(missing)} refs left for the next fetch"
        if timed_out:
            reason += " (checking its refs timed out)"
        self.gate.log(
            GateRecord(op="fetch", remote=remote.name, decision="allow", reason=reason), start
        )
        return True

    def _end(self) -> None:
        """End the answer now (its length is the connection's): the agent goes on while
        the gate finishes storing what it relayed."""
        with suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)

    def _err(self, message: str) -> None:
        text = " ".join(message.split())[:4000].encode("utf-8", "replace")
        answer = pktline.pkt(b"ERR " + text + b"\n")
        self._result_headers(len(answer))
        self.wfile.write(answer)

    def _result_headers(self, length: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/x-git-upload-pack-result")
        self.send_header("Cache-Control", "no-cache, max-age=0, must-revalidate")
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Connection", "close")
        self.end_headers()

    def _spooled(self, service: str) -> tuple[IO[bytes], int] | None:
        """``_body``, or None once the agent was told why not."""
        try:
            return self._body(service)
        except BodyTooLarge as exc:
            self._fail(413, str(exc))
        except UnknownEncoding as exc:
            self._fail(415, f"git-gate: a request body is plain or gzip, not {exc}")
        except (ValueError, OSError, zlib.error):
            self._fail(400, "git-gate: malformed request body")
        self._linger()
        return None

    def _linger(self) -> None:
        """After a refusal, read on for a while what the agent still sends: closing with
        it unread resets the connection, and the agent would not see why."""
        deadline = time.monotonic() + _LINGER_SECONDS
        left = _LINGER_BYTES
        with suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(_LINGER_SECONDS)
            while left > 0 and time.monotonic() < deadline:
                data = self.connection.recv(_CHUNK)
                if not data:
                    break
                left -= len(data)

    def _body(self, service: str) -> tuple[IO[bytes], int]:
        """The request body spooled, inflated if gzip, and its length. A fetch's request is
        all text (``MAX_REQUEST_TEXT``); a push's is its commands, then a pack (``MAX_BODY``)."""
        encoding = (self.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding not in _ENCODINGS:
            raise UnknownEncoding(encoding[:40])
        limit = MAX_BODY if service == "git-receive-pack" else MAX_REQUEST_TEXT
        pieces = self._raw(limit)
        verb = "is"
        if _ENCODINGS[encoding]:
            pieces, verb = _inflate(pieces), "inflates to"
        commands = _Commands() if service == "git-receive-pack" else None
        spool = tempfile.TemporaryFile(dir=self.gate.mirrors.parent)  # noqa: SIM115 - closed by caller
        total = 0
        try:
            for data in pieces:
                total += len(data)
                if total > limit:
                    raise BodyTooLarge(f"the request {verb}", limit)
                if commands is not None:
                    commands.feed(data)
                spool.write(data)
            spool.seek(0)
        except BaseException:
            spool.close()
            raise
        return spool, total

    def _raw(self, limit: int) -> Iterator[bytes]:
        """The body as it came (chunked or of a Content-Length), no more than ``limit``."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            total = 0
            while True:
                size_line = self.rfile.readline(1024)
                digits = size_line.split(b";", 1)[0].strip()
                # Hex digits alone: int() would take "-1", "0x…" and "1_0", and a negative
                # size would take back what the bound counted.
                if not _CHUNK_SIZE.fullmatch(digits):
                    raise ValueError("bad chunk size")
                size = int(digits, 16)
                if size == 0:
                    while self.rfile.readline(1024).strip():
                        pass
                    return
                total += size
                if total > limit:
                    raise BodyTooLarge("the request is", limit)
                yield from _read(self.rfile, size)
                self.rfile.readline(16)
        else:
            length = int(self.headers.get("Content-Length") or 0)
            if length < 0:
                raise ValueError("negative length")
            if length > limit:
                raise BodyTooLarge("the request is", limit)
            yield from _read(self.rfile, length)

    def _backend(
        self, remote: GateRemote, path: str, query: str, body: IO[bytes] | None,
        length: int | None, *, protocol: str | None,
    ) -> None:  # fmt: skip
        env = self.gate.cgi_env(remote, path, query, self.headers, length, protocol=protocol)
        env["REQUEST_METHOD"] = self.command
        proc = subprocess.Popen(
            ["git", "http-backend"],
            stdin=body or subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            env=env,
            cwd=self.gate.mirror(remote.name),
        )
        assert proc.stdout is not None
        status, headers = 200, []
        while True:
            line = proc.stdout.readline(8192).decode("latin-1").rstrip("\r\n")
            if not line:
                break
            key, _, value = line.partition(":")
            if key.lower() == "status":
                status = int(value.split()[0])
            else:
                headers.append((key, value.strip()))
        self.send_response(status)
        for key, value in headers:
            self.send_header(key, value)
        self.send_header("Connection", "close")
        self.end_headers()
        with suppress(BrokenPipeError, ConnectionResetError):  # the agent went away
            shutil.copyfileobj(proc.stdout, self.wfile, _CHUNK)
        proc.stdout.close()
        proc.wait()


def _query(rest: str, service: str) -> str:
    """The query http-backend gets: the gate's own words for what it checked, never the
    agent's query (whose parameters git parses its own way)."""
    return f"service={service}" if rest == "info/refs" else ""


def _read(src: Any, size: int) -> Iterator[bytes]:
    while size > 0:
        data = src.read(min(size, _CHUNK))
        if not data:
            raise ValueError("body shorter than announced")
        yield data
        size -= len(data)


def _inflate(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """One gzip stream inflated in pieces of at most ``_CHUNK`` bytes, so a small body
    that inflates to gigabytes is refused at the caller's bound, never held whole."""
    inflater = zlib.decompressobj(wbits=31)  # gzip alone, as http-backend reads it
    for piece in pieces:
        data = piece
        while data:
            if inflater.eof:
                # Kept as unused_data it would grow without bound: refused at once.
                raise ValueError("data after the gzip stream")
            out = inflater.decompress(data, _CHUNK)
            data = inflater.unconsumed_tail
            if inflater.unused_data:
                raise ValueError("data after the gzip stream")
            if out:
                yield out
        # zlib may hold output back for want of room, with all the input taken.
        while not inflater.eof and (out := inflater.decompress(b"", _CHUNK)):
            yield out
    if not inflater.eof:
        raise ValueError("the gzip stream is cut short")


class _Commands:
    """The pkt-lines before a push's pack, counted as they are spooled: receive-pack holds
    every command (and shallow line) in memory before the hook can judge any."""

    def __init__(self) -> None:
        self.seen = 0  # bytes of the command list so far
        self.head = b""  # a length prefix split between two pieces
        self.skip = 0  # what remains of the current line's payload
        self.done = False

    def feed(self, data: bytes) -> None:
        at = 0
        while not self.done and at < len(data):
            if self.skip:
                step = min(self.skip, len(data) - at)
                self.skip -= step
            else:
                step = min(4 - len(self.head), len(data) - at)
                self.head += data[at : at + step]
                if len(self.head) == 4:
                    self._line(self.head)
                    self.head = b""
            at += step
            self.seen += step
            if self.seen > MAX_REQUEST_TEXT:
                raise BodyTooLarge("the push's commands before its pack are", MAX_REQUEST_TEXT)

    def _line(self, head: bytes) -> None:
        size = int(head, 16) if _PKT_LEN.fullmatch(head) else -1
        # A flush, delim or response-end ends receive-pack's list; a length it cannot
        # read ends receive-pack. Anything else it reads on, and so does this count.
        if size < 4:
            self.done = True
        else:
            self.skip = size - 4


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


def serve(gate_state: Gate, host: str, port: int) -> Server:
    handler = type("BoundHandler", (Handler,), {"gate": gate_state})
    return Server((host, port), handler)
