"""The command line as docker and gh users expect it: where options go, help, completion."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bottle_cli.app import cli
from tests.conftest import CliResult, run_cli_here


@pytest.fixture
def bottle(monkeypatch: pytest.MonkeyPatch, home: Path, repo: Path) -> Callable[..., CliResult]:
    def run(*args: str, **env: str) -> CliResult:
        return run_cli_here(
            *args, cwd=repo, env={"BOTTLE_HOME": str(home), **env}, monkeypatch=monkeypatch
        )

    return run


@pytest.fixture
def no_start(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, Any]]:
    """What would have been started: the library's start doors, recorded and not run."""
    from bottle import session

    seen: list[tuple[str, Any]] = []

    def headless(target: Any, argv: list[str], **_: Any) -> int:
        seen.append((target.plan().bottle, argv))
        return 0

    def attached(target: Any, **_: Any) -> int:
        seen.append((target.plan().bottle, list(target.plan().agent_args)))
        return 0

    monkeypatch.setattr(session, "headless_run", headless)
    monkeypatch.setattr(session, "attached_session", attached)
    return seen


DEMO = "---\nextends: [default]\ndescription: demo\n---\n"
PROBER = "---\nbottle: default\n---\nprobe\n"


# -- options and `--` ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["run", "prober", "--bottle", "demo", "--", "echo", "hi"],
        ["run", "--bottle", "demo", "prober", "--", "echo", "hi"],
        ["run", "-b", "demo", "prober", "--", "echo", "hi"],
    ],
)
def test_bottles_options_anywhere_before_dashes_choose_the_bottle(
    bottle: Callable[..., CliResult],
    home: Path,
    no_start: list[tuple[str, Any]],
    argv: list[str],
) -> None:
    (home / "bottles").mkdir()
    (home / "bottles" / "demo.md").write_text(DEMO)
    (home / "agents").mkdir()
    (home / "agents" / "prober.md").write_text(PROBER)
    done = bottle(*argv)
    assert done.returncode == 0, done.stderr
    assert no_start == [("demo", ["echo", "hi"])]


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["run", "shell", "--bogus", "--", "echo"], "no such option: --bogus"),
        (["run", "shell", "echo", "hi"], "unexpected argument 'echo' before --"),
        (["start", "shell", "--detach", "--nope"], "no such option: --nope"),
        (["start", "shell", "bash"], "unexpected argument 'bash' before --"),
        (["exec", "abc", "pytest", "-k", "x"], "no such option: -k"),
        (["exec", "abc", "pytest"], "unexpected argument 'pytest' before --"),
    ],
)
def test_an_unknown_word_before_dashes_is_an_error_and_starts_nothing(
    bottle: Callable[..., CliResult],
    no_start: list[tuple[str, Any]],
    argv: list[str],
    words: str,
) -> None:
    done = bottle(*argv)
    assert done.returncode == 2
    assert f"error: {words}" in done.stderr
    assert "hint: Bottle's options go anywhere before --" in done.stderr
    assert "Usage:" not in done.stderr and "Traceback" not in done.stderr
    assert no_start == []


def test_words_after_dashes_are_the_agents_even_bottles_options(
    bottle: Callable[..., CliResult], no_start: list[tuple[str, Any]]
) -> None:
    done = bottle("start", "shell", "--", "--bottle", "x", "--", "--debug")
    assert done.returncode == 0, done.stderr
    assert no_start == [("default", ["--bottle", "x", "--", "--debug"])]


def test_run_without_a_command_says_where_it_goes(
    bottle: Callable[..., CliResult], no_start: list[tuple[str, Any]]
) -> None:
    done = bottle("run", "shell")
    assert done.returncode == 2 and "after --" in done.stderr and no_start == []


# -- help, version, completion ---------------------------------------------------------------


def _commands(command: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, [*path, name])


ALL = list(_commands(cli(), []))


