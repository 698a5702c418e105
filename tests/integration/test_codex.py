"""Codex 0.171.0, the real CLI from npm, does real work in a bottle against the fake API.

The fake (tests/fakeapi, the Responses API) answers as ``api.openai.com`` on the bottle's
egress network with a certificate of a test CA that egress trusts through
``BOTTLE_EXTRA_CA_CERTS``: Codex's requests take the production path (HTTPS_PROXY, the
bottle CA, egress putting the real key in), with no base-URL override. One instance for the
module; the transcript is read after it stopped.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bottle.providers import provider
from tests.conftest import run_cli, wait_for, write
from tests.integration.conftest import UPSTREAM_HOST, WORKSPACE_OWNER
from tests.integration.fakeapi import FakeAPI

pytestmark = pytest.mark.docker

REAL_KEY = "sk-real-" + "7c3e9a1f5b" * 3  # the host's; only egress and the fake see it
PLACEHOLDER = "bottle-egress-injects-this"

BOTTLE = """---
agent: {provider: codex}
egress:
  routes:
    # examples/bottles/codex.md's route, private: the fake sits on a private address.
    - host: api.openai.com
      methods: [POST, GET]
      paths: [/v1/]
      auth: {scheme: bearer, token_ref: OPENAI_API_KEY}
      private: true
    # The recovery flow's host (a second alias of the fake): whether it may be private is
    # the operator's call, never part of the agent's request.
    - {host: upstream.test, paths: [/never/], private: true}
