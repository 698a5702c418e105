"""Bounded YAML (bottle.boundedyaml): every bound holds on libyaml's events (the host) and on
ruamel's pure parser (the sidecar image, which has no ruamel.yaml.clib), with the same data."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bottle import boundedyaml
from bottle.boundedyaml import MAX_ALIASED_NODES, MAX_DEPTH
from bottle.errors import ManifestError
from bottle.manifest.loader import MAX_FILE_BYTES, split_front_matter
from bottle.policy import RoutesFileError, parse_routes_file


@pytest.fixture(params=["libyaml", "pure"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Each test once per parser; the host has the C one (a dependency), so none is skipped."""
    assert boundedyaml.CParser is not None, "ruamel.yaml.clib is a host dependency"
    if request.param == "pure":
        monkeypatch.setattr(boundedyaml, "CParser", None)
    yield request.param


def _front(body: str) -> str:
    return f"---\n{body}---\n"


def _both(text: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    c = boundedyaml.load(text)
    with monkeypatch.context() as m:
        m.setattr(boundedyaml, "CParser", None)
        return c, boundedyaml.load(text)


@pytest.mark.parametrize(
    "body",
    [
        "a: " + "[" * 20_000 + "]" * 20_000 + "\n",
        "a: " + "{b: " * 20_000 + "1" + "}" * 20_000 + "\n",
        "".join(" " * i + "k:\n" for i in range(100)) + " " * 100 + "v\n",
        "a:\n" + "- " * 20_000 + "x\n",
        # As large as a file may be: a parser reading it all before composing would take
        # minutes (libyaml's simple-key check is quadratic in the flow depth).
        "a: " + "[" * (MAX_FILE_BYTES - 20) + "\n",
        "a:\n" + " [\n" * (MAX_FILE_BYTES // 3 - 20),
    ],
    ids=["flow-sequences", "flow-mappings", "block", "block-sequences", "1MiB-line", "1MiB-lines"],
)
def test_deep_nesting_is_refused_before_it_is_built(parser: str, body: str) -> None:
    with pytest.raises(ManifestError, match="nests deeper than") as caught:
        split_front_matter(_front(body), Path("deep.md"))
    assert caught.value.exit_code == 2


def test_nesting_up_to_the_bound_is_read(parser: str) -> None:
    depth = MAX_DEPTH - 1  # the mapping of the front matter is a level too
    data, _ = split_front_matter(_front("a: " + "[" * depth + "]" * depth + "\n"), Path("ok.md"))
    for _ in range(depth):
        data = data["a"] if isinstance(data, dict) else data[0]
    assert data == []


def test_billion_laughs_is_refused(parser: str) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]\n"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)]
    with pytest.raises(ManifestError, match=f"more than {MAX_ALIASED_NODES}"):
        split_front_matter(_front("".join(lines)), Path("lol.md"))


def test_an_alias_inside_its_own_anchor_is_refused(parser: str) -> None:
    with pytest.raises(ManifestError, match="refers to itself"):
        split_front_matter(_front("a: &a [1, *a]\n"), Path("loop.md"))


def test_ordinary_aliases_still_work(parser: str) -> None:
    data, _ = split_front_matter(_front("x: &v [1, 2]\ny: *v\nz: [*v, *v]\n"), Path("ok.md"))
    assert data == {"x": [1, 2], "y": [1, 2], "z": [[1, 2], [1, 2]]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", r"bad YAML \(line 4, column 1\): found duplicate key"),
        ("env: [1, 2\n", r"bad YAML \(line 3, column 1\)"),
        ("a: b: c\n", r"bad YAML \(line 2, column 5\): mapping values are not allowed"),
        ("a: 1\nb: *nowhere\n", r"bad YAML \(line 3, column 4\): found undefined alias"),
        ("a: !!python/object:os.system x\n", r"bad YAML \(line 2, column 4\)"),
        ("--- a\n--- b\n", r"bad YAML \(line 3, column 1\)"),
    ],
    ids=["duplicate-key", "unclosed", "nested-value", "undefined-alias", "python-tag", "two-docs"],
)
def test_bad_yaml_names_the_same_line_and_column(parser: str, body: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message) as caught:
        split_front_matter(_front(body), Path("bad.md"))
    assert caught.value.exit_code == 2


def test_a_control_character_is_refused(parser: str) -> None:
    with pytest.raises(ManifestError, match="bad YAML"):
        split_front_matter(_front("a: \x07\n"), Path("bell.md"))


def test_routes_files_are_bounded_too(parser: str) -> None:
    # The host parses the copy egress echoes in its status: a compromised egress writes it.
    deep = b"routes: " + b"[" * 100_000 + b"\n"
    with pytest.raises(RoutesFileError, match=f"nests deeper than {MAX_DEPTH} levels"):
        parse_routes_file(deep, "status")
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]\n"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 10)]
    with pytest.raises(RoutesFileError, match=f"more than {MAX_ALIASED_NODES}"):
        parse_routes_file("".join(lines).encode(), "status")
    with pytest.raises(RoutesFileError, match="refers to itself"):
        parse_routes_file(b"routes: &r [*r]\n", "status")


