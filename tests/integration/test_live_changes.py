"""Live changes on a real instance: egress reload, credentials, supervise proposals, audit."""

from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path

import pytest

from bottle import Route
from bottle.operator import allow, approve, audit_log, proposal_queue, reject
from tests.conftest import wait_for
from tests.integration.conftest import cli, curl, mcp, mcp_started, running

pytestmark = pytest.mark.docker

LIVE_BOTTLE = """---
agent: {provider: shell}
supervise: true
egress:
  routes:
    - host: upstream.test
      paths: [/allowed/]
      methods: [GET]
      private: true   # upstream.test is a container on the bottle's network
---
"""


@pytest.fixture
def live(bottle_home: Path, workdir: Path):
    with running(bottle_home, workdir, "live", LIVE_BOTTLE) as instance:
        yield instance


# Credential injection (only over verified TLS to the route's port, never in the agent or
# the state) is proven in test_wire.py, against a TLS upstream.


def test_reload_adds_route_without_restart_and_keeps_old_on_bad_file(live) -> None:
    ids = {s.service: s.container_id for s in live.compose.ps()}
    assert curl(live, "http://upstream.test/new/x") == "403"
    before = live.routes.current()
    live.routes.write_live(before.with_route(Route(host="upstream.test", paths=("/new/",))))
    assert curl(live, "http://upstream.test/new/x") == "200"
    # An invalid file is refused by validation and the old table stays in force.
    path = live.routes.path
    good = path.read_bytes()
    path.write_text("routes: [{host: 'bad host'}]\n")
    done = cli("egress", "reload", live.slug, cwd=live.state.path)
    assert done.returncode == 2 and "invalid routes" in done.stderr
    # The routes egress runs are still shown, from its own copy, with the bad file named.
    shown = cli("egress", "routes", live.slug, "--json", cwd=live.state.path)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert data["source"] == "egress" and "routes.0.host" in data["file_error"]
    assert any(r["host"] == "upstream.test" and r["paths"] == ["/new/"] for r in data["routes"])
    path.write_bytes(good)
    assert curl(live, "http://upstream.test/new/x") == "200"
    assert {s.service: s.container_id for s in live.compose.ps()} == ids
    log = [json.loads(line) for line in live.state.egress_log.read_text().splitlines()]
    assert {"allow", "refuse"} <= {e["decision"] for e in log}


def test_a_route_without_private_does_not_reach_the_private_upstream(live) -> None:
    assert curl(live, "http://upstream.test/allowed/x") == "200"
    path = live.state.path / "live-config" / "egress" / "routes.yaml"
    before = path.read_bytes()
    path.write_text("routes:\n  - {host: upstream.test, paths: [/allowed/]}\n")
    assert cli("egress", "reload", live.slug, cwd=live.state.path).returncode == 0
    out = live.exec(
        ["curl", "-sS", "-w", "\n%{http_code}", "http://upstream.test/allowed/x"], capture=True
    ).stdout
    text, _, code = out.rpartition("\n")
    assert code == "403"
    refusal = json.loads(text)
    assert refusal["error"] == "egress_refused" and refusal["host"] == "upstream.test"
    assert re.search(
        r"resolves to \d+\.\d+\.\d+\.\d+; it is an address of the bottle's own "
        r"networks or of the machine it runs on, and no route for this host says private: true",
        refusal["reason"],
    )
    log = [json.loads(line) for line in live.state.egress_log.read_text().splitlines()]
    assert log[-1]["decision"] == "refuse" and "private: true" in log[-1]["reason"]
    path.write_bytes(before)
    assert cli("egress", "reload", live.slug, cwd=live.state.path).returncode == 0
    assert curl(live, "http://upstream.test/allowed/x") == "200"


def test_egress_block_proposal_approved_then_audit_verifies(live) -> None:
    ids = {s.service: s.container_id for s in live.compose.ps()}
    assert curl(live, "http://upstream.test/asked/x") == "403"
    proc = mcp_started(
        live,
        "egress-block",
        {
            "host": "upstream.test",
            "paths": ["/asked/"],
            # The test upstream speaks plain HTTP: asked for explicitly, shown to the operator.
            "scheme": "http",
            "justification": "the tests need it",
            "auth": {"scheme": "bearer", "token_ref": "EVIL"},
        },
    )
    queue = proposal_queue(live)
    (proposal,) = wait_for(lambda: queue.list(status="pending").proposals, 30, "the proposal")
    assert "auth" not in proposal.payload.model_dump()
    assert "plain HTTP" in proposal.payload.summary()
    approve(live, proposal.id, reason="fine")
    answer, _ = proc.communicate(timeout=60)
    assert "approved" in answer.lower()
    assert curl(live, "http://upstream.test/asked/x") == "200"
    assert {s.service: s.container_id for s in live.compose.ps()} == ids
    entries = live.state.audit_log.read_text().splitlines()
    assert "/asked/" in json.loads(entries[-1])["diff"]
    assert cli("audit", "verify", live.slug, cwd=live.state.path).returncode == 0
    raw = bytearray(live.state.audit_log.read_bytes())
    raw[20] ^= 1
    live.state.audit_log.write_bytes(bytes(raw))
    done = cli("audit", "verify", live.slug, cwd=live.state.path)
    assert done.returncode == 1 and "broken" in done.stderr


def test_pipelock_rejection_and_pending_then_status(live) -> None:

    # supervise waits BOTTLE_SUPERVISE_WAIT (30 s) before answering pending; file, then decide.
    proc = mcp_started(
        live, "pipelock-block", {"url": "https://blocked.test/x", "justification": "j"}
    )
    queue = proposal_queue(live)
    (proposal,) = wait_for(lambda: queue.list(status="pending").proposals, 30, "the proposal")
    reject(live, proposal.id, reason="not needed")
    answer, _ = proc.communicate(timeout=60)
    assert "rejected" in answer.lower() and "not needed" in answer
    status = mcp(live, "proposal-status", {"id": proposal.id})
    assert "rejected" in status.lower()


def test_time_from_approval_to_live_route(live) -> None:
    """Not a timed assertion: prints the figure (the benchmark script reports it too)."""
    times = []
    for index in range(5):
        started = time.monotonic()
        allow(live, Route(host="upstream.test", paths=(f"/t{index}/",)), reason="bench")
        times.append(time.monotonic() - started)
        assert curl(live, f"http://upstream.test/t{index}/x") == "200"
    print(f"approval-to-live median {statistics.median(times) * 1000:.0f} ms")
    assert audit_log(live).verify().ok