---
"""
AGENT = """---
bottle: cx
---
You are the codex test agent. SYSTEM-PROMPT-MARKER.
"""
CURL = f"curl -sS -w ' %{{http_code}}' https://{UPSTREAM_HOST}/needed"
SCRIPT = {
    "openai": {
        "conversations": [
            {"match": "say hi", "turns": [{"text": "hi from the fake"}]},
            {
                "match": "RUN-A-COMMAND",
                "turns": [
                    {"shell": "echo shell-ran > ran.txt && cat ran.txt"},
                    {"text": "the command ran"},
                ],
            },
            {"match": "RESUME-CHECK", "turns": [{"text": "resumed with the history"}]},
            {
                "match": "RECOVER",
                "turns": [
                    {"shell": CURL},
                    {
                        "tool": "egress-block",
                        "arguments": {
                            "host": UPSTREAM_HOST,
                            "paths": ["/needed"],
                            "justification": "the task needs it",
                        },
                    },
                    {"shell": CURL},
                    {"text": "recovered"},
                ],
            },
        ],
        "default": "ok",
    }
}


@dataclass
class Codex:
    instance: Any
    fake: FakeAPI

    def run(self, prompt: str, **kw: Any) -> Any:
        argv = provider("codex").headless_command(prompt, **kw)
        return self.instance.exec(argv, capture=True)

    def responses(self) -> list[dict[str, Any]]:
        return [
            r
            for r in self.fake.requests()
            if r["method"] == "POST" and r["path"].split("?")[0] == "/v1/responses"
        ]


@pytest.fixture(scope="module")
def codex(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[Codex]:
    from bottle import Bottle
    from bottle.engine.images import ensure_image
    from bottle.images import sidecar_image
    from bottle.settings import Settings

    home = tmp_path_factory.mktemp("codex-home")
    workdir = tmp_path_factory.mktemp("codex-work")
    if os.getuid() == 0:  # the agent runs as the workspace's owner, never as root
        os.chown(workdir, *WORKSPACE_OWNER)
    write(home / "bottles" / "cx.md", BOTTLE)
    write(home / "agents" / "cx.md", AGENT)
    settings = Settings.from_env({**os.environ, "BOTTLE_HOME": str(home)})
    image = ensure_image(sidecar_image(settings), settings=settings, progress=lambda _: None)
    tmp = tmp_path_factory.mktemp("codex-fake")
    with (
        FakeAPI.running(
            home, tmp, image=image, script=SCRIPT, aliases=("api.openai.com", UPSTREAM_HOST)
        ) as fake,
        pytest.MonkeyPatch.context() as mp,
    ):
        mp.setenv("BOTTLE_HOME", str(home))
        mp.setenv("OPENAI_API_KEY", REAL_KEY)
        mp.setenv("BOTTLE_EXTRA_CA_CERTS", str(fake.ca_file))
        with Bottle("cx", cwd=workdir).start() as instance:
            yield Codex(instance, fake)


def test_say_hi_completes_with_the_real_key_injected(codex: Codex) -> None:
    result = codex.run("say hi")
    assert result.exit_code == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("hi from the fake"), result.stdout
    (request, *_) = [r for r in codex.responses() if "say hi" in json.dumps(r["body"])]
    # The fake got the host's key, put in by egress; the agent held a placeholder only.
    assert request["headers"]["authorization"] == f"Bearer {REAL_KEY}"
    assert request["host"] == "api.openai.com"
    env = codex.instance.exec(["sh", "-c", 'env; cat "$CODEX_HOME/auth.json"'], capture=True)
    assert REAL_KEY not in env.stdout
    assert PLACEHOLDER in env.stdout and "CODEX_HOME=/run/bottle/transcript/codex" in env.stdout
    # Codex got the agent file's body as instructions, and supervise's tools.
    body = json.dumps(request["body"])
    assert "SYSTEM-PROMPT-MARKER" in body
    assert "egress" in body and "supervise" in body


def test_a_shell_tool_call_runs_in_the_workspace(codex: Codex) -> None:
    result = codex.run("RUN-A-COMMAND", output="json")
    assert result.exit_code == 0, (
        result.stdout[-3000:] + json.dumps(codex.fake.requests()[-1])[-3000:]
    )
    events = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    done = [e["item"] for e in events if e.get("type") == "item.completed"]
    commands = [i for i in done if i.get("type") == "command_execution"]
    assert commands and "shell-ran" in commands[0]["aggregated_output"]
    assert any(i.get("text") == "the command ran" for i in done if i["type"] == "agent_message")
    # The command's output went back to the model in the next request.
    last = codex.responses()[-1]["body"]["input"]
    outputs = [i for i in last if i.get("type") == "function_call_output"]
    assert outputs and "shell-ran" in outputs[-1]["output"]


def test_resume_continues_the_last_conversation(codex: Codex) -> None:
    result = codex.run("RESUME-CHECK", resume=True)
    assert result.exit_code == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("resumed with the history"), result.stdout
    # The model saw the earlier session's turns: the command and its answer.
    request = json.dumps(codex.responses()[-1]["body"])
    assert "RESUME-CHECK" in request
    assert "RUN-A-COMMAND" in request and "the command ran" in request


def _pending(ended: list[Any], codex: Codex) -> list[dict[str, Any]] | None:
    if ended:  # the run ended without asking: say how
        (result,) = ended
        last = codex.responses()[-1]["body"]["input"] if codex.responses() else []
        raise AssertionError(f"{result.stdout[-2000:]}\n{result.stderr[-3000:]}\n{last}")
    done = run_cli("queue", "--json", cwd=Path.cwd())
    assert done.returncode == 0, done.stderr
    rows: list[dict[str, Any]] = json.loads(done.stdout)
    return rows or None


def test_refused_asked_approved_retried(codex: Codex) -> None:
    """The whole recovery flow with the real CLI: the shell tool's request is refused, the
    next turn files egress-block through supervise, the operator approves it from the
    queue, and the retried request gets through."""
    result: list[Any] = []
    run = threading.Thread(
        target=lambda: result.append(codex.run("RECOVER the build")), daemon=True
    )
    run.start()
    try:
        (row,) = wait_for(
            lambda: _pending(result, codex), 240, "the agent's egress-block proposal", poll=0.5
        )
        assert row["tool"] == "egress-block", row
        done = run_cli("approve", row["slug"], str(row["id"]), cwd=Path.cwd())
        assert done.returncode == 0, done.stderr
    finally:
        run.join(240)
    assert not run.is_alive(), "the codex run did not end within 240 s of the approval"
    (finished,) = result
    assert finished.exit_code == 0, finished.stderr[-2000:]
    assert finished.stdout.strip().endswith("recovered"), finished.stdout
    last = codex.responses()[-1]["body"]["input"]
    outputs = {"function_call_output", "custom_tool_call_output"}
    refused, answered, retried = [str(i["output"]) for i in last if i.get("type") in outputs]
    assert " 403" in refused and "egress" in refused, refused
    assert "approved" in answered, answered
    assert "fakeapi says hello on /needed\n 200" in retried, retried


def test_the_transcript_holds_the_turns_after_stop(codex: Codex) -> None:
    # Runs last: it stops the module's instance (the fixture's stop is then a no-op).
    codex.instance.stop()
    state = codex.instance.state
    rollouts = list((state.transcript / "codex" / "sessions").rglob("rollout-*.jsonl"))
    assert rollouts, "no session file in Codex's format"
    done = run_cli(
        "transcript", state.slug, cwd=state.path, env={"BOTTLE_HOME": str(state.path.parent.parent)}
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    order = [
        "say hi",
        "hi from the fake",
        "RUN-A-COMMAND",
        "exec_command",
        "shell-ran",
        "the command ran",
        "RESUME-CHECK",
        "resumed with the history",
        "RECOVER the build",
        f"https://{UPSTREAM_HOST}/needed",
        "egress refused",
        "egress-block",
        "proposal",
        "recovered",
    ]
    at = 0
    for text in order:  # each after the one before
        found = out.find(text, at)
        assert found != -1, f"{text!r} missing after offset {at}:\n{out}"
        at = found + len(text)
