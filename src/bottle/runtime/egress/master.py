"""mitmdump's master with bottle's addons registered directly, not loaded with ``-s``.

A ``-s`` script is watched: mitmproxy stats its file every second for the proxy's whole
life (and would reload it if it changed), an idle wake-up per second for each instance.
Registered here, the addons sit exactly where the script loader's children sat (right
after ``ScriptLoader`` in mitmproxy's default chain), so every hook runs in the same order.
Each hook's handlers are looked up once (:class:`HookIndex`), not in every addon per event.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from mitmproxy import addonmanager, exceptions, hooks, log, master, options
from mitmproxy.addons import (
    anticache,
    anticomp,
    block,
    blocklist,
    clientplayback,
    command_history,
    comment,
    core,
    disable_h2c,
    dns_resolver,
    errorcheck,
    keepserving,
    mapremote,
    modifybody,
    modifyheaders,
    next_layer,
    proxyserver,
    readfile,
    save,
    savehar,
    script,
    serverplayback,
    stickyauth,
    stickycookie,
    strip_dns_https_records,
    tlsconfig,
    update_alt_svc,
    upstream_auth,
)
from mitmproxy.proxy import server
from mitmproxy.tools import cmdline
from mitmproxy.tools.main import run as mitm_run

#: mitmproxy's ``default_addons()`` but these, which egress neither uses nor wants, and
#: whose imports made a tenth of its memory (:mod:`.lazy_addons` keeps them unloaded):
#: the ``mitm.it`` onboarding app (Flask; the agent gets egress's CA from a mounted file,
#: and egress's routes refused a request to ``mitm.it`` all the same), proxy
#: authentication (ldap3; the agent is the only client), ``export`` and ``cut`` (commands
#: copying flows to a clipboard), ``browser`` (a command starting a local Chrome) and
#: ``map_local`` (answers from local files, an option egress never sets; Werkzeug, for its
#: path join: 7 % of egress's start-up CPU).
LEFT_OUT = ("Onboarding", "ProxyAuth", "Export", "Cut", "Browser", "MapLocal")


def defaults() -> list[object]:
    """``mitmproxy.addons.default_addons()`` (mitmproxy 12) in its order, :data:`LEFT_OUT` out."""
    return [
        core.Core(),
        block.Block(),
        strip_dns_https_records.StripDnsHttpsRecords(),
        blocklist.BlockList(),
        anticache.AntiCache(),
        anticomp.AntiComp(),
        clientplayback.ClientPlayback(),  # type: ignore[no-untyped-call]
        command_history.CommandHistory(),
        comment.Comment(),
        disable_h2c.DisableH2C(),
        proxyserver.Proxyserver(),  # type: ignore[no-untyped-call]
        script.ScriptLoader(),  # type: ignore[no-untyped-call]
        dns_resolver.DnsResolver(),
        next_layer.NextLayer(),
        serverplayback.ServerPlayback(),  # type: ignore[no-untyped-call]
        mapremote.MapRemote(),
        modifybody.ModifyBody(),
        modifyheaders.ModifyHeaders(),
        stickyauth.StickyAuth(),  # type: ignore[no-untyped-call]
        stickycookie.StickyCookie(),
        save.Save(),
        savehar.SaveHar(),
        tlsconfig.TlsConfig(),
        upstream_auth.UpstreamAuth(),
        update_alt_svc.UpdateAltSvc(),
    ]


def chain(extra: Sequence[object]) -> list[object]:
    """mitmdump's addons (``DumpMaster``'s, :func:`defaults`) with ``extra`` right after the
    script loader, but its ``Dumper``: the flow printer, idle at egress's ``flow_detail`` of
    0 (each of its hooks returned at once), whose content views (HTML, images, protobuf,
    WBXML...) took 2-3 % of egress's start-up CPU to import."""
    found = defaults()
    at = next(i for i, a in enumerate(found) if isinstance(a, script.ScriptLoader)) + 1
    found[at:at] = list(extra)
    found += [
        keepserving.KeepServing(),
        readfile.ReadFileStdin(),  # type: ignore[no-untyped-call]
        errorcheck.ErrorCheck(),
    ]
    return found


