"""supervise on a real instance: the pending answer, capability-block, the operator's CLI."""

from __future__ import annotations

import ipaddress
import json
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from bottle.dockerfiles import with_build_trust
from bottle.errors import ApplyError, ApplyFailed
from bottle.operator import approve, proposal_queue
from bottle.settings import Settings
from tests.integration.conftest import cli, curl, mcp, readline, running

pytestmark = pytest.mark.docker

# supervise answers "pending" after 2 s, so a test needs no 30 s wait. A capability build
# goes out through the bottle's egress, and TOOL_DOCKERFILE installs jq with apt from the
# (plain-HTTP) Debian mirror: the bottle allows GET to the mirror host, and nothing more.
MIRROR_HOST = urlsplit(Settings.from_env().debian_mirror).hostname
QUICK_BOTTLE = """---
agent: {provider: shell}
supervise: {wait: 2}
env:
  ANSWER: "?What is the answer"
  COPIED: "${IT_COPIED}"
egress:
  routes:
    - {host: upstream.test, paths: [/allowed/], methods: [GET], private: true}
    - {host: MIRROR_HOST, methods: [GET]}
---
""".replace("MIRROR_HOST", str(MIRROR_HOST))

TOOL_DOCKERFILE = """FROM ${BOTTLE_AGENT_IMAGE}
RUN apt-get update \\
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends jq \\
 && rm -rf /var/lib/apt/lists/*
"""


