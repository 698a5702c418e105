"""The egress process as the sidecar runs it: mitmdump with the addons registered in place.

The addons used to be a ``-s`` script, which mitmproxy stats every second for the proxy's
life (issue 14, P6: CPU at rest). Registered directly they must sit where the script
loader's children sat, so every hook keeps its order.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import ipaddress
import json
import os
import subprocess
import sys
from asyncio import selector_events

import pytest
from mitmproxy import addonmanager, connection, exceptions
from mitmproxy import master as mitm_master
from mitmproxy.addons import script
from mitmproxy.proxy import events, server

from bottle.runtime.egress import master


def test_the_addons_sit_right_after_the_script_loader() -> None:
    ours = [object(), object()]
    found = master.chain(ours)
    at = next(i for i, a in enumerate(found) if isinstance(a, script.ScriptLoader))
    assert found[at + 1 : at + 3] == ours
    names = [type(a).__name__ for a in found]
    # DumpMaster's tail but its Dumper (the flow printer: egress prints no flows).
    assert names[-3:] == ["KeepServing", "ReadFileStdin", "ErrorCheck"]
    assert "Dumper" not in names and "MapLocal" not in names
    assert names.count("ScriptLoader") == 1 and "Proxyserver" in names[:at]


def test_the_chain_is_mitmproxys_default_one_but_the_addons_left_out() -> None:
    # Listed by the probe, in the sidecar's own order of imports: in this process
    # mitmproxy.addons stays lazy too (tests/unit/conftest.py), and asking it for
    # default_addons() would load Flask, ldap3 and the rest for this one test.
    every, ours = _probed()["every"], _probed()["ours"]
    assert set(master.LEFT_OUT) <= set(every)  # a renamed addon would slip back in unseen
    assert ours == [name for name in every if name not in master.LEFT_OUT]


# The sidecar's own order: the lazy package first, then the master and the addons.
_IMPORTS_PROBE = """
import asyncio, json, sys
from bottle.runtime.egress import lazy_addons
lazy_addons.install()
from bottle.runtime.egress import addon, master
from mitmproxy import addons, options
async def make():
    return master.EgressMaster(options.Options())
proxy = asyncio.run(make())
assert lazy_addons.is_lazy(addons)
heavy = {"flask", "ldap3", "pyperclip", "werkzeug"}
loaded = sorted(m for m in sys.modules if m.split(".")[0] in heavy)
assert not loaded, loaded
assert "mitmproxy.contentviews" not in sys.modules  # the Dumper's, left out
assert "mitmproxy.addons.onboarding" not in sys.modules
assert "Onboarding" not in [type(a).__name__ for a in proxy.addons.chain]
ours = [type(a).__name__ for a in master.defaults()]
names = [type(a).__name__ for a in addons.default_addons()]  # the whole package, on demand
assert "Onboarding" in names and "flask" in sys.modules and not lazy_addons.is_lazy(addons)
print(json.dumps({"every": names, "ours": ours}))
"""


def _start_probe() -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _IMPORTS_PROBE],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _reap(probe: subprocess.Popen[str]) -> None:
    if probe.poll() is None:
        probe.kill()
    probe.communicate()


# A fresh interpreter importing mitmproxy takes over a second, nearly all of it waiting on
# nothing but its own imports: started as this module is collected, it runs on the other
# core while the tests before this one do, and the test only reads its answer. An xdist
# worker already fills a core of its own: there the probe runs in the test.
_PROBE = None if os.environ.get("PYTEST_XDIST_WORKER") else _start_probe()
if _PROBE is not None:
    atexit.register(_reap, _PROBE)  # a run that deselects the test still waits for it


_PROBED: list[tuple[int, str, str]] = []


def _probed() -> dict[str, list[str]]:
    """What the probe found: mitmproxy's default addons and the egress chain, by name."""
    if not _PROBED:
        probe = _PROBE if _PROBE is not None and _PROBE.returncode is None else _start_probe()
        out, err = probe.communicate(timeout=120)
        _PROBED.append((probe.returncode, out, err))
    code, out, err = _PROBED[0]
    assert code == 0, err[-2000:]
    found: dict[str, list[str]] = json.loads(out)
    return found