#: What mitmproxy's connection loop asks of a socket each time (hard-coded there).
MITM_READ = 65535
#: What egress reads instead. Every read is one event through mitmproxy's layers and
#: addons, a fixed cost: at 64 KiB a 100 MB download spent more time in that than in
#: moving the bytes.
READ_SIZE = 1 << 20
#: asyncio's socket transport asks the kernel for at most its ``max_size`` (256 KiB) per
#: wake-up, and its reader stops the socket past twice its ``limit`` (64 KiB) and starts
#: it again when a read took the buffer below: so a 1 MiB read still got 256 KiB
#: (measured: 383 reads per 100 MB), and each one cost a pause and a resume of the socket
#: (two ``epoll_ctl`` and their Python). Both raised to :data:`READ_SIZE`, a 100 MB
#: download took a fifth less of egress's CPU (0.069-0.073 -> 0.056-0.057 s, A/B
#: interleaved on the docker network), its throughput within the noise (+2-13 %). A
#: connection then holds at most 3 MiB its peer has not taken (past 2 * limit the socket
#: stops, one read after it), where it held 0.4 MiB: less than egress already holds of a
#: request body it scans whole.
TRANSPORT_READ = READ_SIZE


def read_more() -> None:
    """mitmproxy's connection loop reads up to :data:`READ_SIZE` at a time, its socket
    :data:`TRANSPORT_READ` at a time (idempotent)."""
    handle = server.ConnectionHandler.handle_connection
    if getattr(handle, "bottle_reads", 0) == READ_SIZE:
        return

    async def handle_connection(self: server.ConnectionHandler, connection: Any) -> None:
        io = self.transports.get(connection)
        reader = io.reader if io is not None else None
        if isinstance(reader, asyncio.StreamReader):
            reader.read = _larger(reader.read)  # type: ignore[method-assign,assignment]
            read_whole(reader, io.writer if io is not None else None)
        await handle(self, connection)

    handle_connection.bottle_reads = READ_SIZE  # type: ignore[attr-defined]
    server.ConnectionHandler.handle_connection = handle_connection  # type: ignore[method-assign]


def read_whole(reader: asyncio.StreamReader, writer: object) -> None:
    """``reader``'s socket gives up to :data:`TRANSPORT_READ` per wake-up and is paused only
    past twice that. Both are private attributes of asyncio's (``max_size`` a class
    attribute of the selector transport, ``_limit`` the reader's): a transport or reader
    without them is left as it is, and ``tests/unit/test_egress_master.py`` pins that the
    interpreter's asyncio still reads them."""
    transport = writer.transport if isinstance(writer, asyncio.StreamWriter) else None
    if isinstance(getattr(type(transport), "max_size", None), int):
        transport.max_size = max(transport.max_size, TRANSPORT_READ)  # type: ignore[union-attr]
    if isinstance(getattr(reader, "_limit", None), int):
        reader._limit = max(reader._limit, TRANSPORT_READ)  # type: ignore[attr-defined]


_Read = Callable[[int], Coroutine[Any, Any, bytes]]


def _larger(read: _Read) -> _Read:
    def larger(n: int = -1) -> Coroutine[Any, Any, bytes]:
        return read(READ_SIZE if n == MITM_READ else n)

    return larger


#: (a top-level addon, its and its children's handlers of one hook, or None: look them up
#: each time, as mitmproxy does, because looking them up failed once).
_Handlers = list[tuple[object, list[Callable[..., Any]] | None]]


