"""``bottle exec``'s quick path: the entry point's ``main``, a ``docker`` that records its argv.

The quick path runs the docker CLI itself (no ``Engine`` seam), so these tests put a
``docker`` on PATH that writes down how it was called. Whatever the quick path does not
run must reach the full command and read exactly as it did before. ``main`` runs in this
process (an interpreter per call cost half a second of CPU each);
tests/process/test_entry_point.py runs the console script's module as a new process, as a
user does.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bottle.state import InstanceStatus, StateDir
from tests.conftest import fake_docker_in, user_owned, write
from tests.unit.test_lifecycle import make_state

FAKE_DOCKER = """#!/bin/sh
if [ "$1" = ps ]; then
  # The look a failed exec takes: each service of the project, in ``$DOCKER_PS_STATE``.
  for arg; do
    case "$arg" in label=com.docker.compose.project=*) project="${arg#*project=}" ;; esac
  done
  for service in agent egress; do
    printf 'id-%s\\t%s\\tUp\\t%s\\t%s\\t\\t\\t%s-%s-1\\n' \\
      "$service" "${DOCKER_PS_STATE:-running}" "$project" "$service" "$project" "$service"
  done
  exit 0
fi
printf '%s\\n' "$@" > "$DOCKER_ARGV_LOG"
exit "${DOCKER_EXIT:-0}"
"""

Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def calls(tmp_path: Path) -> Path:
    return tmp_path / "docker-argv"


@pytest.fixture
def fake_docker(tmp_path: Path) -> Path:
    """A directory holding the ``docker`` that records its argv."""
    return fake_docker_in(tmp_path / "bin", FAKE_DOCKER).parent


@pytest.fixture
def bottle(
    home: Path,
    calls: Path,
    fake_docker: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> Run:
    """``bottle_cli.quick.main(ARGS)`` (what the console script calls) in this process, with
    the environment the process would have; its exit code and what it wrote to fd 1 and 2."""
    from bottle_cli import quick

    def run(*args: str, path: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        with monkeypatch.context() as patch:
            patch.setenv("BOTTLE_HOME", str(home))
            patch.setenv("DOCKER_ARGV_LOG", str(calls))
            patch.setenv(
                "PATH",
                path if path is not None else f"{fake_docker}{os.pathsep}{os.environ['PATH']}",
            )
            for name, value in env.items():
                patch.setenv(name, value)
            capfd.readouterr()
            code = quick.main(list(args))
            out, err = capfd.readouterr()
        return subprocess.CompletedProcess(list(args), code, out, err)

    return run


@pytest.fixture
def running(home: Path) -> StateDir:
    return make_state(home, "shell-run111", InstanceStatus.RUNNING, pid=os.getpid())


def _log(state: StateDir) -> list[str]:
    return state.exec_log.read_text().splitlines()


@pytest.mark.parametrize(
    "words",
    [
        ["--service", "egress", "shell-run111"],
        ["shell-run111", "--service", "egress"],
        ["--service=egress", "shell-run111"],
    ],
)
def test_exec_in_another_service(
    bottle: Run, running: StateDir, calls: Path, words: list[str]
) -> None:
    done = bottle("exec", *words, "--", "true", "--service", "x")
    assert done.returncode == 0, done.stderr
    assert calls.read_text().splitlines()[2:] == [
        "bottle-shell-run111-egress-1",
        "true",
        "--service",
        "x",
    ]
    assert _log(running)[0].endswith("[egress] $ true --service x")


def test_a_spoiled_log_is_warned_about_and_the_command_runs(
    bottle: Run, running: StateDir, calls: Path
) -> None:
    running.exec_log.symlink_to("/etc/passwd")
    done = bottle("exec", "shell-run111", "--", "true")
    assert done.returncode == 0
    assert "warning: not written to" in done.stderr
    assert calls.exists() and running.exec_log.is_symlink()


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["exec", "shell-stop1", "--", "true"], 1, "instance shell-stop1 is stopped"),
        (["exec", "shell-nope", "--", "true"], 1, "no instance 'shell-nope'"),
        (["exec", "shell-", "--", "true"], 1, "matches several instances"),
        (["exec", "../state/shell-run111", "--", "true"], 2, "is not an instance slug"),
        (["exec", "shell-run111", "true"], 2, "unexpected argument 'true' before --"),
        (["exec", "shell-run111", "--"], 2, "give the command to run after --"),
        (["exec", "shell-run111", "extra", "--", "true"], 2, "unexpected"),
        (["exec", "--tty", "shell-run111", "--", "true"], 2, "no such option"),
    ],
)
def test_what_the_quick_path_does_not_run_reads_as_before(
    bottle: Run,
    home: Path,
    running: StateDir,
    calls: Path,
    args: list[str],
    code: int,
    said: str,
) -> None:
    make_state(home, "shell-stop1", InstanceStatus.STOPPED)
    done = bottle(*args)
    assert done.returncode == code, done.stderr
    assert said in done.stderr.lower() or said in done.stderr
    assert "Traceback" not in done.stderr
    assert "hint:" in done.stderr
    assert not calls.exists()
    assert not running.exec_log.exists()


def test_a_service_word_never_becomes_a_docker_option(
    bottle: Run, running: StateDir, calls: Path
) -> None:
    """Left to the full command (not a plain name), and even there only a container name."""
    done = bottle("exec", "--service", "--privileged", "shell-run111", "--", "true")
    assert done.returncode == 0, done.stderr
    argv = calls.read_text().splitlines()
    assert argv[:3] == ["exec", "--interactive", "bottle-shell-run111---privileged-1"]
    assert "--privileged" not in argv


def test_damaged_metadata_goes_to_the_full_command(
    bottle: Run, running: StateDir, calls: Path
) -> None:
    running.metadata_file.write_text(json.dumps({"status": "running"}))
    done = bottle("exec", "shell-run111", "--", "true")
    assert done.returncode == 1
    assert "is not valid metadata" in done.stderr and "hint:" in done.stderr
    assert not calls.exists()


def test_no_docker_is_an_error_with_a_hint(bottle: Run, running: StateDir, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    done = bottle("exec", "shell-run111", "--", "true", path=str(empty))
    assert done.returncode != 0
    assert "docker command is not installed" in done.stderr and "hint:" in done.stderr
    assert "Traceback" not in done.stderr
    assert _log(running)[1].endswith("exit interrupted")


def test_a_failed_exec_in_a_stopped_service_names_resume(bottle: Run, running: StateDir) -> None:
    # docker's own "service is not running" names no fix: the full command's look, here too.
    done = bottle("exec", "shell-run111", "--", "true", DOCKER_EXIT="1", DOCKER_PS_STATE="exited")
    assert done.returncode == 1, done.stderr  # StateError, as the full command exits
    assert "agent of shell-run111 is not running (its container is exited)" in done.stderr
    assert "bottle resume shell-run111" in done.stderr
    # Running containers: the command's own failure is its exit code, nothing added.
    done = bottle("exec", "shell-run111", "--", "false", DOCKER_EXIT="1")
    assert done.returncode == 1 and done.stderr == ""


def test_ctrl_c_is_recorded_and_exits_130(
    running: StateDir, home: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from bottle.engine.compose import ComposeProject
    from bottle_cli import quick

    def interrupted(self: ComposeProject, *_a: Any, **_k: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(ComposeProject, "exec", interrupted)
    assert quick.main(["exec", "shell-run111", "--", "sleep", "9"]) == quick.INTERRUPTED
    assert capsys.readouterr().err == "interrupted\n"
    assert _log(running)[1].endswith("[agent] exit interrupted")


def test_the_quick_path_agrees_with_the_full_command() -> None:
    from bottle_cli import app, quick

    assert quick.INTERRUPTED == app.INTERRUPTED
    assert quick._COMPLETE_VAR == app.COMPLETE_VAR


@pytest.mark.parametrize("shape", [[], ["--json"], ["-q"], ["--quiet"]])
def test_quick_ls_prints_what_the_full_command_prints(
    home: Path,
    running: StateDir,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    tmp_path: Path,
    shape: list[str],
) -> None:
    from bottle_cli import app, quick

    make_state(home, "shell-stop1", InstanceStatus.STOPPED)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("COLUMNS", "200")
    assert quick.quick_ls(shape) == 0
    ours = capsys.readouterr().out
    assert app.main(["ls", *shape]) == 0
    assert ours == capsys.readouterr().out
    assert "shell-stop1" in ours and "shell-run111" in ours


@pytest.mark.parametrize("words", [["--json", "-q"], ["-x"], ["shell"], ["--help"]])
def test_other_ls_words_go_to_the_full_command(words: list[str]) -> None:
    from bottle_cli import quick

    assert quick.quick_ls(words) is None


def test_quick_stop_stops_each_and_says_what_the_full_command_says(
    bottle: Run,
    home: Path,
    running: StateDir,
    calls: Path,
    fake_docker: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: Any,
) -> None:
    from bottle_cli import app

    other = make_state(home, "shell-run222", InstanceStatus.RUNNING, pid=os.getpid())
    third = make_state(home, "shell-run333", InstanceStatus.RUNNING, pid=os.getpid())
    done = bottle("stop", "shell-run111", "shell-run2")  # a prefix, as the full command takes
    assert done.returncode == 0, done.stderr
    for state in (running, other):
        assert state.read_metadata().status == InstanceStatus.STOPPED
        assert state.compose_log.exists()  # the fake's ps lists containers: their logs
    said = [line for line in done.stderr.splitlines() if not line.startswith("warning:")]
    assert said == [
        f"· stopped {state.path.name}; its state is in {state.path}" for state in (running, other)
    ]
    monkeypatch.setenv("COLUMNS", "200")
    # The full command under the same fake docker: a unit test needs no engine.
    monkeypatch.setenv("BOTTLE_HOME", str(home))
    monkeypatch.setenv("DOCKER_ARGV_LOG", str(calls))
    monkeypatch.setenv("PATH", f"{fake_docker}{os.pathsep}{os.environ['PATH']}")
    assert app.main(["stop", "shell-run333"]) == 0
    full = [line for line in capfd.readouterr().err.splitlines() if line.startswith("·")]
    assert full == [f"· stopped shell-run333; its state is in {third.path}"]


@pytest.mark.parametrize(
    "words",
    [[], ["--all"], ["shell-nope1"], ["shell-run111", "--all"], ["../etc"], ["shell-run111", "x"]],
)
def test_other_stop_words_go_to_the_full_command(
    home: Path, running: StateDir, words: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle_cli import quick

    monkeypatch.setenv("BOTTLE_HOME", str(home))
    assert quick.quick_stop(words) is None
    assert running.read_metadata().status == InstanceStatus.RUNNING


@pytest.mark.parametrize(
    "words",
    [
        [],
        ["shell"],
        ["shell", "--"],
        ["shell", "extra", "--", "true"],
        ["--bottle", "b", "shell", "--", "true"],
        ["shell", "--prompt", "x"],
        ["--help"],
    ],
)
def test_other_run_words_go_to_the_full_command(words: list[str]) -> None:
    from bottle_cli import quick

    assert quick.quick_run(words) is None


def test_quick_run_runs_what_the_full_command_runs(
    home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The same bottle, the same command in the agent, the same progress and question
    doors; its exit code is the run's."""
    import bottle.session
    from bottle_cli import app, output, quick

    seen: list[tuple[str, list[str], object]] = []

    def headless_run(target: Any, argv: list[str], *, progress: Any, ask: Any) -> int:
        assert progress is output.progress and callable(ask)
        seen.append((target.plan().agent, list(argv), target.settings.home))
        return 7

    monkeypatch.setattr(bottle.session, "headless_run", headless_run)
    monkeypatch.chdir(user_owned(repo))
    assert quick.main(["run", "shell", "--", "echo", "a b"]) == 7
    assert app.main(["run", "shell", "--", "echo", "a b"]) == 7
    assert seen[0] == seen[1] == ("shell", ["echo", "a b"], home)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    ("bottle_text", "agent", "said"),
    [
        (None, "nope", "unknown agent 'nope'"),
        (
            "---\ngit:\n  remotes: [{name: origin, url: 'git@example.com:x.git', key_ref: K}]\n---\n",
            "g",
            "g.md: git.remotes[0].host_key",
        ),
    ],
)
def test_a_refused_quick_run_reads_as_the_full_command(
    home: Path,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
    bottle_text: str | None,
    agent: str,
    said: str,
) -> None:
    from bottle_cli import app, quick

    if bottle_text is not None:
        write(home / "bottles" / f"{agent}.md", bottle_text)
        write(home / "agents" / f"{agent}.md", f"---\nbottle: {agent}\n---\n")
    monkeypatch.chdir(user_owned(repo))
    monkeypatch.setenv("COLUMNS", "200")
    code = quick.main(["run", agent, "--", "true"])
    ours = capsys.readouterr()
    assert app.main(["run", agent, "--", "true"]) == code
    full = capsys.readouterr()
    assert code == 2 and (ours.out, ours.err) == (full.out, full.err)
    assert said in ours.err and "hint:" in ours.err and "Traceback" not in ours.err
    assert not (home / "state").exists() or not list((home / "state").iterdir())
