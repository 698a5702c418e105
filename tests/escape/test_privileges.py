"""What the containers are allowed to be: the engine applied the hardening, setuid gives
nothing, and no agent runs as root by accident."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from bottle import Bottle, Instance, PlanError, Settings
from bottle.checks import run_checks
from tests.conftest import require, run_cli, write
from tests.escape.conftest import SECRET, SECRET_VAR
from tests.integration.conftest import labelled

pytestmark = pytest.mark.docker


def inspect(instance: Instance, service: str) -> dict:
    ids = [s.container_id for s in instance.compose.ps() if s.service == service]
    assert len(ids) == 1, (service, ids)
    out = subprocess.run(["docker", "inspect", ids[0]], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)[0]


@pytest.mark.parametrize("service", ["agent", "egress", "supervise"])
def test_the_engine_applied_the_hardening(escaped: Instance, service: str) -> None:
    host = inspect(escaped, service)["HostConfig"]
    assert host["CapDrop"] == ["ALL"] and not host["CapAdd"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert not host["Privileged"]
    assert 0 < host["PidsLimit"] <= 4096
    assert 0 < host["Memory"] <= 4 * 1024**3
    assert host["Sysctls"]["net.ipv6.conf.all.disable_ipv6"] == "1"
    assert host["ReadonlyRootfs"] is (service != "agent")
    assert host["LogConfig"] == {"Type": "json-file", "Config": {"max-size": "4m", "max-file": "2"}}
    user = inspect(escaped, service)["Config"]["User"]
    assert user and not user.startswith("0:") and user != "root"


def test_the_agent_cannot_fill_the_hosts_disk_through_its_log(escaped: Instance) -> None:
    """PID 1 of the agent's container runs as the agent's user, so the agent can write to
    its stdout: the container's log on the host. 32 MiB written leave at most the rotated
    two files of 4 MiB, and the host reads no more of it."""
    flood = "head -c 33554432 /dev/zero | tr '\\0' x | fold -w 4000 > /proc/1/fd/1"
    assert escaped.exec(["sh", "-c", flood]).exit_code == 0
    log_path = Path(inspect(escaped, "agent")["LogPath"])
    files = [f for f in log_path.parent.iterdir() if f.name.startswith(log_path.name)]
    on_disk = sum(f.stat().st_size for f in files)
    assert 0 < on_disk <= 9 * 1024 * 1024, (on_disk, files)
    read = escaped.compose.logs(services=["agent"])
    assert 1024 * 1024 < len(read) <= 9 * 1024 * 1024


def test_internal_network_has_no_host_side_address(escaped: Instance) -> None:
    name = f"{escaped.metadata.compose_project}_internal"
    net = json.loads(
        subprocess.run(
            ["docker", "network", "inspect", name], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    assert net["Internal"] is True
    assert net["Options"]["com.docker.network.bridge.inhibit_ipv4"] == "true"
    bridge = "br-" + net["Id"][:12]
    addrs = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", bridge],
        capture_output=True,
        text=True,
        check=False,
    )
    assert addrs.returncode == 0, addrs.stderr  # the bridge exists on this host
    assert addrs.stdout.strip() == "", f"the host holds an address on {bridge}: {addrs.stdout}"


def test_a_setuid_binary_gives_the_agent_nothing(escaped: Instance) -> None:
    # Root in the container (no capabilities) may still make a setuid-root file it owns:
    # the way a capability image could ship one.
    made = escaped.exec(
        ["sh", "-c", 'cp "$(command -v python3)" /tmp/suid-python && chmod 4755 /tmp/suid-python'],
        capture=True,
        user="0",
    )
    assert made.exit_code == 0, made.stderr
    mode = escaped.exec(["stat", "-c", "%a %u", "/tmp/suid-python"], capture=True).stdout.split()
    assert mode == ["4755", "0"]
    euid = escaped.exec(
        ["/tmp/suid-python", "-c", "import os; print(os.geteuid())"], capture=True
    ).stdout.strip()
    assert euid not in ("", "0"), f"setuid python ran with euid {euid!r}"


def test_the_agent_cannot_write_the_image_or_its_config(escaped: Instance) -> None:
    script = (
        "for p in /etc/passwd /usr/bin/probe-x /run/bottle/agent/x /run/bottle/ca/x; do "
        "  (echo x > $p) 2>/dev/null && echo WROTE $p; done; true"
    )
    assert escaped.exec(["sh", "-c", script], capture=True).stdout.strip() == ""
    # ... while the workspace and the transcript are its own.
    ok = escaped.exec(
        [
            "sh",
            "-c",
            "echo x > /workspace/.probe && echo x > /run/bottle/transcript/.probe && echo ok",
        ],
        capture=True,
    )
    assert ok.stdout.strip() == "ok", ok.stderr


def root_workspace(tmp_path: Path) -> Path:
    require(os.getuid() == 0, "root, to make a root-owned workspace")
    path = tmp_path / "rootws"
    path.mkdir()
    assert path.stat().st_uid == 0
    return path


def test_a_root_owned_workspace_is_refused(escape_home: Path, tmp_path: Path) -> None:
    path = root_workspace(tmp_path)
    settings = Settings.from_env({"BOTTLE_HOME": str(escape_home)})
    before = set((escape_home / "state").glob("*")) if (escape_home / "state").exists() else set()
    bottle = Bottle("escape", cwd=path, settings=settings, environ={SECRET_VAR: SECRET})
    with pytest.raises(PlanError, match="owned by root") as info:
        bottle.start()
    assert info.value.hint and "chown" in info.value.hint
    after = set((escape_home / "state").glob("*")) if (escape_home / "state").exists() else set()
    assert after == before  # nothing was started or written


def test_the_cli_refuses_a_root_owned_workspace_with_a_hint(
    escape_home: Path, tmp_path: Path
) -> None:
    path = root_workspace(tmp_path)
    done = run_cli(
        "run",
        "escape",
        "--",
        "true",
        cwd=path,
        env={"BOTTLE_HOME": str(escape_home), SECRET_VAR: SECRET},
    )
    assert done.returncode == 2, done.stderr
    assert "owned by root" in done.stderr and "hint" in done.stderr and "chown" in done.stderr
    assert "Traceback" not in done.stderr


ROOT_BOTTLE = """---
description: a bottle that lets the agent run as root (a root-owned workspace)
agent: {provider: shell, user: root}
supervise: false
---
"""


def test_root_by_opt_in_warns_and_still_has_no_capability(
    escape_home: Path, tmp_path: Path
) -> None:
    path = root_workspace(tmp_path)
    write(escape_home / "bottles" / "rooted.md", ROOT_BOTTLE)
    write(escape_home / "agents" / "rooted.md", "---\nbottle: rooted\n---\n")
    said: list[str] = []
    settings = Settings.from_env({"BOTTLE_HOME": str(escape_home)})
    bottle = Bottle("rooted", cwd=path, settings=settings, environ={})
    with bottle.start(progress=said.append) as instance:
        results = run_checks(instance)
        made = instance.exec(["sh", "-c", "echo x > /workspace/by-root"], capture=True)
    assert any("warning" in line and "root" in line for line in said), said
    agent = {r.check: r for r in results if r.where == "agent"}
    assert agent["user (euid)"].seen == "0" and agent["user (euid)"].ok
    assert agent["capabilities (CapEff)"].ok and agent["no_new_privs"].ok
    assert made.exit_code == 0, made.stderr
    leaks = [f"{r.where} {r.check}: {r.seen}" for r in results if not r.ok]
    assert not leaks, leaks
    assert labelled("container", instance.slug) == []