class HookIndex(addonmanager.AddonManager):
    """mitmproxy's addon manager with each hook's handlers found once, not per event.

    mitmproxy walks all ~35 addons of the chain for every event (a getattr on each of them
    and their children, a coroutine and a context manager per addon, the hook's arguments
    built again for each handler), and an event with a flow is followed by an ``update``
    event walked the same way: about a tenth of egress's CPU per request went to that,
    the addons' own work not counted. Here an event runs the same handlers in the same
    order, each top-level addon's inside its own ``safecall`` as before (an error is logged
    and the next addon still runs; ``AddonHalt`` stops the event), but the handlers come
    from an index made on the hook's first event. Any change to the chain (an addon added
    or removed) and every synchronous ``trigger`` (options being configured, which is when a
    script addon could swap its children) drops the index.
    """

    def __init__(self, proxy: master.Master) -> None:
        super().__init__(proxy)  # type: ignore[no-untyped-call]
        self._index: dict[str, _Handlers] = {}

    def register(self, addon: Any) -> Any:
        self._index.clear()
        return super().register(addon)  # type: ignore[no-untyped-call]

    def add(self, *addons: Any) -> None:
        super().add(*addons)  # type: ignore[no-untyped-call]
        self._index.clear()

    def remove(self, addon: Any) -> None:
        super().remove(addon)  # type: ignore[no-untyped-call]
        self._index.clear()

    def clear(self) -> None:
        super().clear()  # type: ignore[no-untyped-call]
        self._index.clear()

    def trigger(self, event: hooks.Hook) -> None:
        self._index.clear()
        super().trigger(event)
        self._index.clear()

    def handlers(self, event: hooks.Hook) -> _Handlers:
        """The chain's handlers of ``event``'s hook, by top-level addon, in chain order."""
        found = self._index.get(event.name)
        if found is None:
            found = []
            for top in self.chain:
                try:
                    here = [func for _, func in self._iter_hooks(top, event)]
                except exceptions.AddonManagerError:
                    found.append((top, None))  # mitmproxy's own way logs the error, each time
                    continue
                if here:
                    found.append((top, here))
            self._index[event.name] = found
        return found

    async def trigger_event(self, event: hooks.Hook) -> None:
        args: list[Any] | None = None
        for top, funcs in self.handlers(event):
            try:
                with addonmanager.safecall():
                    if funcs is None:
                        await self.invoke_addon(top, event)
                        continue
                    for func in funcs:
                        if args is None:
                            args = event.args()
                        done = func(*args)
                        if done is not None and inspect.isawaitable(done):
                            await done
            except exceptions.AddonHalt:
                return


class EgressMaster(master.Master):
    """``DumpMaster``, the egress addons included."""

    def __init__(self, opts: options.Options, **kwargs: Any) -> None:
        from bottle.runtime.egress import addon

        read_more()
        super().__init__(opts, with_termlog=True, **kwargs)
        # Swapped in before any addon but the term log is added: that one is carried over
        # as it is (loaded already), not registered again.
        index = HookIndex(self)
        index.chain, index.lookup = self.addons.chain, self.addons.lookup
        self.addons = index
        self._ours = list(addon.addons)
        self.addons.add(*chain(self._ours))
        drop_legacy_log_events(self)

    async def run(self) -> None:
        # Registered before the command line is read, the addons saw ``configure`` only for
        # the options it set; an option left at its default (``bottle_own_networks``: the
        # bottle's own networks and the host's addresses) was never applied. The script
        # loader configured a script with every option once loaded: so here, before serving.
        self.configure_all()
        await super().run()

    def configure_all(self) -> None:
        """``configure`` of every egress addon with every option, as a loaded script gets."""
        every = hooks.ConfigureHook(set(self.options.keys()))  # type: ignore[no-untyped-call]
        for ours in self._ours:
            self.addons.invoke_addon_sync(ours, every)


#: mitmproxy's deprecated hook that :class:`mitmproxy.log.LegacyLogEvents` feeds.
LEGACY_LOG_HOOK = "add_log"


def drop_legacy_log_events(proxy: master.Master) -> None:
    """Take out mitmproxy's handler that turns every log record into an ``add_log`` event,
    when no addon of the chain has that (deprecated) hook.

    mitmproxy's own lines run at DEBUG and INFO (about six per connection: client and
    server connect, TLS, disconnect), and that handler formats each one and hands it to
    the loop with ``call_soon_threadsafe`` (a write to the loop's wake-up socket and one
    more turn of the loop) as a synchronous ``trigger``, which walks every addon and drops
    the hook index, so the connection's next event looked up all handlers again: about a
    sixth of egress's CPU per new HTTPS connection, for a hook that nothing here handles.
    The term log and the error check are handlers of their own and stay.
    """
    every = addonmanager.traverse(proxy.addons.chain)  # type: ignore[no-untyped-call]
    if any(callable(getattr(one, LEGACY_LOG_HOOK, None)) for one in every):
        return
    legacy = getattr(proxy, "_legacy_log_events", None)
    if isinstance(legacy, log.LegacyLogEvents):
        legacy.uninstall()


def run(arguments: Sequence[str]) -> None:
    """Run mitmdump with ``arguments`` (its options, no program name) until stopped."""
    proxy = mitm_run(EgressMaster, cmdline.mitmdump, list(arguments))
    errors = proxy.addons.get("errorcheck")  # type: ignore[no-untyped-call]
    if errors is not None and getattr(errors, "has_errored", False):
        sys.exit(1)
