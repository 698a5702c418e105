"""The credential egress injects is never where the agent can read it."""

from __future__ import annotations

import subprocess

import pytest

from bottle import Instance
from bottle.policy import PLACEHOLDER
from tests.conftest import wait_for
from tests.escape.conftest import SECRET, SECRET_VAR

pytestmark = pytest.mark.docker


def test_control_the_secret_is_real_and_egress_holds_it(escaped: Instance) -> None:
    """Without this the other tests could pass on a bottle that never had the secret.

    Egress injects it only over verified TLS to port 443 (tests/integration/test_wire.py
    proves the injection against a TLS upstream); here it is enough to see that egress
    knows the real value (its DLP refuses a request that carries it) and that the route
    with the credential is in force (plain HTTP to that host is refused for it).
    """
    url = "http://upstream.test/allowed/who"

    def refused_for_the_credential() -> bool:
        out = escaped.exec(["curl", "-sS", url], capture=True).stdout
        return "sends only over https" in out

    wait_for(refused_for_the_credential, 30, "egress to refuse plain HTTP to the credentialed host")
    carried = escaped.exec(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"X-Probe: {SECRET}", url],
        capture=True,
    ).stdout
    assert carried == "403"


def test_secret_not_in_the_agents_environment(escaped: Instance) -> None:
    env = escaped.exec(["env"], capture=True).stdout
    assert f"{SECRET_VAR}={PLACEHOLDER}" in env
    assert SECRET not in env


def test_secret_not_in_any_agent_process_environ(escaped: Instance) -> None:
    script = "for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done 2>/dev/null; true"
    env = escaped.exec(["sh", "-c", script], capture=True).stdout
    assert PLACEHOLDER in env  # the files were read
    assert SECRET not in env


def test_secret_not_in_any_file_the_agent_can_read(escaped: Instance) -> None:
    script = f"grep -rl --exclude-dir=proc --exclude-dir=sys {SECRET} / 2>/dev/null; true"
    assert escaped.exec(["sh", "-c", script], capture=True).stdout.strip() == ""


def test_secret_not_in_docker_inspect_of_the_agent(escaped: Instance) -> None:
    ids = [s.container_id for s in escaped.compose.ps() if s.service == "agent"]
    assert ids
    inspect = subprocess.run(
        ["docker", "inspect", *ids], capture_output=True, text=True, check=True
    ).stdout
    assert SECRET_VAR in inspect and SECRET not in inspect
