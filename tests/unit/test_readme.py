"""Every ``bottle ...`` command line in README.md parses against the real CLI.

The README's usage block is read line by line (placeholders such as SLUG get a value,
``[--json]`` is tried with and without, ``show|edit`` each way) and parsed by the CLI's own
parser, with nothing run: an example with a misplaced or unknown option fails here.
"""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import pytest

from bottle_cli import app, syntax

README = Path(__file__).resolve().parents[2] / "README.md"
#: What each placeholder stands for in a real command line.
VALUES = {
    "SLUG": "shell-0a1b2c",
    "ID": "7",
    "HOST": "api.example.com",
    "PATH": ".bottle/agents/local.md",
    "CMD": "true",
    "COMMAND": "ls",
    "…": "x",
    "<name>": "local",
}


def _sh_lines(text: str) -> list[str]:
    """The ``bottle`` lines of the README's sh blocks, comments cut."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            words = " ".join(shlex.split(line, comments=True))
            if words.startswith("bottle "):
                lines.append(line.split(" #", 1)[0].strip())
    return lines


def _inline(text: str) -> list[str]:
    return sorted(set(re.findall(r"`(bottle [^`]*)`", text)))


def _expand(line: str) -> list[list[str]]:
    """Every concrete argv a usage line stands for."""
    choices: list[list[list[str]]] = []
    for part in re.split(r"(\[[^\]]*\])", line):
        if part.startswith("["):
            choices.append([[], shlex.split(part[1:-1])])
        elif part.strip():
            choices.append([shlex.split(part)])
    argvs: list[list[str]] = []
    for combo in itertools.product(*choices):
        words = [w for chunk in combo for w in chunk]
        alternatives = [w.split("|") if "|" in w and w != "|" else [w] for w in words]
        argvs += [[_value(w) for w in pick] for pick in itertools.product(*alternatives)]
    return argvs


def _value(word: str) -> str:
    """``SLUG…`` (one or more) is one slug; ``<name>`` in a path is a name."""
    base = word if word == "…" else word.rstrip("…")
    return VALUES.get(base, base.replace("<name>", VALUES["<name>"]))


def _parse(argv: list[str]) -> list[str]:
    """The command path ``argv`` names; ``--version``/``--help`` end the parse (exit 0)."""
    import typer

    try:
        path, _params = syntax.parse(app.cli(), argv[1:])
    except typer.Exit as done:
        assert done.exit_code == 0
        return ["bottle", "(done)"]
    return path


def test_the_readme_has_the_usage_block() -> None:
    lines = _sh_lines(README.read_text())
    assert len(lines) >= 25
    assert any(line.startswith("bottle run ") and " -- " in line for line in lines)


@pytest.mark.parametrize("line", _sh_lines(README.read_text()))
def test_every_usage_line_parses(line: str) -> None:
    for argv in _expand(line):
        assert len(_parse(argv)) > 1, f"{line!r} names no command"


@pytest.mark.parametrize("span", _inline(README.read_text()))
def test_every_inline_command_parses(span: str) -> None:
    """A span is a whole command line, or just a command's name (`bottle approve`)."""
    argv = [_value(w) for w in shlex.split(span)]
    command = app.cli()
    named = ["bottle"]
    for word in argv[1:]:
        sub = getattr(command, "commands", {}).get(word)
        if sub is None:
            break
        command, named = sub, [*named, word]
    if named == argv:
        assert len(named) > 1
        return
    assert len(_parse(argv)) > 1


def test_the_parser_refuses_a_misplaced_example() -> None:
    """The check has teeth: the old README's `start shell --detach -- x y` style mistakes."""
    from typer._click.exceptions import UsageError

    for wrong in (["run", "prober", "echo", "hi"], ["start", "--detatch", "shell"]):
        with pytest.raises(UsageError):
            syntax.parse(app.cli(), wrong)


def test_options_before_dashes_are_bottles_wherever_they_are() -> None:
    for argv in (
        ["run", "prober", "--bottle", "demo", "--", "echo", "hi"],
        ["run", "--bottle", "demo", "prober", "--", "echo", "hi"],
    ):
        path, params = syntax.parse(app.cli(), argv)
        assert path == ["bottle", "run"]
        assert params["agent"] == "prober" and params["bottle"] == "demo"
        assert params["cmd"] == ["echo", "hi"] and params["prompt"] is None
    _, params = syntax.parse(app.cli(), ["exec", "x", "--", "pytest", "--debug", "--", "-k"])
    assert params["cmd"] == ["pytest", "--debug", "--", "-k"]
    _, params = syntax.parse(app.cli(), ["start", "shell", "--detach"])
    assert params["detach"] is True and params["args"] == []
