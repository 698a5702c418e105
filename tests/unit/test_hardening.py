"""Every rendered service gives up what it does not need; the agent never runs as root."""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bottle import checks, hardening, probe
from bottle.catalog import list_agents
from bottle.compose import render
from bottle.errors import ManifestError, PlanError
from bottle.manifest import load_manifest
from bottle.plan import (
    SIDECAR_FALLBACK_USER,
    BottlePlan,
    PlanOptions,
    resolve_plan,
    sidecar_user,
)
from bottle.settings import Settings
from bottle.state import StateDir
from tests.conftest import run_cli_here, write
from tests.unit.test_compose import MATRIX, bottle_text, plan_for

WORKSPACE_OWNER = (1000, 1000)


@pytest.fixture
def workspace(repo: Path) -> Path:
    """The repository, owned by a non-root user as a real workspace is."""
    if os.getuid() == 0:
        os.chown(repo, *WORKSPACE_OWNER)
    return repo


def example_plans(home: Path, cwd: Path) -> Iterator[BottlePlan]:
    settings = Settings.from_env({"BOTTLE_HOME": str(home)})
    for row in list_agents(settings, cwd):
        yield resolve_plan(
            load_manifest(home=home, cwd=cwd),
            PlanOptions(agent=row.name, cwd=cwd, suffix="abcde"),
            settings=settings,
            environ={},
        )


def all_plans(home: Path, cwd: Path) -> list[BottlePlan]:
    plans = list(example_plans(home, cwd))
    for i, (supervise, remotes, routes) in enumerate(MATRIX):
        write(
            home / "bottles" / f"m{i}.md",
            bottle_text(supervise=supervise, remotes=remotes, routes=routes),
        )
        plans.append(plan_for(home, cwd, f"m{i}"))
    return plans


def assert_hardened(name: str, service: dict[str, Any]) -> None:
    assert service["cap_drop"] == ["ALL"], name
    assert "cap_add" not in service, name
    assert service["security_opt"] == ["no-new-privileges:true"], name
    assert isinstance(service["pids_limit"], int) and 16 <= service["pids_limit"] <= 4096, name
    assert service["mem_limit"][-1] in "kmg", name
    assert service["sysctls"]["net.ipv6.conf.all.disable_ipv6"] == "1", name
    assert service["sysctls"]["net.ipv4.ping_group_range"] == "1 0", name
    assert "privileged" not in service and "network_mode" not in service, name
    assert "ports" not in service, name
    # The agent writes to its own log (PID 1's stdout): the engine rotates it, bounded.
    assert service["logging"] == {
        "driver": "json-file",
        "options": {"max-size": "4m", "max-file": "2"},
    }, name
    user = service["user"]
    assert not user.startswith("0:") or name == "agent", name


def test_every_rendered_service_is_hardened(examples_home: Path, workspace: Path) -> None:
    plans = all_plans(examples_home, workspace)
    assert len(plans) >= 10
    for plan in plans:
        spec = render(plan)
        for name, service in spec["services"].items():
            assert_hardened(f"{plan.bottle}/{name}", service)
            if name != "agent":
                assert service["read_only"] is True, name
                assert any(t.startswith("/tmp:") for t in service["tmpfs"]), name
                assert service["user"] == plan.sidecar_user
                assert not service["user"].startswith("0:")
        assert spec["services"]["agent"]["user"] == "1000:1000" or os.getuid() != 0
        assert spec["services"]["agent"]["networks"] == ["internal"]


def test_internal_network_has_no_host_address(examples_home: Path, workspace: Path) -> None:
    for plan in all_plans(examples_home, workspace):
        internal = render(plan)["networks"]["internal"]
        assert internal["internal"] is True
        assert internal["driver_opts"] == {"com.docker.network.bridge.inhibit_ipv4": "true"}


def test_sidecars_run_as_the_state_dirs_owner_never_root() -> None:
    if os.getuid() == 0:
        assert sidecar_user() == SIDECAR_FALLBACK_USER
    else:
        assert sidecar_user() == f"{os.getuid()}:{os.getgid()}"
    assert not sidecar_user().startswith("0:")


def test_limits_default_and_from_the_bottle(home: Path, workspace: Path) -> None:
    write(
        home / "bottles" / "base.md", "---\nlimits: {agent_pids: 64, sidecar_memory: 256m}\n---\n"
    )
    write(home / "bottles" / "child.md", "---\nextends: base\n---\n")
    default = render(plan_for(home, workspace))
    assert default["services"]["agent"]["pids_limit"] == 512
    assert default["services"]["agent"]["mem_limit"] == "2g"
    assert default["services"]["egress"]["pids_limit"] == 128
    assert default["services"]["egress"]["mem_limit"] == "512m"
    inherited = render(plan_for(home, workspace, "child"))
    assert inherited["services"]["agent"]["pids_limit"] == 64
    assert inherited["services"]["egress"]["mem_limit"] == "256m"
    assert inherited["services"]["agent"]["mem_limit"] == "2g"


@pytest.mark.parametrize(
    ("limits", "field"),
    [
        ("{agent_pids: 0}", "limits.agent_pids"),
        ("{agent_memory: lots}", "limits.agent_memory"),
        ("{sidecar_memory: '1t'}", "limits.sidecar_memory"),
        ("{agent_memory: 0g}", "limits.agent_memory"),
        ("{cpus: 2}", "limits.cpus"),
    ],
)
def test_bad_limits_name_the_field(home: Path, workspace: Path, limits: str, field: str) -> None:
    write(home / "bottles" / "bad.md", f"---\nlimits: {limits}\n---\n")
    with pytest.raises(ManifestError) as info:
        plan_for(home, workspace, "bad")
    assert field in str(info.value)


