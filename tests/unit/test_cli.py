"""The CLI's contract: exit codes, --json shapes, one-paragraph errors and no tracebacks."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest

from tests.conftest import CliResult, run_cli_here, user_owned, write
from tests.fakes import FakeEngine

if TYPE_CHECKING:
    from bottle.state import StateDir


@pytest.fixture
def bottle(monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    """``bottle ARGS`` in this process, with BOTTLE_HOME=home and cwd as given, on the fake
    engine: a render asks the engine which images exist, and a unit test asks no daemon."""
    from bottle import bottle as bottle_module

    monkeypatch.setattr(bottle_module, "DockerEngine", FakeEngine)

    def run(*args: str, home: Path, cwd: Path, **env: str) -> CliResult:
        return run_cli_here(
            *args, cwd=cwd, env={"BOTTLE_HOME": str(home), **env}, monkeypatch=monkeypatch
        )

    return run


def test_render_with_no_files(bottle: Callable[..., CliResult], home: Path, repo: Path) -> None:
    done = bottle("render", home=home, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert "bottle-shell-" in done.stdout and "internal: true" in done.stdout


def test_agents_and_bottles_json(
    bottle: Callable[..., CliResult], examples_home: Path, repo: Path
) -> None:
    write(repo / ".bottle" / "agents" / "local.md", "---\nbottle: demo\n---\nhi\n")
    agents = json.loads(bottle("agents", "--json", home=examples_home, cwd=repo).stdout)
    by_name = {a["name"]: a for a in agents}
    assert by_name["shell"]["origin"] == "builtin"
    assert by_name["reviewer"]["origin"] == "home" and by_name["reviewer"]["bottle"] == "claude"
    assert by_name["local"]["origin"] == "repo"
    bottles = json.loads(bottle("bottles", "--json", home=examples_home, cwd=repo).stdout)
    names = {b["name"]: b for b in bottles}
    assert names["github"]["extends"] == ["claude"]
    assert names["github"]["provider"] == "claude"
    assert names["github"]["routes"] == 4


@pytest.mark.parametrize(
    ("files", "args", "words"),
    [
        (
            {"bottles/x.md": "---\negress: {routes: [{host: 'bad host'}]}\n---\n"},
            ["render", "--bottle", "x"],
            "egress.routes.0.host",
        ),
        ({}, ["render", "ghost"], "unknown agent"),
        ({"agents/a.md": "---\nbottle: nope\n---\n"}, ["render", "a"], "bottle"),
        ({"bottles/a.md": "---\nextends: a\n---\n"}, ["render", "shell", "--bottle", "a"], "cycle"),
    ],
)
def test_bad_input_exits_2_with_message_and_no_traceback(
    bottle: Callable[..., CliResult],
    home: Path,
    repo: Path,
    files: dict[str, str],
    args: list[str],
    words: str,
) -> None:
    for name, text in files.items():
        write(home / name, text)
    done = bottle(*args, home=home, cwd=repo)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error:" in done.stderr and "hint:" in done.stderr
    assert words in done.stderr


def test_repo_bottle_is_refused(bottle: Callable[..., CliResult], home: Path, repo: Path) -> None:
    """Ignored with a warning, never used; the rest of the repository still works."""
    user_owned(repo)  # a root-owned workspace is a warning of its own
    write(repo / ".bottle" / "bottles" / "x.md", "---\n---\n")
    done = bottle("render", home=home, cwd=repo)
    assert done.returncode == 0 and "never bottles: ignored" in done.stderr
    done = bottle("render", "--bottle", "x", home=home, cwd=repo)
    assert done.returncode == 2 and "unknown bottle 'x'" in done.stderr
    (repo / ".bottle" / "bottles" / "x.md").unlink()
    done = bottle("render", home=home, cwd=repo)  # an empty folder is nothing at all
    assert done.returncode == 0 and "warning" not in done.stderr


def test_usage_error_exits_2(bottle: Callable[..., CliResult], home: Path, repo: Path) -> None:
    done = bottle("render", "--no-such-flag", home=home, cwd=repo)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_unknown_instance(bottle: Callable[..., CliResult], home: Path, repo: Path) -> None:
    done = bottle("attach", "nothing-here", home=home, cwd=repo)
    assert done.returncode == 1
    assert "no instance" in done.stderr and "bottle ls" in done.stderr


def test_view_without_textual_says_which_extra_to_install(
    bottle: Callable[..., CliResult], home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "textual", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "bottle_cli.view", raising=False)
    done = bottle("view", home=home, cwd=repo)
    assert done.returncode == 1
    assert "bot-bottle[tui]" in done.stderr and "Traceback" not in done.stderr


def test_a_git_remote_without_a_pinned_host_key_is_refused_before_anything_starts(
    bottle: Callable[..., CliResult], home: Path, repo: Path
) -> None:
    write(
        home / "bottles" / "g.md",
        "---\ngit:\n  remotes: [{name: origin, url: 'git@example.com:x.git', key_ref: K}]\n---\n",
    )
    write(home / "agents" / "g.md", "---\nbottle: g\n---\n")
    for command in (("render", "g"), ("run", "g", "--", "true")):
        done = bottle(*command, home=home, cwd=repo)
        assert done.returncode == 2, command
        assert "g.md: git.remotes[0].host_key" in done.stderr and "ssh-keyscan" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (home / "state").exists() or not list((home / "state").iterdir())


def test_render_shows_the_git_remotes_but_no_credential(
    bottle: Callable[..., CliResult], home: Path, repo: Path
) -> None:
    write(
        home / "bottles" / "g.md",
        "---\ngit:\n  remotes: [{name: origin, url: 'https://example.com/x.git', "
        "token_ref: GIT_TOKEN}]\n---\n",
    )
    write(home / "agents" / "g.md", "---\nbottle: g\n---\n")
    done = bottle("render", "g", home=home, cwd=repo, GIT_TOKEN="s3cr3t-t0ken-value")
    assert done.returncode == 0, done.stderr
    assert "origin=https://example.com/x.git" in done.stdout
    assert "GIT_TOKEN" in done.stdout and "s3cr3t-t0ken-value" not in done.stdout


def test_egress_log_skips_a_bad_line_with_a_warning(
    bottle: Callable[..., CliResult], home: Path, repo: Path
) -> None:
    from bottle.files import now
    from bottle.state import InstanceStatus, Metadata, StateDir

    state = StateDir(home / "state" / "shell-abcde")
    state.create()
    state.write_metadata(
        Metadata(
            slug="shell-abcde",
            agent="shell",
            bottle="default",
            provider="shell",
            cwd="/",
            compose_project="bottle-shell-abcde",
            images={},
            services=["agent"],
            status=InstanceStatus.FINISHED,
            started_at=now(),
            updated_at=now(),
        )
    )
    ok = {"time": "t", "decision": "allow", "method": "GET", "host": "a.test", "path": "/"}
    state.egress_log.parent.mkdir(parents=True, exist_ok=True)
    # a good line, garbage, a JSON non-object, and a last line egress is still writing
    state.egress_log.write_text(json.dumps(ok) + "\n{ torn\n1\n" + '{"time": "t2", "deci')
    done = bottle("egress", "log", "shell-abcde", "--json", home=home, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [ok]
    assert done.stderr.count("not a JSON object") == 3 and "Traceback" not in done.stderr
    plain = bottle("egress", "log", "shell-abcde", home=home, cwd=repo)
    assert plain.returncode == 0 and "allow" in plain.stdout and "a.test/" in plain.stdout


def test_egress_log_reads_the_rotated_files_oldest_first(
    bottle: Callable[..., CliResult], home: Path, repo: Path
) -> None:
    from bottle.files import now
    from bottle.runtime.egress import records
    from bottle.state import InstanceStatus, Metadata, StateDir

    state = StateDir(home / "state" / "shell-abcdg")
    state.create()
    state.write_metadata(
        Metadata(
            slug="shell-abcdg", agent="shell", bottle="default", provider="shell", cwd="/",
            compose_project="bottle-shell-abcdg", images={}, services=["agent"],
            status=InstanceStatus.FINISHED, started_at=now(), updated_at=now(),
        )
    )  # fmt: skip
    state.egress_log.parent.mkdir(parents=True, exist_ok=True)
    files = records.log_files(state.egress_log)
    # .0 (the run's first), .3 (only an older egress kept one), .2, .1, the current one
    assert [p.name.removeprefix("egress.jsonl") for p in files] == [".0", ".3", ".2", ".1", ""]
    for n, path in enumerate(files):
        line = {"time": f"t{n}", "decision": "allow", "method": "GET", "host": f"h{n}.test"}
        path.write_text(json.dumps(line) + "\n")
    done = bottle("egress", "log", "shell-abcdg", "--json", home=home, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert [r["host"] for r in json.loads(done.stdout)] == [f"h{n}.test" for n in range(5)]


def test_following_the_egress_log_goes_on_into_the_next_file(tmp_path: Path) -> None:
    import threading

    from bottle.runtime.egress import records
    from bottle_cli import decisions

    log = tmp_path / "egress.jsonl"

    def line(n: int) -> str:
        return json.dumps({"time": f"t{n}", "decision": "allow", "host": f"h{n}.test"}) + "\n"

    log.write_text(line(0))
    seen: list[str] = []
    first = threading.Event()

    def follow() -> None:  # in a thread: without the rotation it would wait forever
        for record in decisions._log_records(log, follow=True):
            seen.append(record.host)
            first.set()
            if len(seen) == 3:
                return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    assert first.wait(20)
    with log.open("a") as fh:
        fh.write(line(1))
    records.rotate(log)  # what egress does once the file is full
    log.write_text(line(2))
    reader.join(20)
    assert seen == ["h0.test", "h1.test", "h2.test"]


def _take(records: Iterator[Any], n: int) -> list[str]:
    """The hosts of the next ``n`` records, within a bound (a follower that lost a file would
    wait for ever)."""
    import queue
    import threading

    got: queue.Queue[str] = queue.Queue()

    def take() -> None:
        for _ in range(n):
            got.put(next(records).host)

    # A daemon thread: a test that fails must not wait for a follower that never returns.
    threading.Thread(target=take, daemon=True).start()
    try:
        return [got.get(timeout=20) for _ in range(n)]
    except queue.Empty:
        raise AssertionError(f"the follower gave fewer than {n} records") from None


@pytest.mark.parametrize(("first_file", "rotations"), [(False, 2), (True, 2), (True, 3)])
def test_following_the_egress_log_loses_nothing_when_it_rotates_between_looks(
    tmp_path: Path, first_file: bool, rotations: int
) -> None:
    """Egress may rotate more than once between two looks of ``-f`` (a flood fills 16 MiB
    fast): the follower reads the file it was on to its end, then every file after it
    (three rotations: its own file is dropped, and all but ``.0`` came after it)."""
    import contextlib

    from bottle.runtime.egress import records
    from bottle_cli import decisions

    log = tmp_path / "egress.jsonl"

    def line(n: int) -> str:
        return json.dumps({"time": f"t{n}", "decision": "allow", "host": f"h{n}.test"}) + "\n"

    if first_file:  # the run's first file is set aside already: rotations go to .1, .2
        records.first_file(log).write_text(line(-1))
    log.write_text(line(0))
    follow = decisions._log_records(log, follow=True)
    try:
        assert _take(follow, 2 if first_file else 1)[-1] == "h0.test"
        for n in range(1, rotations + 1):
            with log.open("a") as fh:
                fh.write(line(n))
            records.rotate(log)  # what egress does once the file is full
        log.write_text(line(rotations + 1))
        assert _take(follow, rotations + 1) == [f"h{n}.test" for n in range(1, rotations + 2)]
    finally:
        with contextlib.suppress(ValueError):  # still running, in a follower that failed
            follow.close()  # type: ignore[attr-defined]


def test_a_line_past_the_readers_bound_is_skipped_and_the_next_one_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The log is egress's, and a compromised egress writes what it likes: one line of
    many MiB costs the host no more than the bound, and the records after it still show.
    (egress itself clips a record's text, so none of its own lines comes near it.)"""
    from bottle.runtime.egress.records import MAX_TEXT_CHARS, LogRecord
    from bottle_cli import decisions

    log = tmp_path / "egress.jsonl"
    long_path = LogRecord(decision="allow", host="a.test", path="/" + "p" * (4 << 20))
    assert len(long_path.to_line()) < 2 * MAX_TEXT_CHARS  # clipped where it is written
    good = json.dumps({"time": "t", "decision": "allow", "host": "b.test"}) + "\n"
    log.write_text('{"junk": "' + "x" * (3 << 20) + '"}\n' + long_path.to_line() + good)
    shown = [r.host for r in decisions._log_records(log, follow=False)]
    assert shown == ["a.test", "b.test"]
    assert f"more than {decisions.MAX_LINE_CHARS} characters" in capsys.readouterr().err


