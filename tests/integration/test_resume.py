"""Real Docker: resume brings an instance back as it was, and a capability approval keeps
the agent's conversation (its home, its run) across the container swap.

The agent of the second part is a ``provider: command`` agent: a small Python program
baked into a Dockerfile built on the shell agent's image, which keeps its "conversation"
in the transcript and files a real capability-block through supervise.
"""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import pytest

from bottle.policy import Route
from tests.conftest import run_cli_here, wait_for, write
from tests.integration.conftest import IT_BOTTLE, curl, upstream

pytestmark = pytest.mark.docker


def test_resume_brings_a_finished_instance_back_with_its_state(
    bottle_home: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle import Bottle
    from bottle.audit import AuditLog
    from bottle.state import InstanceStatus

    # The route the test adds live (not in the bottle file) must still be in force on resume.
    write(bottle_home / "bottles" / "res.md", IT_BOTTLE)
    write(bottle_home / "agents" / "res.md", "---\nbottle: res\n---\n")
    instance = Bottle("res", cwd=workdir).start()
    slug = instance.slug
    try:
        assert instance.exec(["sh", "-c", "echo mine > $HOME/kept.txt"]).exit_code == 0
        live = Route(host="upstream.test", paths=("/later/",), methods=("GET",), private=True)
        instance.routes.allow(live, reason="added while it ran")
        instance.stop(status=InstanceStatus.FINISHED, exit_code=0)
        # egress leaves its status file at stop: the resume must not take it for the new
        # container's word (bottle.readiness), and the one it waits for is written anew.
        stale = instance.state.status_file("egress")
        assert stale.is_file()
        left_at = stale.stat().st_mtime

        cli = lambda *args: run_cli_here(*args, cwd=workdir, monkeypatch=monkeypatch)  # noqa: E731
        unknown = cli("resume", "res-zzzzz")
        assert unknown.returncode != 0 and "no instance 'res-zzzzz'" in unknown.stderr

        resumed = cli("resume", "--detach", slug)
        assert resumed.returncode == 0, resumed.stderr
        assert resumed.stdout.strip() == slug
        assert instance.status == InstanceStatus.RUNNING
        assert instance.state.status_file("egress").stat().st_mtime > left_at
        # The same home (bound from the state dir), and the routes in force, not the file's.
        home = instance.exec(["cat", "/home/agent/kept.txt"], capture=True)
        assert home.stdout == "mine\n"
        assert (instance.state.home / "kept.txt").read_text() == "mine\n"
        with upstream(instance.metadata.compose_project, image=instance.metadata.images["sidecar"]):
            assert curl(instance, "http://upstream.test/later/x") == "200"
            assert curl(instance, "http://upstream.test/other/x") == "403"
        entries = AuditLog(instance.state.audit_log).entries()
        assert [e.action for e in entries][-1] == "resume"

        again = cli("resume", slug)
        assert again.returncode == 2 and "is running" in again.stderr
        assert f"bottle attach {slug}" in again.stderr

        # A preserved instance whose containers stopped: attach names resume ...
        instance.preserve("its terminal went away")
        instance.compose.kill("agent", "SIGKILL")
        attach = cli("attach", slug)
        assert attach.returncode == 1 and f"bottle resume {slug}" in attach.stderr
        # ... and so does exec, after docker's own "is not running".
        execd = cli("exec", slug, "--", "true")
        assert execd.returncode == 1 and f"bottle resume {slug}" in execd.stderr
        # ... and a headless resume continues there, then finishes it.
        headless = cli("resume", slug, "--prompt", "echo resumed >> $HOME/kept.txt")
        assert headless.returncode == 0, headless.stderr
        assert (instance.state.home / "kept.txt").read_text() == "mine\nresumed\n"
        meta = instance.metadata
        assert meta.status == InstanceStatus.FINISHED and meta.exit_code == 0
        assert "echo resumed" in instance.state.run_log.read_text()
    finally:
        instance.stop()


# -- a capability approval keeps the conversation ---------------------------------------

AGENT_PY = r'''#!/usr/bin/env python3
"""A tiny CLI agent: its conversation is a JSONL file in the transcript."""
import json, os, sys, urllib.request

LOG = "/run/bottle/transcript/conversation.jsonl"
HOME = os.environ["HOME"]
resume = sys.argv[1] == "--continue"
task = sys.argv[-1]
earlier = [json.loads(l) for l in open(LOG)] if os.path.exists(LOG) else []

def turn(**said):
    with open(LOG, "a") as f:
        f.write(json.dumps({"resume": resume, "task": task, "seen": len(earlier), **said}) + "\n")

def mcp(method, params, ident):
    body = json.dumps({"jsonrpc": "2.0", "id": ident, "method": method, "params": params})
    req = urllib.request.Request("http://supervise:8765/mcp", body.encode(),
        {"content-type": "application/json", "accept": "application/json, text/event-stream"})
    return urllib.request.urlopen(req, timeout=600).read().decode()

if task.startswith("install "):
    turn()
    with open(os.path.join(HOME, "notes.txt"), "w") as f:
        f.write("before the swap\n")
    mcp("initialize", {"protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "agent", "version": "1"}}, 1)
    dockerfile = "FROM ${BOTTLE_AGENT_IMAGE}\nRUN echo " + task.split()[1] + " > /opt/marker\n"
    print("asking for a capability", flush=True)
    mcp("tools/call", {"name": "capability-block", "arguments":
        {"dockerfile": dockerfile, "justification": "I need the marker"}}, 2)
    print("the capability call returned", flush=True)
    sys.exit(3)  # never reached when the swap ends this process first
marker = open("/opt/marker").read().strip() if os.path.exists("/opt/marker") else "-"
turn(marker=marker, notes=open(os.path.join(HOME, "notes.txt")).read())
'''

COMMAND_BOTTLE = """---
agent:
  provider: command
  dockerfile: tiny/Dockerfile
  command:
    interactive: [agent.py, --chat]
    headless: [agent.py, --task, "{prompt}"]
    headless_resume: [agent.py, --continue, "{prompt}"]
supervise: {wait: 600}
---
"""

TINY_DOCKERFILE = """FROM ${BOTTLE_AGENT_IMAGE}
COPY agent.py /usr/local/bin/agent.py
"""


def test_a_capability_approval_continues_a_headless_run_in_the_new_container(
    bottle_home: Path, workdir: Path
) -> None:
    from bottle import Bottle
    from bottle.operator import approve, proposal_queue
    from bottle.session import headless_prompt_run
    from bottle.state import InstanceStatus, StateDir

    write(bottle_home / "bottles" / "tiny.md", COMMAND_BOTTLE)
    write(bottle_home / "bottles" / "tiny" / "Dockerfile", TINY_DOCKERFILE)
    script = write(bottle_home / "bottles" / "tiny" / "agent.py", AGENT_PY)
    script.chmod(0o755)
    write(bottle_home / "agents" / "tiny.md", "---\nbottle: tiny\n---\nA tiny agent.\n")

    marker = uuid.uuid4().hex  # a new capability image each run: the build really happens
    lines: list[str] = []
    result: dict[str, int] = {}
    bottle = Bottle("tiny", cwd=workdir)
    run = threading.Thread(
        target=lambda: result.update(
            code=headless_prompt_run(bottle, f"install {marker}", progress=lines.append)
        ),
        daemon=True,
    )
    run.start()

    state_root = bottle_home / "state"
    state = wait_for(
        lambda: next(
            (StateDir(p) for p in state_root.glob("tiny-*") if StateDir(p).exists()), None
        ),
        300,
        "the start",
    )
    from bottle.instance import Instance

    instance = Instance(state)
    try:
        proposal = wait_for(
            lambda: (
                next(iter(proposal_queue(instance).list("pending").proposals), None)
                if instance.status == InstanceStatus.RUNNING
                else None
            ),
            300,
            "the agent's capability-block",
        )
        assert proposal.tool == "capability-block"
        approve(instance, proposal.id, reason="fine")
        run.join(300)
        assert not run.is_alive(), lines
    finally:
        if run.is_alive():
            instance.stop()
    assert result["code"] == 0, lines
    turns = [json.loads(line) for line in (state.transcript / "conversation.jsonl").open()]
    assert [t["resume"] for t in turns] == [False, True]
    assert "capability was installed" in turns[1]["task"] and turns[1]["seen"] == 1
    # The new container has the capability and the old one's home.
    assert turns[1]["marker"] == marker
    assert turns[1]["notes"] == "before the swap\n"
    out = state.run_log.read_text()
    assert out.count(" $ python3 -c ") == 2 and "exit 0" in out
    meta = instance.metadata
    assert meta.status == InstanceStatus.FINISHED and meta.agent_restarts == 1
    assert meta.images["agent"].startswith("bottle-agent-capability:")
    assert any("conversation continues" in line for line in lines), lines