def root_owned(plan: BottlePlan) -> BottlePlan:
    """The plan as it is for a root-owned workspace (the tests may not run as root)."""
    return dataclasses.replace(plan, user="0:0")


def test_a_root_owned_workspace_is_refused_with_a_hint(home: Path, repo: Path) -> None:
    plan = root_owned(plan_for(home, repo))
    with pytest.raises(PlanError) as info:
        plan.require_user()
    assert "owned by root" in str(info.value)
    assert info.value.hint and "chown" in info.value.hint and "user: root" in info.value.hint


def test_root_agent_only_by_opt_in_and_still_without_capabilities(home: Path, repo: Path) -> None:
    write(home / "bottles" / "r.md", "---\nagent: {user: root}\n---\n")
    plan = root_owned(plan_for(home, repo, "r"))
    plan.require_user()  # allowed
    agent = render(plan)["services"]["agent"]
    assert agent["user"] == "0:0"
    assert agent["cap_drop"] == ["ALL"]
    assert agent["security_opt"] == ["no-new-privileges:true"]


def test_a_user_owned_workspace_runs_as_its_owner(home: Path, workspace: Path) -> None:
    plan = plan_for(home, workspace)
    plan.require_user()
    stat = workspace.stat()
    assert render(plan)["services"]["agent"]["user"] == f"{stat.st_uid}:{stat.st_gid}"


def test_agent_user_accepts_only_known_values(home: Path, workspace: Path) -> None:
    write(home / "bottles" / "u.md", "---\nagent: {user: admin}\n---\n")
    with pytest.raises(ManifestError, match=r"agent\.user"):
        plan_for(home, workspace, "u")


def test_prepare_state_hands_each_container_its_directories(
    home: Path, workspace: Path, tmp_path: Path
) -> None:
    plan = plan_for(home, workspace)
    state = StateDir(tmp_path / "state" / plan.slug)
    state.create()
    hardening.prepare_state(plan, state)
    if os.getuid() != 0:
        # Not root: bottle owns everything and its sidecars run as itself; nothing to hand over.
        assert plan.sidecar_user == f"{os.getuid()}:{os.getgid()}"
        assert all(
            (state.path / n).stat().st_uid == os.getuid() for n in hardening.SIDECAR_WRITABLE
        )
        return
    sidecar = tuple(int(x) for x in plan.sidecar_user.split(":"))
    for name in hardening.SIDECAR_WRITABLE:
        stat = (state.path / name).stat()
        assert (stat.st_uid, stat.st_gid) == sidecar, name
    stat = state.transcript.stat()
    assert (stat.st_uid, stat.st_gid) == WORKSPACE_OWNER
    assert (state.path / "agent").stat().st_uid == 0  # the agent reads it, never writes it


# -- the probe's plan and its answers ---------------------------------------------------------


def test_probe_plan_never_targets_a_real_outside_address() -> None:
    plan = checks.probe_plan(
        gateways={"bridge": ["172.17.0.1"], "bottle-x_internal": ["192.168.1.1"]},
        addresses=["10.1.2.3", "192.0.2.2"],
    )
    test_nets = [ipaddress.ip_network(n) for n in ("192.0.2.0/24", "198.51.100.0/24")]
    for _, host, _ in plan["tcp"]:
        address = ipaddress.ip_address(host)
        assert address.is_private or any(address in n for n in test_nets), host
    targets = [host for _, host, _ in plan["tcp"]]
    assert "172.17.0.1" in targets and "192.168.1.1" in targets and "10.1.2.3" in targets
    assert "169.254.169.254" in targets
    assert {"http://127.0.0.1/", "http://localhost/", "http://10.1.2.3:22/"} <= set(
        plan["proxy_targets"]
    )
    assert plan["dns"] and all(name.count(".") >= 1 for name in plan["dns"])


def test_host_addresses_are_this_machines_and_not_loopback() -> None:
    found = checks.host_addresses()
    if Path("/proc/net/fib_trie").exists():
        assert found, "a Linux host has at least one non-loopback address"
    assert all(not a.startswith("127.") for a in found)
    for address in found:
        with socket.socket() as sock:
            sock.bind((address, 0))  # only a local address can be bound


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        "{}",
        '[{"check": "x"}]',
        '[{"check": 1, "expected": "a", "seen": "b", "ok": true}]',
        '[{"check": "x", "expected": "a", "seen": "b", "ok": "yes"}]',
    ],
)
def test_hostile_probe_output_is_a_failed_check(text: str) -> None:
    results = checks.parse_results("agent", text)
    assert results and not all(r.ok for r in results)


@pytest.fixture
def listener() -> Iterator[int]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                server.accept()[0].close()
            except OSError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def test_probe_reports_a_connection_and_a_refusal_as_leaks(listener: int) -> None:
    connected = probe.tcp("here", "127.0.0.1", listener)
    assert connected["ok"] is False and connected["seen"] == "CONNECTED"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    refused = probe.tcp("here", "127.0.0.1", closed)
    assert refused["ok"] is False and "ECONNREFUSED" in refused["seen"]


def test_probe_output_is_json_the_host_parses() -> None:
    rows = probe.run({"mode": "sidecar"})
    parsed = checks.parse_results("egress", json.dumps(rows))
    assert [r.check for r in parsed] == [r["check"] for r in rows]
    assert {r.check for r in parsed} >= {"capabilities (CapEff)", "no_new_privs", "user (euid)"}


def test_check_of_an_unknown_instance_is_a_short_error(
    home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    done = run_cli_here("check", "nope", "--json", cwd=repo, monkeypatch=monkeypatch)
    assert done.returncode != 0
    assert "nope" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