def test_a_routes_file_reads_the_same(parser: str) -> None:
    text = b"routes:\n  - host: pypi.org\n  - host: files.pythonhosted.org\n    methods: [GET]\n"
    routes = parse_routes_file(text, "routes.yaml")
    assert [r.host for r in routes.routes] == ["pypi.org", "files.pythonhosted.org"]
    assert parse_routes_file(routes.to_yaml()) == routes


@pytest.mark.parametrize(
    "text",
    [
        # YAML 1.2 (the resolver is Python on both paths): strings, ints, no sexagesimals.
        "a: on\nb: off\nc: yes\nd: no\ne: 0777\nf: 1_000\ng: 0o17\nh: 1:20\ni: ~\n"
        "j: 2026-01-01\nk: .inf\nl: 0x1f\nm: Yes\nn: NO\no: y\np: '0777'\nq: 1e3\n",
        # A %YAML 1.1 directive switches both to the 1.1 rules (yes is true, 0777 octal).
        "%YAML 1.1\n--- {a: yes, b: 0777, c: on, d: 1_000, e: 1:20}\n",
        "%YAML 1.2\n--- {a: yes, b: 0777}\n",
        "base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n",
        "a: 'é ü'\nb: \"\\u00e9\\t\"\nc: |\n  x\n  y\nd: >-\n  folded\n  text\n",
        "\ufeffa: [1, {b: null}, '', ~]\n",
        # ':' inside flow plain scalars: 1.2 syntax libyaml refuses, so the pure parser reads it.
        "remotes: [https://github.com/o/r.git, 'x']\nports: {a: 1:20, b:c}\nip: [::1]\n",
        "",
        "# only a comment\n",
    ],
    ids=[
        "scalars",
        "yaml-1.1",
        "yaml-1.2",
        "merge",
        "strings",
        "bom",
        "colons",
        "empty",
        "comment",
    ],
)
def test_both_parsers_give_the_same_data(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    c, pure = _both(text, monkeypatch)
    assert c == pure
    assert repr(c) == repr(pure)  # the same types too: True is not 1, '0777' not 511


def test_what_libyaml_refuses_the_pure_parser_decides(parser: str) -> None:
    data, _ = split_front_matter(_front("a: [https://x.org/p, b:c]\n"), Path("ok.md"))
    assert data == {"a": ["https://x.org/p", "b:c"]}
    with pytest.raises(ManifestError, match=r"line 3, column 1\): expected ',' or ']'"):
        split_front_matter(_front("a: [https://x.org/p\n"), Path("bad.md"))


def test_yaml_1_2_scalars_keep_their_meaning(monkeypatch: pytest.MonkeyPatch) -> None:
    c, pure = _both("a: on\nb: yes\nc: 0777\nd: 1_000\ne: 0o17\n", monkeypatch)
    assert c == pure == {"a": "on", "b": "yes", "c": 777, "d": 1000, "e": 15}
    old, _ = _both("%YAML 1.1\n--- {a: on, b: yes, c: 0777}\n", monkeypatch)
    assert old == {"a": True, "b": True, "c": 511}


def _scanned(text: str, scanner: type) -> list[tuple[Any, ...]]:
    """Every token ``scanner`` finds in ``text``, then the error that stopped it, if any."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    yaml = YAML(typ="safe", pure=True)
    yaml.Scanner = scanner
    found: list[tuple[Any, ...]] = []
    try:
        for token in yaml.scan(text):
            found.append(
                (type(token).__name__, token.start_mark.index, token.end_mark.index)
                + ((token.value,) if hasattr(token, "value") else ())
            )
    except MarkedYAMLError as exc:
        found.append((type(exc).__name__, str(exc)))
    return found


_yaml_text = st.text(alphabet="[]{}:,-?#&*!|>'\"\n\t ab1", max_size=120)
# What may end a simple key, right after the run that took it near or past 1024 characters.
_key_ends = st.sampled_from(["", ": v", "]: v", "}: v", ", a: b", "\n", "\n: v", "\n  x"])


@settings(deadline=None)
@given(
    head=_yaml_text,
    flow=st.integers(min_value=0, max_value=64),
    # Keys go stale on a new line or 1024 characters on: a long plain scalar takes them
    # to either side of that distance.
    far=st.integers(min_value=0, max_value=40) | st.integers(min_value=1016, max_value=1032),
    end=_key_ends,
    tail=_yaml_text,
)
def test_the_simple_key_bookkeeping_scans_as_ruamels_own(
    head: str, flow: int, far: int, end: str, tail: str
) -> None:
    from ruamel.yaml.scanner import Scanner

    text = head + "[" * flow + "x" * far + end + tail
    assert _scanned(text, boundedyaml._Scanner) == _scanned(text, Scanner)


@pytest.mark.parametrize("far", [1022, 1023, 1024, 1025, 1026])
@pytest.mark.parametrize("text", ["{x}: v", "a: 1\n{x}\nb: 2\n", "[[[{x}]: v]]", "{{{x}\n}}}"])
def test_the_simple_key_bookkeeping_agrees_at_1024_characters(text: str, far: int) -> None:
    from ruamel.yaml.scanner import Scanner

    text = text.replace("{x}", "x" * far)
    assert _scanned(text, boundedyaml._Scanner) == _scanned(text, Scanner)
