"""mitmdump's master with bottle's addons registered directly, not loaded with ``-s``.

A ``-s`` script is watched: mitmproxy stats its file every second for the proxy's whole
life (and would reload it if it changed), an idle wake-up per second for each instance.
Registered here, the addons sit exactly where the script loader's children sat (right
after ``ScriptLoader`` in mitmproxy's default chain), so every hook runs in the same order.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from mitmproxy import addons as mitm_addons
from mitmproxy import master, options
from mitmproxy.addons import dumper, errorcheck, keepserving, readfile, script
from mitmproxy.tools import cmdline
from mitmproxy.tools.main import run as mitm_run


def chain(extra: Sequence[object]) -> list[object]:
    """mitmdump's addons (``DumpMaster``'s) with ``extra`` right after the script loader."""
    found: list[object] = list(mitm_addons.default_addons())  # type: ignore[no-untyped-call]
    at = next(i for i, a in enumerate(found) if isinstance(a, script.ScriptLoader)) + 1
    found[at:at] = list(extra)
    found += [
        dumper.Dumper(),
        keepserving.KeepServing(),
        readfile.ReadFileStdin(),  # type: ignore[no-untyped-call]
        errorcheck.ErrorCheck(),
    ]
    return found


class EgressMaster(master.Master):
    """``DumpMaster``, the egress addons included."""

    def __init__(self, opts: options.Options, **kwargs: Any) -> None:
        from bottle.runtime.egress import addon

        super().__init__(opts, with_termlog=True, **kwargs)
        self.addons.add(*chain(addon.addons))  # type: ignore[no-untyped-call]


def run(arguments: Sequence[str]) -> None:
    """Run mitmdump with ``arguments`` (its options, no program name) until stopped."""
    proxy = mitm_run(EgressMaster, cmdline.mitmdump, list(arguments))
    errors = proxy.addons.get("errorcheck")  # type: ignore[no-untyped-call]
    if errors is not None and getattr(errors, "has_errored", False):
        sys.exit(1)