def test_every_command_is_in_the_walk() -> None:
    names = {" ".join(path) for path, _ in ALL}
    assert {"", "run", "exec", "ls", "completion", "egress log", "audit verify"} <= names
    assert len(ALL) >= 28


@pytest.mark.parametrize(("path", "command"), ALL, ids=[" ".join(p) or "bottle" for p, _ in ALL])
def test_every_help_page_fits_80_columns_and_has_its_summary(
    bottle: Callable[..., CliResult], path: list[str], command: Any
) -> None:
    done = bottle(*path, "--help", COLUMNS="80")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"Usage: {' '.join(['bottle', *path])} ")
    wide = [line for line in lines if len(line) > 80]
    assert wide == []
    summary = (command.help or "").split("\n\n")[0].split(". ")[0].strip().rstrip(".")
    assert summary and summary.split()[0] in done.stdout
    # Python types never show: AGENT, not `{agent} <str>`.
    assert "<str>" not in done.stdout and "{" not in lines[0] and "<list" not in done.stdout
    for name, sub in getattr(command, "commands", {}).items():
        row = next(line for line in lines if line.strip().startswith(name + " "))
        assert not row.endswith("..."), f"the summary of {name!r} is cut: {row!r}"
        assert sub.help.split("\n")[0].strip().rstrip(".") in row


def test_run_help_names_arguments_and_says_the_rule(bottle: Callable[..., CliResult]) -> None:
    out = bottle("run", "--help", COLUMNS="80").stdout
    assert "Usage: bottle run [OPTIONS] AGENT -- [CMD]..." in out
    assert "-b, --bottle NAME" in out
    assert "every word after -- is the agent's" in out
    top = " ".join(bottle("--help", COLUMNS="80").stdout.split())
    assert "start, run, exec: Bottle's options go anywhere before --; every word after" in top
    # --debug is a global option the user can find, not a hidden one.
    assert "--debug" in top and "--version" in top


def test_version(bottle: Callable[..., CliResult]) -> None:
    from importlib.metadata import version

    done = bottle("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"bottle {version('bot-bottle')}"


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_a_script_for_the_shell(
    bottle: Callable[..., CliResult], shell: str
) -> None:
    done = bottle("completion", shell)
    assert done.returncode == 0, done.stderr
    assert "_BOTTLE_COMPLETE" in done.stdout and "bottle" in done.stdout


def test_completion_answers_the_shell(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    """What the bash script does: ask ``bottle`` with the words typed so far."""
    from bottle_cli.app import main

    for words, cword, expected in (
        ("bottle st", "1", {"start", "stop"}),
        ("bottle run x --b", "3", {"--bottle"}),
    ):
        monkeypatch.setenv("_BOTTLE_COMPLETE", "complete_bash")
        monkeypatch.setenv("COMP_WORDS", words)
        monkeypatch.setenv("COMP_CWORD", cword)
        with pytest.raises(SystemExit) as done:
            main([])
        assert done.value.code == 0
        assert set(capsys.readouterr().out.split()) == expected


def test_an_unknown_shell_is_refused(bottle: Callable[..., CliResult]) -> None:
    done = bottle("completion", "tcsh")
    assert done.returncode == 2 and "tcsh" in done.stderr


def test_resume_refuses_a_prompt_with_detach(bottle: Callable[..., CliResult]) -> None:
    # --detach leaves the agent idle: the prompt was silently dropped.
    done = bottle("resume", "shell-abcde", "--prompt", "go on", "--detach")
    assert done.returncode == 2, done.stderr
    assert "--prompt" in done.stderr and "--detach" in done.stderr
    assert "no instance" not in done.stderr  # refused before any instance is looked up


@pytest.mark.parametrize("command", [["run", "shell"], ["resume", "shell-abcde"]])
def test_an_empty_prompt_is_refused_before_anything_starts(
    bottle: Callable[..., CliResult], command: list[str]
) -> None:
    done = bottle(*command, "--prompt", "  ")
    assert done.returncode == 2, done.stderr
    assert "the task is empty" in done.stderr
