"""YAML from a writer bottle does not trust, loaded with bounds on depth and aliases.

Bottle and agent files (a repository's agents live in the agent-writable workspace) and the
routes file (egress's status echoes it back to the host) may be hostile. Their bounds live in
our composer, which builds nodes from parser events: it refuses past ``max_depth`` levels
before the parser has read much further (the parser is lazy, so ``[`` times a million costs
a few dozen events), an alias inside its own anchor, and aliases that stand for more than
``max_aliased`` nodes. The resolver and the safe constructor stay ruamel's Python ones, so
values (``yes`` is a string, ``0777`` an int, YAML 1.2) do not depend on the parser.

The events come from libyaml (``ruamel.yaml.clib``'s ``CParser``, 5-10 times faster) where it
is installed, the host; else from ruamel's pure-Python parser, as in the sidecar image. Where
libyaml finds a syntax error the pure parser reads the text again and decides (libyaml is YAML
1.1 syntax and refuses some 1.2 the pure parser reads), so a file reads the same everywhere.
``YAML.load`` with the C parser would compose in C as well and skip our bounds, so the C path
composes explicitly.
"""

from __future__ import annotations

import functools
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.composer import Composer, ComposerError, MaxDepthExceededError
from ruamel.yaml.events import DocumentStartEvent
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode
from ruamel.yaml.parser import ParserError
from ruamel.yaml.reader import ReaderError
from ruamel.yaml.scanner import Scanner, ScannerError

try:
    from _ruamel_yaml import CParser  # libyaml, from ruamel.yaml.clib
except ImportError:  # the sidecar image: ruamel.yaml alone
    CParser = None

__all__ = ["MAX_ALIASED_NODES", "MAX_DEPTH", "AliasBomb", "MaxDepthExceededError", "load"]

#: A real bottle, agent or routes file is a few levels deep with few aliases; past these
#: bounds it is refused before it is built.
MAX_DEPTH = 32
MAX_ALIASED_NODES = 10_000


class AliasBomb(ComposerError):
    """Aliases refer to their own anchor or stand for more nodes than allowed."""


def load(text: str, *, max_depth: int = MAX_DEPTH, max_aliased: int = MAX_ALIASED_NODES) -> Any:
    """The one document in ``text``, as plain data (None when empty).

    Raises ``MaxDepthExceededError``, ``AliasBomb`` or another ``ruamel.yaml`` ``YAMLError``.
    """
    if CParser is not None:
        try:
            return _load_c(text, max_depth, max_aliased)
        except (ReaderError, ScannerError, ParserError):
            # libyaml reads YAML 1.1 syntax, which refuses a ':' inside a flow plain scalar
            # (`[https://x.org]`, `{port: a:1}`) that the pure parser's 1.2 reads: the pure
            # parser has the last word, so the host and the sidecar accept the same files.
            pass
    yaml = _yaml(max_depth)
    # YAML builds it as Composer(loader=...); a partial is such a callable.
    yaml.Composer = functools.partial(_BoundedComposer, max_aliased=max_aliased)  # type: ignore[assignment]
    return yaml.load(text)


def _yaml(max_depth: int) -> YAML:
    yaml = YAML(typ="safe", pure=True)
    yaml.max_depth = max_depth
    yaml.Scanner = _Scanner
    return yaml


class _Scanner(Scanner):
    """ruamel's scanner, with its bookkeeping of possible simple keys in constant time a token.

    It keeps one possible key per flow level and looked at every one of them for each token:
    ``[`` a thousand times (the scanner reads up to 1024 characters ahead for a key) made
    half a million looks before the composer's depth bound could refuse the text (0.2 s a
    file). The keys are kept in the order they were found, which is the order of their
    positions and token numbers, so the nearest is the first, and the stale ones (on an
    earlier line or 1024 characters back) are the first few: the same answers, the same
    errors, found at the front.
    """

    def next_possible_simple_key(self) -> Any:
        for key in self.possible_simple_keys.values():
            return key.token_number
        return None

    def stale_possible_simple_keys(self) -> None:
        keys = self.possible_simple_keys
        if not keys:
            return
        reader = self.reader
        line, index = reader.line, reader.index
        stale = []
        for level, key in keys.items():
            if key.line == line and index - key.index <= 1024:
                break  # this one and every later one are still possible
            stale.append((level, key))
        for level, key in stale:
            if key.required:
                raise ScannerError(
                    "while scanning a simple key",
                    key.mark,
                    "could not find expected ':'",
                    reader.get_mark(),
                )
            del keys[level]


def _load_c(text: str, max_depth: int, max_aliased: int) -> Any:
    yaml = _yaml(max_depth)
    events = CParser(text)
    try:
        node = _BoundedComposer(yaml, max_aliased=max_aliased, events=events).get_single_node()
        return None if node is None else yaml.constructor.construct_document(node)
    finally:
        events.dispose()


class _BoundedComposer(Composer):
    """ruamel's composer counting the nodes aliases stand for: a few anchors must not expand
    to billions. Reads ``events`` when given (the C parser), else the loader's parser."""

    def __init__(self, loader: Any = None, *, max_aliased: int, events: Any = None) -> None:
        super().__init__(loader=loader)
        self._events = events
        self._max_aliased = max_aliased
        self._aliased = 0
        self._sizes: dict[int, int] = {}
        self._done: set[int] = set()

    @property
    def parser(self) -> Any:
        return super().parser if self._events is None else self._events

    def compose_document(self) -> Any:
        start = self.parser.peek_event()
        if self._events is not None and isinstance(start, DocumentStartEvent) and start.version:
            # The pure parser hands a `%YAML 1.1` directive to the loader, whose resolver then
            # reads `yes` as true; the C parser only reports it, so pass it on the same way.
            self.loader.version = start.version
        return super().compose_document()

    def compose_node(self, parent: Any, index: Any) -> Any:
        node = super().compose_node(parent, index)
        self._done.add(id(node))
        return node

    def return_alias(self, a: Any) -> Any:
        if id(a) not in self._done:
            # An alias inside its own anchor: a cycle no validator or merge could walk.
            raise AliasBomb(None, None, "an alias refers to itself", a.start_mark)
        self._aliased += self._size(a)
        if self._aliased > self._max_aliased:
            raise AliasBomb(
                None, None, f"aliases expand to more than {self._max_aliased} values", a.start_mark
            )
        return a

    def _size(self, node: Node) -> int:
        """Nodes under ``node``, aliases expanded (memoised; depth is bounded by max_depth)."""
        key = id(node)
        if key not in self._sizes:
            if isinstance(node, MappingNode):
                children = [n for pair in node.value for n in pair]
            elif isinstance(node, SequenceNode):
                children = list(node.value)
            else:
                children = []
            self._sizes[key] = 1 + sum(self._size(c) for c in children)
        return self._sizes[key]
