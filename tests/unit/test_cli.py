"""The CLI's contract: exit codes, --json shapes, one-paragraph errors and no tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import run_cli, write


def bottle(*args: str, home: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, env={"BOTTLE_HOME": str(home), **env}, timeout=60)


def test_render_with_no_files(home: Path, repo: Path) -> None:
    done = bottle("render", home=home, cwd=repo)
    assert done.returncode == 0, done.stderr
    assert "bottle-shell-" in done.stdout and "internal: true" in done.stdout


def test_agents_and_bottles_json(examples_home: Path, repo: Path) -> None:
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
        ({"bottles/x.md": "---\negress: {routes: [{host: 'bad host'}]}\n---\n"}, ["bottles"], "egress.routes.0.host"),
        ({}, ["render", "ghost"], "unknown agent"),
        ({"agents/a.md": "---\nbottle: nope\n---\n"}, ["agents"], "bottle"),
        ({"bottles/a.md": "---\nextends: a\n---\n"}, ["render", "shell", "--bottle", "a"], "cycle"),
    ],
)
def test_bad_input_exits_2_with_message_and_no_traceback(
    home: Path, repo: Path, files: dict[str, str], args: list[str], words: str
) -> None:
    for name, text in files.items():
        write(home / name, text)
    done = bottle(*args, home=home, cwd=repo)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error:" in done.stderr and "hint:" in done.stderr
    assert words in done.stderr


def test_repo_bottle_is_refused(home: Path, repo: Path) -> None:
    write(repo / ".bottle" / "bottles" / "x.md", "---\n---\n")
    done = bottle("render", home=home, cwd=repo)
    assert done.returncode == 2 and "never bottles" in done.stderr


def test_usage_error_exits_2(home: Path, repo: Path) -> None:
    done = bottle("render", "--no-such-flag", home=home, cwd=repo)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_unknown_instance(home: Path, repo: Path) -> None:
    done = bottle("attach", "nothing-here", home=home, cwd=repo)
    assert done.returncode == 1
    assert "no instance" in done.stderr and "bottle ls" in done.stderr


def test_help_does_not_import_the_library() -> None:
    code = (
        "import sys; from bottle_cli import app; "
        "heavy = [m for m in ('python_on_whales', 'pydantic', 'ruamel.yaml') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_view_without_textual_says_which_extra_to_install(home: Path, repo: Path) -> None:
    code = (
        "import sys; sys.modules['textual'] = None; "  # as if the extra were not installed
        "from bottle_cli.app import main; main(['view'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=False,
        env={**os.environ, "BOTTLE_HOME": str(home)},
    )
    assert done.returncode == 1
    assert "bot-bottle[tui]" in done.stderr and "Traceback" not in done.stderr


def test_a_git_remote_without_a_pinned_host_key_is_refused_before_anything_starts(
    home: Path, repo: Path
) -> None:
    write(home / "bottles" / "g.md",
          "---\ngit:\n  remotes: [{name: origin, url: 'git@example.com:x.git', key_ref: K}]\n---\n")
    write(home / "agents" / "g.md", "---\nbottle: g\n---\n")
    for command in (("render", "g"), ("run", "g", "--", "true")):
        done = bottle(*command, home=home, cwd=repo)
        assert done.returncode == 2, command
        assert "g.md: git.remotes[0].host_key" in done.stderr and "ssh-keyscan" in done.stderr
        assert "Traceback" not in done.stderr
    assert not (home / "state").exists() or not list((home / "state").iterdir())


def test_render_shows_the_git_remotes_but_no_credential(home: Path, repo: Path) -> None:
    write(home / "bottles" / "g.md",
          "---\ngit:\n  remotes: [{name: origin, url: 'https://example.com/x.git', "
          "token_ref: GIT_TOKEN}]\n---\n")
    write(home / "agents" / "g.md", "---\nbottle: g\n---\n")
    done = bottle("render", "g", home=home, cwd=repo, GIT_TOKEN="s3cr3t-t0ken-value")
    assert done.returncode == 0, done.stderr
    assert "origin=https://example.com/x.git" in done.stdout
    assert "GIT_TOKEN" in done.stdout and "s3cr3t-t0ken-value" not in done.stdout


def test_egress_log_skips_a_bad_line_with_a_warning(home: Path, repo: Path) -> None:
    from bottle.state import InstanceStatus, Metadata, StateDir, now

    state = StateDir(home / "state" / "shell-abcde")
    state.create()
    state.write_metadata(Metadata(
        slug="shell-abcde", agent="shell", bottle="default", provider="shell", cwd="/",
        compose_project="bottle-shell-abcde", images={}, services=["agent"],
        status=InstanceStatus.FINISHED, started_at=now(), updated_at=now(),
    ))
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
