"""``mitmproxy.addons`` as a package whose ``__init__`` runs only when something needs it.

:func:`install` runs before anything of mitmproxy's master is imported: that package's
``__init__`` imports every addon mitmproxy ships so that ``default_addons()`` can list them,
and with them Flask, Werkzeug and Jinja (the onboarding app at ``mitm.it``), ldap3 and
pyasn1 (proxy authentication against LDAP), pyperclip (``cut``): about 240 modules and
11 MB of each egress sidecar's resident memory (issue 14, P6), for addons egress never
registers (:func:`bottle.runtime.egress.master.chain` names the ones it does). Loaded
here, ``mitmproxy.addons.<name>`` imports that one module alone; any other attribute of the
package (``default_addons``, as mitmdump's own master asks for it) runs the real
``__init__`` first, so nothing that wants the whole package gets less.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

PACKAGE = "mitmproxy.addons"


def install() -> None:
    """Put the lazy package in place unless the real one was imported already."""
    if PACKAGE in sys.modules:
        return
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return  # not the package this was written against: leave mitmproxy as it is
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader
    whole: list[bool] = []

    def __getattr__(name: str) -> object:  # PEP 562: the module's own hook
        if name.startswith("__"):
            raise AttributeError(name)
        try:
            return importlib.import_module(f"{PACKAGE}.{name}")
        except ModuleNotFoundError as missing:
            if missing.name != f"{PACKAGE}.{name}":
                raise  # the addon exists; something it imports does not
        if not whole:
            whole.append(True)
            loader.exec_module(package)  # the real __init__: every addon, default_addons
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None

    package.__getattr__ = __getattr__  # type: ignore[method-assign]
    sys.modules[PACKAGE] = package
    parent = sys.modules["mitmproxy"]  # find_spec imported it
    setattr(parent, "addons", package)  # noqa: B010  (what the import system would do)


def is_lazy(module: types.ModuleType) -> bool:
    """Whether ``module`` is the package as :func:`install` left it (its ``__init__`` not run)."""
    return "__getattr__" in module.__dict__ and "default_addons" not in module.__dict__