@pytest.fixture
def quick(bottle_home: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("IT_COPIED", "from the host")
    answer = lambda _name, _question: "forty-two"  # noqa: E731
    with running(bottle_home, workdir, "quick", QUICK_BOTTLE, ask=answer) as instance:
        yield instance


def _id(answer: str) -> int:
    match = re.search(r"\bid (\d+)", answer)
    assert match, answer
    return int(match.group(1))


def test_timeout_answers_pending_and_status_reports_the_decision_later(quick) -> None:
    answer = mcp(
        quick,
        "pipelock-block",
        {"url": "http://upstream.test/later/x", "justification": "the tests need it"},
    )
    assert answer.startswith("pending") and "proposal-status" in answer
    proposal_id = _id(answer)
    assert "pending" in mcp(quick, "proposal-status", {"id": proposal_id})
    assert curl(quick, "http://upstream.test/later/x") == "403"
    approve(quick, proposal_id, reason="ok")
    status = mcp(quick, "proposal-status", {"id": proposal_id})
    assert "approved and applied" in status and "upstream.test" in status
    assert curl(quick, "http://upstream.test/later/x") == "200"


def test_capability_block_replaces_the_agent_alone(quick) -> None:
    before = {s.service: s.container_id for s in quick.compose.ps()}
    old_image = quick.metadata.images["agent"]
    assert quick.exec(["sh", "-c", "command -v jq"], capture=True).exit_code != 0
    assert quick.exec(["sh", "-c", "echo kept > /run/bottle/transcript/notes.txt"]).exit_code == 0

    # A comment of its own gives this run a new image tag, so the build (and its progress)
    # happens even when an earlier run left the image behind.
    dockerfile = TOOL_DOCKERFILE.replace("\nRUN", f"\n# run {uuid.uuid4().hex}\nRUN", 1)
    answer = mcp(
        quick,
        "capability-block",
        {"dockerfile": dockerfile, "justification": "I need jq to read JSON"},
    )
    assert answer.startswith("pending"), answer
    lines: list[str] = []
    approve(quick, _id(answer), reason="jq is fine", progress=lines.append)
    assert any(line.startswith("Step ") for line in lines), lines

    after = {s.service: s.container_id for s in quick.compose.ps()}
    assert after["agent"] != before["agent"]
    assert {k: v for k, v in after.items() if k != "agent"} == {
        k: v for k, v in before.items() if k != "agent"
    }
    assert quick.exec(["jq", "--version"], capture=True).stdout.startswith("jq-")
    notes = quick.exec(["cat", "/run/bottle/transcript/notes.txt"], capture=True)
    assert notes.stdout == "kept\n"
    (snapshot,) = (quick.state.path / "snapshots").iterdir()
    assert (snapshot / "notes.txt").read_text() == "kept\n"
    # The values compose had at start (a ?question answer, a host variable) came along.
    env = quick.exec(["sh", "-c", 'echo "$ANSWER|$COPIED"'], capture=True).stdout
    assert env == "forty-two|from the host\n"
    # Networking is what it was: egress still decides.
    assert curl(quick, "http://upstream.test/allowed/x") == "200"
    assert curl(quick, "http://upstream.test/other/x") == "403"
    # The state directory tells what runs now.
    new_image = quick.metadata.images["agent"]
    assert new_image != old_image and new_image.startswith("bottle-agent-capability:")
    assert f"image: {new_image}" in quick.state.compose_file.read_text()
    (recorded,) = (quick.state.path / "capabilities").glob("*.Dockerfile")
    assert recorded.read_text() == with_build_trust(dockerfile)
    assert new_image.endswith(recorded.stem)
    status = mcp(quick, "proposal-status", {"id": _id(answer)})
    assert "approved and applied" in status
    # supervise, never restarted, names and checks against the image in force now.
    assert f"your container now runs {new_image}." in status
    stale = mcp(
        quick,
        "capability-block",
        {"dockerfile": f"FROM {old_image}\nRUN true\n", "justification": "the old one"},
    )
    assert f"or FROM {new_image}" in stale and f"or FROM {old_image}" not in stale, stale
    assert after["supervise"] == before["supervise"]
    entry = json.loads(quick.state.audit_log.read_text().splitlines()[-1])
    assert entry["tool"] == "capability-block" and new_image in entry["diff"]
    # apt fetched through egress: the build's requests are in its decision log.
    fetched = [e for e in _egress_log(quick) if e["host"] == MIRROR_HOST]
    assert fetched and {e["decision"] for e in fetched} == {"allow"}, fetched


def _egress_log(instance) -> list[dict]:
    """Egress's decisions so far; it writes the file at its first request."""
    path = instance.state.egress_log
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _gateway(network: str) -> str:
    out = subprocess.run(
        [
            "docker",
            "network",
            "inspect",
            network,
            "--format",
            "{{range .IPAM.Config}}{{.Subnet}} {{.Gateway}}{{end}}",
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    subnet, _, gateway = out.stdout.strip().partition(" ")
    # A network given its subnet (bottle's leased /28s) shows no gateway in inspect; the
    # engine still takes the subnet's first address for it.
    return gateway.strip() or str(next(ipaddress.ip_network(subnet).hosts()))


def test_capability_build_reaches_only_the_routes_of_the_bottle(quick) -> None:
    gateway = _gateway(f"{quick.metadata.compose_project}_internal")
    upstream_ip = subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            f"{quick.metadata.compose_project}_egress",
            quick.metadata.images["sidecar"],
            "python",
            "-c",
            "import socket; print(socket.gethostbyname('upstream.test'))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    code = "curl -s -m 10 -o /dev/null -w '%{http_code}'"
    probe = f"""FROM ${{BOTTLE_AGENT_IMAGE}}
# run {uuid.uuid4().hex}
RUN test "$({code} http://upstream.test/allowed/build)" = 200
RUN test "$({code} http://upstream.test/other/build)" = 403
RUN test "$({code} http://{gateway}:8080/gateway)" = 403
RUN test "$({code} http://172.17.0.1/docker0)" = 403
RUN ! curl -s -m 5 --noproxy '*' http://upstream.test/allowed/direct
RUN ! curl -s -m 5 --noproxy '*' http://{upstream_ip}/allowed/direct
"""
    answer = mcp(quick, "capability-block", {"dockerfile": probe, "justification": "probe"})
    lines: list[str] = []
    approve(quick, _id(answer), progress=lines.append)
    assert any("through egress" in line for line in lines), lines
    seen = {(e["host"], e["path"]): e["decision"] for e in _egress_log(quick)}
    assert seen[("upstream.test", "/allowed/build")] == "allow"
    assert seen[("upstream.test", "/other/build")] == "refuse"
    assert seen[(gateway, "/gateway")] == "refuse"
    assert seen[("172.17.0.1", "/docker0")] == "refuse"
    # The direct attempts never reached egress (nor anything else: the RUN steps passed).
    assert ("upstream.test", "/allowed/direct") not in seen


def test_capability_build_to_an_unrouted_host_fails_and_is_logged_refused(quick) -> None:
    before = {s.service: s.container_id for s in quick.compose.ps()}
    fetch = "FROM ${BOTTLE_AGENT_IMAGE}\nRUN curl -fsS -m 10 http://not-routed.test/payload\n"
    proposal_id = _id(mcp(quick, "capability-block", {"dockerfile": fetch, "justification": "j"}))
    with pytest.raises(ApplyError) as caught:
        approve(quick, proposal_id)
    assert "403" in caught.value.message, caught.value.message
    refused = [e for e in _egress_log(quick) if e["host"] == "not-routed.test"]
    assert refused and {e["decision"] for e in refused} == {"refuse"}, refused
    assert proposal_queue(quick).get(proposal_id).status == "pending"
    assert {s.service: s.container_id for s in quick.compose.ps()} == before


def test_offline_capability_build_has_no_network(quick) -> None:
    offline = (
        f"FROM ${{BOTTLE_AGENT_IMAGE}}\n# run {uuid.uuid4().hex}\n"
        "RUN ! curl -s -m 5 http://upstream.test/allowed/offline\n"
    )
    proposal_id = _id(mcp(quick, "capability-block", {"dockerfile": offline, "justification": "j"}))
    done = cli("approve", quick.slug, str(proposal_id), "--yes", "--offline", cwd=quick.state.path)
    assert done.returncode == 0, done.stderr
    assert "(offline)" in done.stderr
    assert all(e["path"] != "/allowed/offline" for e in _egress_log(quick))


def test_capability_build_failure_goes_to_the_operator_and_stays_pending(quick) -> None:
    before = {s.service: s.container_id for s in quick.compose.ps()}
    broken = "FROM ${BOTTLE_AGENT_IMAGE}\nRUN echo about to fail && false\n"
    answer = mcp(quick, "capability-block", {"dockerfile": broken, "justification": "j"})
    proposal_id = _id(answer)
    # Without a terminal to confirm on, a build needs --yes.
    done = cli("approve", quick.slug, str(proposal_id), cwd=quick.state.path)
    assert done.returncode == 2 and "--yes" in done.stderr, done.stderr
    done = cli("approve", quick.slug, str(proposal_id), "--yes", cwd=quick.state.path)
    assert done.returncode == 2, done.stderr
    assert "could not be applied" in done.stderr and "about to fail" in done.stderr
    assert "Traceback" not in done.stderr
    assert proposal_queue(quick).get(proposal_id).status == "pending"
    assert {s.service: s.container_id for s in quick.compose.ps()} == before


def test_agent_that_cannot_start_on_the_new_image_is_rolled_back(quick) -> None:
    before = {s.service: s.container_id for s in quick.compose.ps()}
    old_image = quick.metadata.images["agent"]
    old_compose = quick.state.compose_file.read_text()
    # The image builds, but the agent's command (sleep) is gone: the container cannot start.
    broken = f"FROM ${{BOTTLE_AGENT_IMAGE}}\n# run {uuid.uuid4().hex}\nRUN rm /usr/bin/sleep\n"
    proposal_id = _id(mcp(quick, "capability-block", {"dockerfile": broken, "justification": "j"}))
    with pytest.raises(ApplyFailed) as caught:  # a failure (exit 1), not bad input
        approve(quick, proposal_id)
    assert "did not come up" in caught.value.message
    assert f"runs its previous image {old_image} again" in (caught.value.hint or "")
    assert proposal_queue(quick).get(proposal_id).status == "pending"
    assert quick.metadata.images["agent"] == old_image
    assert quick.state.compose_file.read_text() == old_compose
    assert not list((quick.state.path / "capabilities").glob("*.Dockerfile"))
    after = {s.service: s.container_id for s in quick.compose.ps()}
    assert {k: v for k, v in after.items() if k != "agent"} == {
        k: v for k, v in before.items() if k != "agent"
    }
    assert quick.exec(["true"]).exit_code == 0
    assert curl(quick, "http://upstream.test/allowed/x") == "200"


def test_bad_proposals_are_refused_with_a_reason_and_never_queued(quick) -> None:
    cases = [
        (
            "capability-block",
            {"dockerfile": 'FROM ${BOTTLE_AGENT_IMAGE}\nENTRYPOINT ["sh"]\n'},
            "ENTRYPOINT is not allowed",
        ),
        (
            "capability-block",
            {"dockerfile": "FROM debian:stable\nRUN true\n"},
            "not the agent image",
        ),
        ("egress-block", {"host": "not a host"}, "host"),
        ("egress-block", {"host": "ok.test", "paths": ["^("]}, "regex"),
        # Anyone's bucket: the supervise sidecar parses routes as the host does.
        ("egress-block", {"host": "*.amazonaws.com"}, "list the exact hosts"),
        ("egress-block", {"host": "*.storage.googleapis.com"}, "list the exact hosts"),
    ]
    for tool, args, words in cases:
        answer = mcp(quick, tool, {**args, "justification": "j"})
        assert words in answer, (tool, answer)
    assert proposal_queue(quick).list().proposals == ()


def _editor(directory: Path, name: str, script: str) -> str:
    """An EDITOR command: a shell script that edits the file it is given ($1)."""
    path = directory / name
    path.write_text("#!/bin/sh\nset -e\n" + script + "\n")
    path.chmod(0o755)
    return str(path)


def test_operator_cli_edits_before_approving_and_edits_routes(quick, tmp_path: Path) -> None:
    answer = mcp(
        quick,
        "egress-block",
        {"host": "upstream.test", "paths": ["/asked/"], "scheme": "http", "justification": "j"},
    )
    proposal_id = _id(answer)
    # The editor narrows the request before it is approved.
    editor = _editor(tmp_path, "narrow.sh", "sed -i -e 's|/asked/|/asked/narrow/|' \"$1\"")
    done = cli(
        "approve",
        quick.slug,
        str(proposal_id),
        "--edit",
        cwd=quick.state.path,
        env_extra={"EDITOR": editor},
    )
    assert done.returncode == 0, done.stderr
    assert curl(quick, "http://upstream.test/asked/narrow/x") == "200"
    assert curl(quick, "http://upstream.test/asked/other") == "403"
    decided = proposal_queue(quick).get(proposal_id)
    assert decided.decision is not None and decided.decision.edited
    status = mcp(quick, "proposal-status", {"id": proposal_id})
    assert "edited" in status

    # routes edit: the operator's editor appends a route; it is live without a restart.
    ids = {s.service: s.container_id for s in quick.compose.ps()}
    editor = _editor(
        tmp_path,
        "append.sh",
        "printf '%s\\n' '- host: upstream.test' '  paths: [/edited/]' >> \"$1\"",
    )
    done = cli("routes", "edit", quick.slug, cwd=quick.state.path, env_extra={"EDITOR": editor})
    assert done.returncode == 0, done.stderr
    assert curl(quick, "http://upstream.test/edited/x") == "200"
    assert {s.service: s.container_id for s in quick.compose.ps()} == ids
    assert json.loads(quick.state.audit_log.read_text().splitlines()[-1])["action"] == "edit-routes"

    # A broken edit changes nothing and says why.
    before = quick.routes.current()
    done = cli(
        "routes",
        "edit",
        quick.slug,
        cwd=quick.state.path,
        env_extra={
            "EDITOR": _editor(tmp_path, "bad.sh", "echo 'routes: [{host: bad host}]' > \"$1\"")
        },
    )
    assert done.returncode == 2 and "nothing changed" in done.stderr.lower(), done.stderr
    assert quick.routes.current() == before


def test_queue_reports_a_malformed_file_and_lists_the_rest(quick) -> None:
    answer = mcp(quick, "egress-block", {"host": "upstream.test", "justification": "j"})
    proposal_id = _id(answer)
    # A pending proposal gone bad on disk (the index names it, as create made it).
    (quick.state.proposals / "77.json").write_text("{ not json")
    (quick.state.proposals / "pending" / "77").touch()
    done = cli("queue", "--json", cwd=quick.state.path)
    assert done.returncode == 0, done.stderr
    assert "77.json" in done.stderr and "not JSON" in done.stderr
    rows = json.loads(done.stdout)
    assert [(r["slug"], r["id"]) for r in rows] == [(quick.slug, proposal_id)]


def test_queue_watch_prints_each_new_proposal_once(quick) -> None:
    watcher = subprocess.Popen(
        [sys.executable, "-m", "bottle_cli", "queue", "--watch", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = _id(mcp(quick, "egress-block", {"host": "one.test", "justification": "j"}))
        second = _id(mcp(quick, "egress-block", {"host": "two.test", "justification": "j"}))
        rows = [json.loads(readline(watcher)) for _ in range(2)]
        assert [(r["id"], r["payload"]["host"]) for r in rows] == [
            (first, "one.test"),
            (second, "two.test"),
        ]
    finally:
        watcher.send_signal(signal.SIGINT)
        rest, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert rest == ""  # each proposal once, however many refreshes went by
    assert "Traceback" not in err


def test_full_screen_view_approves_and_rejects(quick) -> None:
    import asyncio

    from bottle_cli.view import QueueView

    # Agent text is never markup in the view: "[/]" would crash a markup parser.
    allowed = _id(
        mcp(
            quick,
            "egress-block",
            {
                "host": "upstream.test",
                "paths": ["/viewed/"],
                "scheme": "http",
                "justification": "[/] [conceal]x",
            },
        )
    )
    refused = _id(
        mcp(quick, "pipelock-block", {"url": "http://refused.test/", "justification": "j"})
    )
    queue = proposal_queue(quick)

    async def until(pilot, check, what: str) -> None:
        for _ in range(300):
            if check():
                return
            await pilot.pause(0.1)
        raise AssertionError(f"the view never showed {what}")

    async def drive() -> None:
        app = QueueView()
        async with app.run_test(size=(140, 40)) as pilot:
            await until(pilot, lambda: len(app.items) == 2, "both proposals")
            assert app.selected_key() == f"{quick.slug}/{allowed}"
            await pilot.press("a")
            await until(pilot, lambda: queue.get(allowed).status == "approved", "the approval")
            await until(pilot, lambda: list(app.items) == [f"{quick.slug}/{refused}"], "one left")
            await pilot.press("r")
            await pilot.press(*"not today")
            await pilot.press("enter")
            await until(pilot, lambda: queue.get(refused).status == "rejected", "the rejection")

    asyncio.run(drive())
    assert curl(quick, "http://upstream.test/viewed/x") == "200"
    decided = queue.get(refused)
    assert decided.decision is not None and decided.decision.reason == "not today"
