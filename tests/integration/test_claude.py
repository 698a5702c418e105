"""Claude Code in a bottle, the real CLI against the fake API under ``api.anthropic.com``.

One home (the shipped examples: the ``reviewer`` agent in the ``claude`` bottle), one fake
API for the module (tests/integration/fakeapi.py): it joins each bottle's egress network as
compose creates it, so ``bottle run`` from the CLI takes exactly the production path, TLS
through egress included. The conversations are scripted turns keyed by a word of the
prompt; a turn can run a tool, so the agent's own shell tells what it sees.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EXAMPLES, wait_for, write
from tests.integration.conftest import UPSTREAM_HOST, WORKSPACE_OWNER, _leftovers, cli
from tests.integration.fakeapi import ANTHROPIC, FakeAPI

pytestmark = pytest.mark.docker

REAL_KEY = "sk-ant-api03-" + "r3alK3y9" * 8  # only ever on the host and at the fake
PLACEHOLDER = "bottle-egress-injects-this"
#: Every variable Claude Code takes a credential from.
CREDENTIALS = "ANTHROPIC_API_KEY|ANTHROPIC_AUTH_TOKEN|CLAUDE_CODE_OAUTH_TOKEN"

SCRIPT: dict[str, Any] = {
    "anthropic": {
        "default": "ok",
        "conversations": [
            {
                "match": "HELLO",
                "turns": [
                    {"tool": "Bash", "input": {"command": "printenv ANTHROPIC_API_KEY"}},
                    {"text": "hi from the fake"},
                ],
            },
            {
                "match": "RECOVER",
                "turns": [
                    {
                        "tool": "Bash",
                        "input": {
                            "command": f"curl -sS -w ' %{{http_code}}' https://{UPSTREAM_HOST}/needed"
                        },
                    },
                    {
                        "tool": "mcp__supervise__egress-block",
                        "input": {
                            "host": UPSTREAM_HOST,
                            "paths": ["/needed"],
                            "justification": "the task needs it",
                        },
                    },
                    {
                        "tool": "Bash",
                        "input": {
                            "command": f"curl -sS -w ' %{{http_code}}' https://{UPSTREAM_HOST}/needed"
                        },
                    },
                    {"text": "recovered"},
                ],
            },
            {
                "match": "TOKEN-FORM",
                "turns": [
                    {
                        "tool": "Bash",
                        "input": {"command": f"env | grep -E '^({CREDENTIALS})=' | sort"},
                    },
                    {"text": "the token form works"},
                ],
            },
            {
                "match": "REMEMBER",
                "turns": [{"text": "noted: blue"}, {"text": "it was blue"}],
            },
        ],
    }
}


def _bottle_for_the_fake(shipped: str) -> str:
    """The shipped ``claude`` bottle, its routes marked private (the fake is a container on
    the bottle's network), plus a private marker for the recovery flow's host: whether a
    host may be private is the operator's call, never part of the agent's request."""
    text = shipped.replace(
        "    - host: api.anthropic.com\n",
        "    - host: api.anthropic.com\n      private: true\n",
    )
    marker = f"    - {{host: {UPSTREAM_HOST}, paths: [/never/], private: true}}"
    # The routes are the last key of the front matter: the marker ends their list.
    front, _, body = text.removeprefix("---\n").partition("\n---\n")
    return f"---\n{front}\n{marker}\n---\n{body}"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("claude-home")
    shutil.copytree(EXAMPLES / "bottles", home / "bottles")
    shutil.copytree(EXAMPLES / "agents", home / "agents")
    shipped = (EXAMPLES / "bottles" / "claude.md").read_text()
    write(home / "bottles" / "claude.md", _bottle_for_the_fake(shipped))
    yield home
    leftovers = _leftovers(home)
    assert leftovers is None, f"containers/networks left behind: {leftovers}"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("claude-work")
    if os.getuid() == 0:  # the agent runs as the workspace's owner, never as root
        os.chown(path, *WORKSPACE_OWNER)
    return path


@pytest.fixture(scope="module")
def fake(home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeAPI]:
    from bottle.engine.images import ensure_image
    from bottle.images import sidecar_image
    from bottle.settings import Settings

    settings = Settings.from_env({**os.environ, "BOTTLE_HOME": str(home)})
    image = ensure_image(sidecar_image(settings), settings=settings, progress=lambda _l: None)
    with FakeAPI.running(
        home,
        tmp_path_factory.mktemp("claude-fake"),
        image=image,
        script=SCRIPT,
        aliases=(ANTHROPIC, UPSTREAM_HOST),
    ) as running:
        yield running


@pytest.fixture(scope="module")
def env(home: Path, fake: FakeAPI) -> dict[str, str]:
    return {
        "BOTTLE_HOME": str(home),
        "ANTHROPIC_API_KEY": REAL_KEY,
        "BOTTLE_EXTRA_CA_CERTS": str(fake.ca_file),
    }


def _conversation(fake: FakeAPI, word: str) -> list[dict[str, Any]]:
    """The Messages API requests of the conversation opened by a prompt holding ``word``."""
    found = []
    for request in fake.messages():
        body = request["body"]
        if not body.get("tools"):
            continue
        first = json.dumps(body["messages"][0])
        if word in first:
            found.append(request)
    return found


def _tool_results(request: dict[str, Any]) -> list[str]:
    out = []
    for message in request["body"]["messages"]:
        content = message.get("content")
        if message["role"] != "user" or not isinstance(content, list):
            continue
        for block in content:
            if block.get("type") == "tool_result":
                inner = block.get("content")
                out.append(inner if isinstance(inner, str) else json.dumps(inner))
    return out


def _slug_of(home: Path, before: set[str]) -> str:
    (slug,) = {p.name for p in (home / "state").iterdir()} - before
    return slug


def _slugs(home: Path) -> set[str]:
    state = home / "state"
    return {p.name for p in state.iterdir()} if state.is_dir() else set()


def test_run_prompt_answers_with_the_real_key_outside_only(
    home: Path, workdir: Path, fake: FakeAPI, env: dict[str, str]
) -> None:
    before = _slugs(home)
    done = cli("run", "reviewer", "--prompt", "HELLO: say hi", cwd=workdir, env_extra=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hi from the fake", done.stdout
    turns = _conversation(fake, "HELLO")
    assert len(turns) == 2, [t["path"] for t in turns]
    # The fake got the real key (egress injected it); the agent's own shell saw only the
    # placeholder, in the tool result it sent back.
    assert {t["headers"]["x-api-key"] for t in turns} == {REAL_KEY}
    assert _tool_results(turns[1]) == [PLACEHOLDER]
    # The agent's system prompt and the supervise tools came with it.
    system = json.dumps(turns[0]["body"]["system"])
    assert "careful code reviewer" in system
    tools = {t["name"] for t in turns[0]["body"]["tools"]}
    assert "mcp__supervise__egress-block" in tools
    # A fresh bottle's decision log shows no surprise refusal.
    slug = _slug_of(home, before)
    log = (home / "state" / slug / "logs" / "egress.jsonl").read_text().splitlines()
    refused = [json.loads(line) for line in log if json.loads(line)["decision"] != "allow"]
    assert refused == []


def test_run_prompt_json_is_the_structured_result(
    workdir: Path, fake: FakeAPI, env: dict[str, str]
) -> None:
    done = cli("run", "reviewer", "--prompt", "HELLO again", "--json", cwd=workdir, env_extra=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["type"] == "result" and result["is_error"] is False
    assert result["result"] == "hi from the fake"


def test_a_prompt_that_looks_like_an_option_is_the_task(
    workdir: Path, fake: FakeAPI, env: dict[str, str]
) -> None:
    # Without "--" before it, claude took a word starting with "-" for one of its options
    # ("--help" alone printed its help with rc 0, "--model=x" chose the model).
    done = cli("run", "reviewer", "--prompt", "--help HELLO dash", cwd=workdir, env_extra=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hi from the fake", done.stdout
    assert _conversation(fake, "--help HELLO dash")


REAL_TOKEN = "sk-ant-oat01-" + "r3alT0k3n" * 8  # a subscription or gateway token: host only


@pytest.mark.parametrize("variable", ["ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN"])
def test_a_bearer_token_form_is_injected_and_the_agent_holds_a_placeholder(
    home: Path, workdir: Path, fake: FakeAPI, env: dict[str, str], variable: str
) -> None:
    """The forms docs/agents.md names beside the API key: Claude Code sends
    ``Authorization: Bearer <placeholder>``, egress puts the host's token in its place."""
    shipped = (home / "bottles" / "claude.md").read_text()
    bearer = f"{{scheme: bearer, token_ref: {variable}}}"
    form = variable.lower().replace("_", "-")
    write(
        home / "bottles" / f"{form}.md",
        shipped.replace('{scheme: "header:x-api-key", token_ref: ANTHROPIC_API_KEY}', bearer),
    )
    reviewer = (home / "agents" / "reviewer.md").read_text()
    write(home / "agents" / f"{form}.md", reviewer.replace("bottle: claude", f"bottle: {form}"))
    # The host holds the token alone: no API key anywhere this time.
    only_token = {k: v for k, v in env.items() if k != "ANTHROPIC_API_KEY"}
    only_token[variable] = REAL_TOKEN
    before = _slugs(home)
    done = cli("run", form, "--prompt", f"TOKEN-FORM {variable}", cwd=workdir, env_extra=only_token)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "the token form works", done.stdout
    turns = _conversation(fake, f"TOKEN-FORM {variable}")
    assert len(turns) == 2, [t["path"] for t in turns]
    for turn in turns:
        assert turn["headers"]["authorization"] == f"Bearer {REAL_TOKEN}"
        assert "x-api-key" not in turn["headers"]
    # Inside, the variable held egress's placeholder, and no other credential was there;
    # Claude Code keeps its OAuth token out of its tools' environment altogether.
    seen = [] if variable == "CLAUDE_CODE_OAUTH_TOKEN" else [f"{variable}={PLACEHOLDER}"]
    assert _tool_results(turns[1]) == ["\n".join(seen) or "(Bash completed with no output)"]
    slug = _slug_of(home, before)
    # What the agent's container was given (the compose file) holds the placeholder only.
    compose = (home / "state" / slug / "docker-compose.yml").read_text()
    assert f"{variable}: {PLACEHOLDER}" in compose and REAL_TOKEN not in compose
    log = (home / "state" / slug / "logs" / "egress.jsonl").read_text().splitlines()
    refused = [json.loads(line) for line in log if json.loads(line)["decision"] != "allow"]
    assert refused == []


def _pending(env: dict[str, str], workdir: Path) -> list[dict[str, Any]] | None:
    done = cli("queue", "--json", cwd=workdir, env_extra=env)
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows or None


@pytest.fixture(scope="module")
def recovered(
    home: Path, workdir: Path, fake: FakeAPI, env: dict[str, str]
) -> tuple[str, subprocess.CompletedProcess[str]]:
    """The recovery flow, once: refused, asked, approved, retried."""
    before = _slugs(home)
    run = subprocess.Popen(
        [sys.executable, "-m", "bottle_cli", "run", "reviewer", "--prompt", "RECOVER the build"],
        cwd=workdir,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        rows = wait_for(lambda: _pending(env, workdir), 240, "the agent's egress-block proposal")
        (row,) = rows
        assert row["tool"] == "egress-block", row
        done = cli("approve", row["slug"], str(row["id"]), cwd=workdir, env_extra=env)
        assert done.returncode == 0, done.stderr
        stdout, stderr = run.communicate(timeout=240)
    finally:
        if run.poll() is None:
            run.kill()
    return _slug_of(home, before), subprocess.CompletedProcess(
        run.args, run.returncode, stdout, stderr
    )


def test_refused_asked_approved_retried(recovered: Any, fake: FakeAPI) -> None:
    _slug, run = recovered
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "recovered"
    turns = _conversation(fake, "RECOVER")
    assert len(turns) == 4, len(turns)
    refused, answered, retried = _tool_results(turns[3])
    assert refused.endswith(" 403") and "egress" in refused, refused
    assert "approved" in answered, answered
    assert retried == "fakeapi says hello on /needed\n 200", retried


def test_transcript_after_stop_holds_the_turns(
    recovered: Any, home: Path, workdir: Path, env: dict[str, str]
) -> None:
    slug, _run = recovered
    projects = home / "state" / slug / "transcript" / "claude" / "projects"
    (jsonl,) = projects.glob("*/*.jsonl")
    text = jsonl.read_text()
    assert "RECOVER the build" in text and "mcp__supervise__egress-block" in text
    assert "recovered" in text
    shown = cli("transcript", slug, cwd=workdir, env_extra=env)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    order = [
        out.index("RECOVER the build"),
        out.index(f"https://{UPSTREAM_HOST}/needed"),
        out.index("egress refused"),
        out.index("mcp__supervise__egress-block"),
        out.index("proposal"),
        out.index("recovered"),
    ]
    assert order == sorted(order), out
    as_json = cli("transcript", slug, "--json", cwd=workdir, env_extra=env)
    assert as_json.returncode == 0, as_json.stderr
    kinds = {json.loads(line)["kind"] for line in as_json.stdout.splitlines()}
    assert {"user", "assistant", "tool_call", "tool_result", "egress", "proposal"} <= kinds


def test_resume_continues_the_conversation(
    home: Path, workdir: Path, fake: FakeAPI, env: dict[str, str]
) -> None:
    from bottle import Bottle
    from bottle.providers import provider

    claude = provider("claude")
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        with Bottle("reviewer", cwd=workdir).start() as instance:
            first = instance.exec(claude.headless_command("REMEMBER blue"), capture=True)
            assert first.exit_code == 0, first.stderr
            assert first.stdout.strip() == "noted: blue"
            again = instance.exec(
                claude.headless_command("what was it?", resume=True), capture=True
            )
            assert again.exit_code == 0, again.stderr
            assert again.stdout.strip() == "it was blue"
    last = _conversation(fake, "REMEMBER")[-1]
    said = json.dumps(last["body"]["messages"])
    assert "REMEMBER blue" in said and "noted: blue" in said and "what was it?" in said
