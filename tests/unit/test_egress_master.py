"""The egress process as the sidecar runs it: mitmdump with the addons registered in place.

The addons used to be a ``-s`` script, which mitmproxy stats every second for the proxy's
life (issue 14, P6: CPU at rest). Registered directly they must sit where the script
loader's children sat, so every hook keeps its order.
"""

from __future__ import annotations

import asyncio
import inspect
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from mitmproxy import connection
from mitmproxy.addons import script
from mitmproxy.proxy import events, server

from bottle.runtime.egress import __main__ as egress_main
from bottle.runtime.egress import master
from tests.conftest import wait_for


def test_the_addons_sit_right_after_the_script_loader() -> None:
    ours = [object(), object()]
    found = master.chain(ours)
    at = next(i for i, a in enumerate(found) if isinstance(a, script.ScriptLoader))
    assert found[at + 1 : at + 3] == ours
    names = [type(a).__name__ for a in found]
    assert names[-4:] == ["Dumper", "KeepServing", "ReadFileStdin", "ErrorCheck"]
    assert names.count("ScriptLoader") == 1 and "Proxyserver" in names[:at]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _voluntary_switches(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


def test_the_egress_process_refuses_an_unrouted_request_and_sleeps_when_idle(
    tmp_path: Path,
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes: []\n")
    status = tmp_path / "status" / "egress.json"
    port = _free_port()
    argv = egress_main.mitmdump_argv(tmp_path / "conf", None)[1:]
    loopback = {
        "listen_host=0.0.0.0": "listen_host=127.0.0.1",
        "listen_port=8080": f"listen_port={port}",
    }
    argv = [loopback.get(part, part) for part in argv]
    env = {
        **os.environ,
        "BOTTLE_EGRESS_ROUTES": str(routes),
        "BOTTLE_EGRESS_STATUS": str(status),
        "BOTTLE_EGRESS_LOG": str(tmp_path / "logs" / "egress.jsonl"),
    }
    (tmp_path / "status").mkdir()
    (tmp_path / "logs").mkdir()
    code = f"from bottle.runtime.egress import master; master.run({argv!r})"
    log = (tmp_path / "egress.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=log)
    try:

        def ready() -> dict[str, object] | None:
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "egress.log").read_text())
            try:
                return dict(json.loads(status.read_text()))
            except (OSError, ValueError):
                return None

        assert wait_for(ready, 60, "egress.json")["routes"] == 0
        proxy = urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"})
        opener = urllib.request.build_opener(proxy)
        try:
            opener.open("http://unrouted.test/x", timeout=30)
            raise AssertionError("an unrouted request went through")
        except urllib.error.HTTPError as refused:
            assert refused.code == 403  # the guards ran: the addons are in the chain
        time.sleep(0.5)
        before = _voluntary_switches(proc.pid)
        time.sleep(3)
        woke = _voluntary_switches(proc.pid) - before
        assert woke < 10, woke  # the script watcher alone woke it once a second
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()


def test_options_left_at_their_default_are_applied_before_serving(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # bottle_own_networks is never on the command line: its default ("the on-link routes of
    # this container and the host's addresses") must still be applied, or egress would take
    # the bottle's own networks and the host's public addresses for the outside.
    from mitmproxy import options

    from bottle.runtime.egress import addresses, connect

    monkeypatch.setenv(addresses.HOST_ADDRESSES_ENV, "198.51.100.7")

    async def check() -> None:
        proxy = master.EgressMaster(options.Options())
        [guard] = [a for a in _walk(proxy._ours) if isinstance(a, connect.ConnectGuard)]
        guard.own = ()
        proxy.options.update(listen_port=0)  # what the command line does: its keys alone
        assert guard.own == ()
        proxy.configure_all()
        assert ipaddress.ip_network("198.51.100.7/32") in guard.own
        assert set(addresses.own_networks()) <= set(guard.own)

    asyncio.run(check())


def _walk(found: list[object]) -> list[object]:
    out: list[object] = []
    for one in found:
        out.append(one)
        out += _walk(list(getattr(one, "addons", [])))
    return out


class _Closing:
    def close(self) -> None:
        pass


class _Handler:
    """What mitmproxy's connection loop uses of its handler: the transports and the events."""

    def __init__(self, connection: object, reader: asyncio.StreamReader) -> None:
        self.transports = {connection: server.ConnectionIO(reader=reader, writer=_Closing())}  # type: ignore[arg-type]
        self.pieces: list[int] = []

    async def server_event(self, event: object) -> None:
        if isinstance(event, events.DataReceived):
            self.pieces.append(len(event.data))

    async def drain_writers(self) -> None:
        pass


def test_a_connection_is_read_in_pieces_of_a_mebibyte() -> None:
    """Each read is one event through every layer and addon: a 100 MB download read 64 KiB
    at a time cost more in events than in bytes (issue 14, P4)."""
    assert "reader.read(65535)" in inspect.getsource(server.ConnectionHandler)
    master.read_more()
    master.read_more()  # once is enough; twice changes nothing
    client = connection.Client(
        peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2), timestamp_start=0
    )
    client.state = connection.ConnectionState.CAN_READ

    async def run() -> _Handler:
        reader = asyncio.StreamReader()
        reader.feed_data(b"x" * (4 << 20))
        reader.feed_eof()
        handler = _Handler(client, reader)
        await server.ConnectionHandler.handle_connection(handler, client)  # type: ignore[arg-type]
        return handler

    handler = asyncio.run(run())
    assert handler.pieces == [master.READ_SIZE] * 4