def test_the_egress_process_imports_no_flask_ldap3_or_werkzeug() -> None:
    assert _probed()["every"]  # the probe's own asserts held, then it listed the addons


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

    def __init__(
        self, connection: object, reader: asyncio.StreamReader, writer: object = None
    ) -> None:
        writer = _Closing() if writer is None else writer
        self.transports = {connection: server.ConnectionIO(reader=reader, writer=writer)}  # type: ignore[arg-type]
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


def test_a_socket_is_read_a_mebibyte_a_wake_up() -> None:
    """asyncio's transport asked the kernel for 256 KiB per wake-up and its reader paused the
    socket past 128 KiB, so a 1 MiB read got 256 KiB, each with a pause and a resume
    (issue 14, P4). Both raised for egress's connections only: the class keeps its own."""
    assert "recv(self.max_size)" in inspect.getsource(selector_events._SelectorSocketTransport)
    assert "2 * self._limit" in inspect.getsource(asyncio.StreamReader)
    master.read_more()
    client = connection.Client(
        peername=("127.0.0.1", 1), sockname=("127.0.0.1", 2), timestamp_start=0
    )
    client.state = connection.ConnectionState.CAN_READ
    sent = b"x" * (3 << 20)

    async def run() -> tuple[_Handler, asyncio.StreamReader, asyncio.StreamWriter]:
        accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]]
        accepted = asyncio.Queue()
        listening = await asyncio.start_server(
            lambda r, w: accepted.put_nowait((r, w)), "127.0.0.1", 0
        )
        port = listening.sockets[0].getsockname()[1]
        _, peer = await asyncio.open_connection("127.0.0.1", port)
        reader, writer = await accepted.get()
        handler = _Handler(client, reader, writer)
        peer.write(sent)
        peer.write_eof()
        await server.ConnectionHandler.handle_connection(handler, client)  # type: ignore[arg-type]
        peer.close()
        listening.close()
        return handler, reader, writer

    handler, reader, writer = asyncio.run(run())
    assert sum(handler.pieces) == len(sent)
    assert max(handler.pieces) <= master.READ_SIZE
    assert writer.transport.max_size == master.TRANSPORT_READ  # type: ignore[attr-defined]
    assert reader._limit == master.TRANSPORT_READ  # type: ignore[attr-defined]
    assert type(writer.transport).max_size == 256 * 1024  # type: ignore[attr-defined]


class _Hooked:
    """An addon that notes each ``request`` it sees, and may fail or halt the event."""

    def __init__(self, name: str, seen: list[str], *, fails: bool = False) -> None:
        self.name = name
        self.seen = seen
        self.fails = fails
        self.halts = False
        self.addons: list[object] = []

    def request(self, flow: object) -> None:
        self.seen.append(self.name)
        if self.fails:
            raise ValueError("broken addon")
        if self.halts:
            raise exceptions.AddonHalt()


class _AsyncHooked:
    def __init__(self, name: str, seen: list[str]) -> None:
        self.name = name
        self.seen = seen

    async def request(self, flow: object) -> None:
        await asyncio.sleep(0)
        self.seen.append(self.name)


class _Silent:
    """An addon without the hook (most of mitmproxy's chain, for any one event)."""

    def __init__(self, name: str) -> None:
        self.name = name


def test_hooks_run_in_chain_order_children_after_their_parent_as_mitmproxy_runs_them() -> None:
    async def run() -> tuple[list[str], list[str]]:
        got: list[list[str]] = []
        for manager in (addonmanager.AddonManager, master.HookIndex):
            seen: list[str] = []
            proxy = _proxy()
            proxy.addons = manager(proxy)
            parent = _Hooked("parent", seen)
            parent.addons = [_Hooked("child", seen), _AsyncHooked("async child", seen)]
            proxy.addons.add(_Silent("a"), parent, _Silent("b"), _AsyncHooked("last", seen))
            await _request(proxy)
            await _request(proxy)
            got.append(seen)
        return got[0], got[1]

    plain, indexed = asyncio.run(run())
    assert indexed == plain == ["parent", "child", "async child", "last"] * 2


