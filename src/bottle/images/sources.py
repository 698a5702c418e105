"""Which ``bottle`` modules the sidecar image carries: the runtime and what it imports.

The sidecar's tag is a hash of its context, so the context holds only the code the sidecars
run: every module under ``bottle/runtime/`` and, transitively, every ``bottle`` module they
import (and the packages above each). A change to host-only code (the CLI, the engine, the
planner) then leaves the sidecar image as it is.

Imports are found by reading the source (``ast``), not by importing it: the host need not
have mitmproxy or mcp installed. Imports inside ``if TYPE_CHECKING:`` are not followed: they
never run (``bottle/__init__.py`` names the whole library that way, and loads it lazily).

Parsing some fifty modules took 0.15-0.3 s of every ``bottle start``: what each file imports
is kept in a cache file by the digest of its bytes, so only an edited file is parsed again.
A cache file that is not exactly what this module writes (only ``bottle`` module names)
is ignored whole; one that lies can only leave a module out of the image, and a sidecar
missing a module fails to start: it never serves.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import json
from pathlib import Path

__all__ = ["RUNTIME_PACKAGE", "runtime_sources"]

RUNTIME_PACKAGE = "bottle.runtime"
_SKIP_DIRS = frozenset({"__pycache__"})


def _module_file(root: Path, module: str) -> Path | None:
    """The file of ``bottle.x.y`` under ``root`` (the ``bottle`` directory), if it has one."""
    parts = module.split(".")[1:]
    base = root.joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_suffix(".py") if parts else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _module_name(root: Path, path: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = ["bottle", *rel.parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported(root: Path, path: Path, source: bytes, known: dict[str, list[str]]) -> set[str]:
    """The ``bottle`` modules ``path`` (whose bytes are ``source``) may import (``from m
    import name`` may name a module).

    ``known`` maps ``package:digest of the source`` to the answer; it is filled as it goes.
    """
    package = _module_name(root, path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    key = f"{package}:{hashlib.sha256(source).hexdigest()}"
    if key not in known:
        try:
            known[key] = sorted(_imports_in(package, source))
        except SyntaxError as exc:
            exc.filename = str(path)
            raise
    return set(known[key])


# Every plan hashes the sidecar context, and parsing is most of that cost. Keyed by the
# source text itself (not its path: the same text elsewhere is answered too), so an
# edited file is parsed afresh.
@functools.lru_cache(maxsize=1024)
def _imports_in(package: str, source: bytes) -> frozenset[str]:
    found: set[str] = set()
    for node in _runtime_imports(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, node.module] if node.module else anchor)
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return frozenset(name for name in found if name == "bottle" or name.startswith("bottle."))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of ``tree`` except those in ``if TYPE_CHECKING:`` bodies.

    Only statements are walked: an import is one, and no expression (most of a module's
    nodes) holds a statement. Walking every node took four times as long.
    """
    out: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            out.append(node)
            continue
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        # Where statements nest: the bodies of def, class, if, for, while, with, try and
        # its except clauses, and the cases of match.
        for field in ("body", "orelse", "finalbody"):
            stack.extend(getattr(node, field, ()))
        for clause in (*getattr(node, "handlers", ()), *getattr(node, "cases", ())):
            stack.extend(clause.body)
    return out


def runtime_sources(root: Path, *, cache: Path | None = None) -> dict[str, bytes]:
    """The files the sidecar runs, under ``bottle/``: ``root`` is the ``bottle`` directory.

    ``cache``: the file that keeps what each source imports (see the module docstring).
    """
    pending = [p for p in sorted((root / "runtime").rglob("*.py")) if not _skipped(root, p)]
    # Each file is read once: what is shipped is what was parsed.
    seen: dict[Path, bytes] = {}
    # Modules are named again and again (bottle.errors by most): looked up once a walk.
    located: dict[str, Path | None] = {}
    cached = _read_cache(cache)
    known = dict(cached)
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        source = seen[path] = path.read_bytes()
        # Importing a module runs every package __init__ above it.
        parent = path.parent
        while parent != root.parent:
            init = parent / "__init__.py"
            if init.is_file() and init not in seen:
                pending.append(init)
            parent = parent.parent
        for module in _imported(root, path, source, known):
            if module not in located:
                located[module] = _module_file(root, module)
            target = located[module]
            if target is not None and target not in seen:
                pending.append(target)
    if cache is not None and known != cached:
        _write_cache(cache, known)
    files = {f"bottle/{p.relative_to(root).as_posix()}": data for p, data in seen.items()}
    typed = root / "py.typed"
    if typed.is_file():
        files["bottle/py.typed"] = typed.read_bytes()
    return dict(sorted(files.items()))


def _skipped(root: Path, path: Path) -> bool:
    return any(part in _SKIP_DIRS for part in path.relative_to(root).parts)


#: Entries kept at most: the answers of several checkouts or versions side by side.
_CACHE_ENTRIES = 2048


def _read_cache(path: Path | None) -> dict[str, list[str]]:
    """The cache's entries; none when there is none or it is not exactly what we write."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    entries = data.get("imports") if isinstance(data, dict) and data.get("version") == 1 else None
    if not isinstance(entries, dict):
        return {}
    good = {
        key: names
        for key, names in entries.items()
        if isinstance(key, str)
        and isinstance(names, list)
        and all(isinstance(n, str) and (n == "bottle" or n.startswith("bottle.")) for n in names)
    }
    return good if len(good) == len(entries) else {}


def _write_cache(path: Path, entries: dict[str, list[str]]) -> None:
    from bottle.files import atomic_write

    kept = dict(list(entries.items())[-_CACHE_ENTRIES:])  # the newest, in the order found
    with contextlib.suppress(OSError):  # a read-only home: parsed again next time, no more
        atomic_write(path, json.dumps({"version": 1, "imports": kept}))