def test_reading_the_egress_log_while_egress_rotates_it_shows_each_record_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without -f too: a rotation between opening one file and the next would show a file
    twice or skip one; the files are opened again until none moved meanwhile."""
    from bottle import safefs
    from bottle.runtime.egress import records
    from bottle_cli import decisions

    log = tmp_path / "egress.jsonl"

    def line(n: int) -> str:
        return json.dumps({"time": f"t{n}", "decision": "allow", "host": f"h{n}.test"}) + "\n"

    for n, path in enumerate([records.first_file(log), log.with_name("egress.jsonl.1"), log]):
        path.write_text(line(n))
    real_open = safefs.open_read_regular
    rotations = []

    def open_and_rotate(path: Path, *, root: Path | None = None) -> Any:
        handle = real_open(path, root=root)
        if path == log and not rotations:  # egress fills the file just after it was opened
            rotations.append(records.rotate(log))
            log.write_text(line(3))
        return handle

    monkeypatch.setattr(safefs, "open_read_regular", open_and_rotate)
    shown = [r.host for r in decisions._log_records(log, follow=False)]
    assert rotations and shown == [f"h{n}.test" for n in range(4)]


class _RecordingInstance:
    """Stands in for a running instance: the CLI's argument handling is what is tested."""

    def __init__(self) -> None:
        self.argv: list[str] = []

    def exec(self, argv: list[str], *, tty: bool, service: str, record: bool = False) -> Any:
        self.argv = list(argv)
        return SimpleNamespace(exit_code=7)

    def health(self) -> dict[str, str]:
        return {"agent": "running"}