def test_a_failing_handler_is_logged_and_the_next_addon_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[str] = []

    async def run() -> None:
        proxy = _proxy()
        broken = _Hooked("broken", seen, fails=True)
        broken.addons = [_Hooked("its child", seen)]  # skipped, as mitmproxy skips it
        proxy.addons.add(broken, _Hooked("next", seen))
        await _request(proxy)

    asyncio.run(run())
    assert seen == ["broken", "next"]
    assert "Addon error: broken addon" in caplog.text


def test_addon_halt_stops_the_event() -> None:
    seen: list[str] = []

    async def run() -> None:
        proxy = _proxy()
        first = _Hooked("first", seen)
        first.halts = True
        proxy.addons.add(first, _Hooked("never", seen))
        await _request(proxy)

    asyncio.run(run())
    assert seen == ["first"]


def test_the_index_follows_addons_added_and_removed() -> None:
    seen: list[str] = []

    async def run() -> None:
        proxy = _proxy()
        first = _Hooked("first", seen)
        proxy.addons.add(first)
        await _request(proxy)
        proxy.addons.add(_Hooked("added", seen))
        await _request(proxy)
        proxy.addons.remove(first)  # type: ignore[no-untyped-call]
        await _request(proxy)

    asyncio.run(run())
    assert seen == ["first", "first", "added", "added"]


def test_the_egress_master_dispatches_through_the_index_with_the_term_log_kept() -> None:
    from mitmproxy import options
    from mitmproxy.addons import termlog

    async def check() -> None:
        proxy = master.EgressMaster(options.Options())
        assert isinstance(proxy.addons, master.HookIndex)
        assert isinstance(proxy.addons.chain[0], termlog.TermLog)
        assert proxy.addons.get("errorcheck") is not None  # type: ignore[no-untyped-call]
        names = [type(a).__name__ for a in proxy.addons.chain]
        assert names.count("TermLog") == 1 and "Egress" in names and "ConnectGuard" in names

    asyncio.run(check())


def _proxy() -> mitm_master.Master:
    """A bare master (in a running loop) whose addons are a :class:`master.HookIndex`."""
    from mitmproxy import options

    proxy = mitm_master.Master(options.Options())
    proxy.addons = master.HookIndex(proxy)
    return proxy


async def _request(proxy: mitm_master.Master) -> None:
    """One ``request`` event through the proxy's addons, as mitmproxy sends it for a flow."""
    from mitmproxy.proxy.layers.http import HttpRequestHook
    from mitmproxy.test import tflow

    await proxy.addons.trigger_event(HttpRequestHook(tflow.tflow()))  # type: ignore[no-untyped-call]


def test_log_records_are_not_turned_into_add_log_events_nothing_handles() -> None:
    # Each of mitmproxy's per-connection lines became a thread-safe callback and a walk of
    # every addon (dropping the hook index): about a sixth of a new connection's CPU.
    import logging

    from mitmproxy import log, options

    async def check() -> None:
        proxy = master.EgressMaster(options.Options())
        try:
            legacy = [h for h in logging.getLogger().handlers if isinstance(h, log.LegacyLogEvents)]
            assert legacy == []
            loop = asyncio.get_running_loop()
            queued = len(loop._ready)  # type: ignore[attr-defined]
            logging.getLogger("mitmproxy.proxy.server").info("client connect")
            assert len(loop._ready) == queued  # type: ignore[attr-defined]
            assert logging.getLogger().handlers  # the term log and the error check stay
        finally:
            proxy._legacy_log_events.uninstall()

    asyncio.run(check())


def test_an_addon_with_the_add_log_hook_keeps_getting_it() -> None:
    import logging

    from mitmproxy import log, options

    class Listens:
        def add_log(self, entry: log.LogEntry) -> None:
            pass

    async def check() -> None:
        proxy = mitm_master.Master(options.Options())
        try:
            proxy.addons.add(Listens())
            master.drop_legacy_log_events(proxy)
            assert proxy._legacy_log_events in logging.getLogger().handlers
            plain = mitm_master.Master(options.Options())
            master.drop_legacy_log_events(plain)
            assert plain._legacy_log_events not in logging.getLogger().handlers
        finally:
            proxy._legacy_log_events.uninstall()

    asyncio.run(check())
