"""Modules imported from a zip read, inflate and unmarshal their bytecode once, not twice.

The sidecar image keeps the standard library and the pure packages as deflated zips
(``sidecar.Dockerfile``). CPython's ``zipimporter.find_spec`` asks its own ``get_filename``
for the module's file name, and that works the name out by loading the code (inflate and
unmarshal); ``exec_module`` then loads it again with ``get_code``. That second load was
about a fifth of each sidecar's start-up CPU (py-spy in the image: egress 19 %, supervise
18 % under ``find_spec``). :class:`OnceImporter` keeps the code ``get_filename`` loaded for
the ``get_code`` that follows it; everything else is ``zipimporter``'s own.

:func:`install` swaps it in for the zips already on ``sys.path`` and for the ones found
later. It does nothing where no zip is in use (the host: its Python has none on the path).
"""

from __future__ import annotations

import sys
import zipimport
from types import CodeType
from typing import Any, cast

__all__ = ["OnceImporter", "install"]


def _load(importer: zipimport.zipimporter, fullname: str) -> tuple[CodeType, bool, str]:
    """zipimport's own lookup: (code, is a package, the module's path inside the archive)."""
    get = cast("Any", zipimport)._get_module_code  # private; present in CPython 3.8-3.14
    return cast("tuple[CodeType, bool, str]", get(importer, fullname))


class OnceImporter(zipimport.zipimporter):
    """``zipimporter`` whose ``get_code`` takes the code its ``get_filename`` just loaded.

    One slot, not a cache: the import system calls ``find_spec`` (hence ``get_filename``)
    and then ``exec_module`` (hence ``get_code``) for the same module with nothing between,
    so the slot holds at most one code object and a miss loads afresh as before.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self._last: tuple[str, CodeType] | None = None

    def get_filename(self, fullname: str) -> str:
        code, _, modpath = _load(self, fullname)
        self._last = (fullname, code)
        return modpath

    def get_code(self, fullname: str) -> CodeType:
        last, self._last = self._last, None
        if last is not None and last[0] == fullname:
            return last[1]
        return super().get_code(fullname)


def install() -> None:
    """Use :class:`OnceImporter` for every zip on ``sys.path``, if any is in use (idempotent)."""
    cache = sys.path_importer_cache
    if not any(type(found) is zipimport.zipimporter for found in cache.values()):
        return
    hooks = sys.path_hooks
    for index, hook in enumerate(hooks):
        if hook is zipimport.zipimporter:
            hooks[index] = OnceImporter
    for path, found in list(cache.items()):
        if type(found) is zipimport.zipimporter:
            # zipimport keeps each archive's directory by its path: this reads nothing again.
            cache[path] = OnceImporter(path)
