"""Lifecycle with real Docker: topology, state directory, preserve and cleanup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bottle import Bottle, InstanceStatus
from tests.conftest import wait_for, write
from tests.integration.conftest import cli, labelled, upstream

pytestmark = pytest.mark.docker

PROBE = r"""
curl -sS -o /dev/null -w 'allowed=%{http_code}\n' http://upstream.test/allowed/x
curl -sS -w '\nrefused=%{http_code}\n' http://refused.test/
curl -sS -o /dev/null -w 'wrongpath=%{http_code}\n' http://upstream.test/other
curl -sS --noproxy '*' -m 5 http://192.0.2.1/ >/dev/null 2>&1; echo "direct=$?"
getent hosts example.com >/dev/null; echo "dns=$?"
"""


def test_topology_and_state_through_the_library(bottle_home: Path, workdir: Path) -> None:
    instance = Bottle("it", cwd=workdir).start()
    with instance:
        meta = instance.metadata
        with upstream(meta.compose_project, image=meta.images["sidecar"]):
            result = instance.exec(["sh", "-c", PROBE], capture=True)
    out = result.stdout
    assert "allowed=200" in out, out + result.stderr
    assert "refused=403" in out and "refused.test" in out and "egress-block" in out
    assert "wrongpath=403" in out
    direct = int(out.split("direct=")[1].split()[0])
    assert direct != 0  # no route: the agent cannot reach an outside address directly
    assert "dns=2" in out  # outside names do not resolve on the internal network

    state = instance.state
    meta = instance.metadata
    assert meta.status == InstanceStatus.FINISHED
    assert meta.compose_project == f"bottle-{instance.slug}"
    assert state.compose_file.read_text().startswith("name: bottle-")
    assert state.compose_log.stat().st_size > 0
    assert state.transcript.is_dir()
    assert labelled("container", instance.slug) == []
    assert labelled("network", instance.slug) == []


#: The agent and two sidecars; supervise (uvicorn) says so as it shuts down.
STOPS_BOTTLE = "---\nagent: {provider: shell}\nsupervise: true\negress: {routes: []}\n---\n"


def test_stop_ends_every_container_by_its_signal_and_keeps_their_last_lines(
    bottle_home: Path, workdir: Path
) -> None:
    write(bottle_home / "bottles" / "stops.md", STOPS_BOTTLE)
    write(bottle_home / "agents" / "stops.md", "---\nbottle: stops\n---\n")
    instance = Bottle("stops", cwd=workdir).start()
    names = {instance.compose.container(state.service) for state in instance.compose.ps()}
    assert len(names) == 3  # the agent, egress and supervise
    since = time.time() - 1
    instance.stop()
    # The daemon's own account of the stop, read back once it is over.
    argv = ["docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}"]
    argv += ["--filter", f"label=bottle.slug={instance.slug}", "--filter", "type=container"]
    text = subprocess.run(
        [*argv, "--format", "{{json .}}"], capture_output=True, text=True, check=True
    )
    events = [json.loads(line) for line in text.stdout.splitlines()]
    for name in names:
        mine = [e for e in events if e["Actor"]["Attributes"].get("name") == name]
        kills = {e["Actor"]["Attributes"].get("signal") for e in mine if e["Action"] == "kill"}
        died = [e["Actor"]["Attributes"].get("exitCode") for e in mine if e["Action"] == "die"]
        # TERM alone, and it ended of it: docker's KILL after the grace period would show
        # as signal 9 and exit code 137.
        assert kills == {"15"}, (name, mine)
        assert len(died) == 1 and died[0] != "137", (name, mine)
    assert labelled("container", instance.slug) == []
    assert labelled("network", instance.slug) == []
    # Read once the containers stopped: what supervise said on its way out is in it.
    log = instance.state.compose_log.read_text().splitlines()
    assert any(line.startswith("supervise-1") and "Shutting down" in line for line in log)
    assert any("Finished server process" in line for line in log)


def test_cli_run_returns_exit_code_and_leaves_nothing(bottle_home: Path, workdir: Path) -> None:
    done = cli("run", "it", "--", "sh", "-c", "echo hello-from-agent; exit 7", cwd=workdir)
    assert done.returncode == 7, done.stderr
    assert "hello-from-agent" in done.stdout
    rows = json.loads(cli("ls", "--json", cwd=workdir).stdout)
    assert len(rows) == 1 and rows[0]["status"] == "finished"
    slug = rows[0]["slug"]
    assert labelled("container", slug) == [] and labelled("network", slug) == []
    log = (bottle_home / "state" / slug / "run.log").read_text()
    assert "exit 7" in log


def test_killed_session_is_preserved_then_cleaned_up(bottle_home: Path, workdir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bottle_cli", "run", "it", "--", "sleep", "300"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:

        def running() -> str | None:
            rows = json.loads(cli("ls", "--json", cwd=workdir).stdout)
            return rows[0]["slug"] if rows and rows[0]["status"] == "running" else None

        slug = wait_for(running, 300, "the instance to run", poll=0.5)
        time.sleep(1)
        proc.kill()
        proc.wait(timeout=10)
        rows = json.loads(cli("ls", "--json", cwd=workdir).stdout)
        assert rows[0]["status"] == "preserved"
        assert labelled("container", slug)  # preserved: still there to resume or inspect
        done = cli("cleanup", "--yes", cwd=workdir)
        assert done.returncode == 0, done.stderr
        assert labelled("container", slug) == [] and labelled("network", slug) == []
        assert (bottle_home / "state" / slug / "compose.log").stat().st_size > 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_interrupt_during_start_takes_everything_down(bottle_home: Path, workdir: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bottle_cli", "start", "it", "--detach"],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    state_root = bottle_home / "state"

    def containers_exist() -> str | None:
        slugs = [p.name for p in state_root.iterdir()] if state_root.is_dir() else []
        return slugs[0] if slugs and labelled("container", slugs[0]) else None

    slug = wait_for(containers_exist, 300, "containers to be created", poll=0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    meta = json.loads((state_root / slug / "metadata.json").read_text())
    # Healthchecks poll every second, so the interrupt lands while ``up --wait`` waits.
    assert proc.returncode == 130, err
    assert meta["status"] == "failed" and meta["error"] == "interrupted"
    assert labelled("container", slug) == [] and labelled("network", slug) == []


def test_two_starts_at_once_do_not_collide(bottle_home: Path, workdir: Path) -> None:
    results: list[object] = []

    def go() -> None:
        try:
            results.append(Bottle("it", cwd=workdir).start())
        except Exception as exc:  # pragma: no cover - reported below
            results.append(exc)

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    instances = [r for r in results if not isinstance(r, Exception)]
    try:
        assert len(instances) == 2, results
        assert instances[0].slug != instances[1].slug  # type: ignore[attr-defined]
    finally:
        for inst in instances:
            inst.stop()  # type: ignore[attr-defined]


def test_docker_unavailable_is_a_clear_error(bottle_home: Path, workdir: Path) -> None:
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent.sock"}
    done = subprocess.run(
        [sys.executable, "-m", "bottle_cli", "run", "it", "--", "true"],
        cwd=workdir,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "Docker daemon is not running" in done.stderr and "Traceback" not in done.stderr
    assert not (bottle_home / "state").exists() or not list((bottle_home / "state").iterdir())


def test_kill_9_mid_start_is_recoverable_by_stop_and_cleanup(
    bottle_home: Path, workdir: Path
) -> None:
    # A session of its own: the kill takes the compose child with it, as a terminal's
    # kill -9 of the job does; a compose left running would race the stop below.
    proc = subprocess.Popen(
        [sys.executable, "-m", "bottle_cli", "run", "it", "--", "sleep", "300"],
        cwd=workdir,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    state_root = bottle_home / "state"

    def starting_with_a_network() -> str | None:
        for path in state_root.iterdir() if state_root.is_dir() else []:
            meta = path / "metadata.json"
            if meta.is_file() and json.loads(meta.read_text())["status"] == "starting":
                return path.name if labelled("network", path.name) else None
        return None

    try:
        slug = wait_for(starting_with_a_network, 300, "a network while starting", poll=0.1)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    meta = json.loads((state_root / slug / "metadata.json").read_text())
    assert meta["status"] == "starting"  # what the kill left behind
    assert labelled("network", slug)

    stopped = cli("stop", slug, cwd=workdir)
    assert stopped.returncode == 0, stopped.stderr
    meta = json.loads((state_root / slug / "metadata.json").read_text())
    assert meta["status"] == "failed" and "cut short" in meta["error"]
    assert labelled("container", slug) == [] and labelled("network", slug) == []

    kept = cli("cleanup", "--yes", cwd=workdir)  # a failed one's state stays by default
    assert kept.returncode == 0 and (state_root / slug).is_dir(), kept.stderr
    done = cli("cleanup", "--yes", "--all", cwd=workdir)
    assert done.returncode == 0, done.stderr
    assert f"remove dir {slug}" in done.stderr
    assert not (state_root / slug).exists()
    assert labelled("container", slug) == [] and labelled("network", slug) == []


def test_ls_says_degraded_and_names_a_dead_sidecar(bottle_home: Path, workdir: Path) -> None:
    with Bottle("it", cwd=workdir).start() as instance:
        rows = json.loads(cli("ls", "--json", cwd=workdir).stdout)
        assert rows[0]["status"] == "running" and rows[0]["sidecars"] == {"egress": "running"}
        egress = subprocess.run(
            [
                "docker", "ps", "-q",
                "--filter", f"label=com.docker.compose.project={instance.metadata.compose_project}",
                "--filter", "label=com.docker.compose.service=egress",
            ],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert len(egress) == 1
        subprocess.run(["docker", "kill", *egress], capture_output=True, check=True)

        rows = json.loads(cli("ls", "--json", cwd=workdir).stdout)
        assert rows[0]["status"] == "degraded", rows
        assert rows[0]["recorded_status"] == "running"
        assert rows[0]["sidecars"] == {"egress": "exited"}
        assert instance.health()["egress"] == "exited"
        table = cli("ls", cwd=workdir, env_extra={"COLUMNS": "300"}).stdout
        assert "degraded (egress: exited)" in table


def test_cleanup_in_one_home_leaves_another_homes_instance_running(
    bottle_home: Path, workdir: Path, tmp_path: Path
) -> None:
    # bottle_home runs an instance; a second, empty BOTTLE_HOME on the same engine has no
    # state dir for it, so without the home label it would look like an orphan there.
    started = cli("start", "it", "--detach", cwd=workdir)
    assert started.returncode == 0, started.stderr
    [row] = json.loads(cli("ls", "--json", cwd=workdir).stdout)
    slug = row["slug"]
    try:
        assert row["status"] == "running", row
        containers, networks = labelled("container", slug), labelled("network", slug)
        assert containers and networks
        other = tmp_path / "other-home"
        other.mkdir()
        elsewhere = {"BOTTLE_HOME": str(other)}
        done = cli("cleanup", "--yes", "--all", cwd=workdir, env_extra=elsewhere)
        assert done.returncode == 0, done.stderr
        assert slug not in done.stderr + done.stdout
        assert labelled("container", slug) == containers
        assert labelled("network", slug) == networks
        assert json.loads(cli("ls", "--json", cwd=workdir).stdout)[0]["status"] == "running"
    finally:
        stopped = cli("stop", slug, cwd=workdir)
    assert stopped.returncode == 0, stopped.stderr