def test_debug_is_global_and_leaves_the_commands_own_debug_alone(
    bottle: Callable[..., CliResult], home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = _RecordingInstance()
    monkeypatch.setattr("bottle_cli.app._open", lambda slug: target)
    done = bottle("--debug", "exec", "x", "--", "pytest", "--debug", "-k", "a", home=home, cwd=repo)
    assert done.returncode == 7, done.stderr
    assert target.argv == ["pytest", "--debug", "-k", "a"]


def _broken(exc: BaseException) -> Callable[[str], Any]:
    def open_instance(slug: str) -> Any:
        raise exc

    return open_instance


@pytest.mark.parametrize("how", ["flag", "env"])
def test_debug_shows_an_internal_errors_traceback(
    bottle: Callable[..., CliResult],
    home: Path,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    monkeypatch.setattr("bottle_cli.app._open", _broken(RuntimeError("boom")))
    plain = bottle("attach", "x", home=home, cwd=repo)
    assert plain.returncode == 1
    assert "internal error (RuntimeError: boom)" in plain.stderr
    assert "Traceback" not in plain.stderr and "--debug" in plain.stderr
    args, env = (["--debug"], {}) if how == "flag" else ([], {"BOTTLE_DEBUG": "1"})
    debug = bottle(*args, "attach", "x", home=home, cwd=repo, **env)
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr and "RuntimeError: boom" in debug.stderr


def test_debug_shows_the_cause_of_a_failure(
    bottle: Callable[..., CliResult], home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle.errors import StateError

    def damaged(slug: str) -> Any:
        try:
            raise PermissionError(13, "Permission denied", "/state/x/metadata.json")
        except OSError as exc:
            raise StateError("cannot read x", hint="Check the state directory.") from exc

    monkeypatch.setattr("bottle_cli.app._open", damaged)
    plain = bottle("attach", "x", home=home, cwd=repo)
    assert plain.returncode == 1 and "error: cannot read x" in plain.stderr
    assert "hint: Check the state directory." in plain.stderr
    assert "PermissionError" not in plain.stderr
    debug = bottle("--debug", "attach", "x", home=home, cwd=repo)
    assert debug.returncode == 1 and "caused by:" in debug.stderr
    assert "PermissionError: [Errno 13] Permission denied" in debug.stderr


def test_ctrl_c_exits_130_without_a_traceback(
    bottle: Callable[..., CliResult], home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("bottle_cli.app._open", _broken(KeyboardInterrupt()))
    done = bottle("attach", "x", home=home, cwd=repo)
    assert done.returncode == 130 and "Traceback" not in done.stderr


def test_settings_are_read_once_per_run(
    bottle: Callable[..., CliResult],
    examples_home: Path,
    repo: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bottle.settings import Settings

    calls: list[object] = []
    real = Settings.from_env.__func__  # type: ignore[attr-defined]

    def counting(cls: type[Settings], environ: Any = None) -> Settings:
        calls.append(environ)
        return real(cls, environ)  # type: ignore[no-any-return]

    monkeypatch.setattr(Settings, "from_env", classmethod(counting))
    done = bottle("render", "reviewer", home=examples_home, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert len(calls) == 1


def _stopped(home: Path) -> StateDir:
    from bottle.files import now
    from bottle.state import InstanceStatus, Metadata, StateDir

    state = StateDir(home / "state" / "shell-fghij")
    state.create()
    state.write_metadata(
        Metadata(
            slug="shell-fghij",
            agent="shell",
            bottle="default",
            provider="shell",
            cwd="/",
            compose_project="bottle-shell-fghij",
            images={},
            services=["agent"],
            status=InstanceStatus.STOPPED,
            started_at=now(),
            updated_at=now(),
        )
    )
    return state


def test_logs_of_a_stopped_instance_come_from_its_saved_log(
    bottle: Callable[..., CliResult], home: Path, repo: Path
) -> None:
    state = _stopped(home)
    state.compose_log.write_bytes(b"agent-1 | hello \xff\n")
    done = bottle("logs", "shell-fghij", home=home, cwd=repo)
    assert done.returncode == 0 and "agent-1 | hello \ufffd" in done.stdout
    state.compose_log.unlink()
    state.compose_log.mkdir()  # unreadable: a failure with a message, not a traceback
    broken = bottle("logs", "shell-fghij", home=home, cwd=repo)
    assert broken.returncode == 1 and "cannot read the saved log" in broken.stderr
    assert "Traceback" not in broken.stderr


HOSTILE = "GET /\x1b[2K\x1b[1A\r\x1b]0;owned\x07\u202eevil\x9b2J"


def test_agent_text_reaches_the_terminal_inert(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle_cli import output

    monkeypatch.setattr(output, "out", output.Console(highlight=False, soft_wrap=True))
    monkeypatch.setattr(output, "err", output.Console(stderr=True, highlight=False))
    output.table(["what"], [[HOSTILE]])
    output.line(HOSTILE)
    output.block(HOSTILE + "\nsecond line\n")
    output.error(HOSTILE, hint=HOSTILE)
    output.warn(HOSTILE)
    output.progress(HOSTILE)
    output.print_json({"justification": HOSTILE})
    seen = capsys.readouterr()
    for stream in (seen.out, seen.err):
        assert not any(c in stream for c in "\x1b\x07\r\x9b\u202e"), repr(stream)
    assert "\\x1b[2K" in seen.out and "\\u202e" in seen.out and "second line" in seen.out
    assert "\\x1b]0;owned\\x07" in seen.err
    assert '"GET /\\u001b[2K' in seen.out  # --json: the encoder escapes every control


def test_the_egress_log_shows_a_hostile_path_inert(
    bottle: Callable[..., CliResult], home: Path, repo: Path
) -> None:
    from bottle.files import now
    from bottle.state import InstanceStatus, Metadata, StateDir

    state = StateDir(home / "state" / "shell-abcdf")
    state.create()
    state.write_metadata(
        Metadata(
            slug="shell-abcdf",
            agent="shell",
            bottle="default",
            provider="shell",
            cwd="/",
            compose_project="bottle-shell-abcdf",
            images={},
            services=["agent"],
            status=InstanceStatus.FINISHED,
            started_at=now(),
            updated_at=now(),
        )
    )
    record = {"time": "t", "decision": "refuse", "method": "GET", "host": "a.test", "path": HOSTILE}
    state.egress_log.parent.mkdir(parents=True, exist_ok=True)
    state.egress_log.write_text(json.dumps(record) + "\n")
    done = bottle("egress", "log", "shell-abcdf", home=home, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout and "\\x1b[2K" in done.stdout


def test_followed_logs_reach_the_caller_line_by_line_and_the_cli_shows_them_inert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by review: ``logs --follow`` once handed container bytes to the terminal raw."""
    from bottle.engine.compose import ComposeProject

    project = ComposeProject(
        compose_file=tmp_path / "docker-compose.yml", project="p", project_dir=tmp_path
    )
    # Stands in for `docker compose`: the real argv is appended and ignored by sh.
    fake = ["sh", "-c", r"printf 'one\033[2J\n\033]52;c;ZWNobw==\007two\n'", "sh"]
    monkeypatch.setattr(ComposeProject, "_cmd", lambda self: fake)
    seen: list[str] = []
    assert project.follow_logs(on_line=seen.append) == 0
    assert seen == ["one\x1b[2J", "\x1b]52;c;ZWNobw==\x07two"]
    import inspect

    from bottle_cli import app

    assert "on_line=output.line" in inspect.getsource(app)
