"""P1, P1b, P2, P5: bottle run vs plain compose, sidecar boot, stop, approve to route live.

    uv run python -m benchmarks.lifecycle [--rounds 5]

P1, interleaved: ``bottle run bench -- true`` (plan, state dir, up --wait, exec,
compose.log, down), then plain ``docker compose up -d --wait`` + ``exec agent true`` +
``down`` of the very docker-compose.yml that run wrote (images cached). P1b: what most of
the gap is, the sidecars' boot: egress and supervise of that file started together (compose
``up`` of the two), each one's container CPU when its status file appears. P2: ``bottle
stop`` of a running instance (compose.log saved, transcript kept), beside its floors, each
of a like instance: the engine's own calls for the same work from a running program (stop;
then the logs and the removal of the containers beside the networks'), and ``docker compose
down`` (which keeps no log). Both report the CPU the bottle process used. P5: from the
operator's ``approve`` of an egress-block proposal to egress confirming the new table live
(its status file names the new routes' digest: approve returns only then).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from benchmarks._home import bench_home, bench_work
from benchmarks._table import Figure, markdown
from benchmarks._timing import bottle_argv, cli_env, clock, interleaved, median, spread, timed

if TYPE_CHECKING:
    from bottle import Settings
    from bottle.instance import Instance

FIGURES = ("P1", "P1b", "P2", "P5")
BOTTLE = (
    "---\nagent: {provider: shell}\nsupervise: true\negress:\n  routes: [{host: pypi.org}]\n---\n"
)


def figures(rounds: int, only: set[str] | None = None) -> list[Figure]:
    from bottle import Bottle, Settings
    from bottle.proposals import ProposalQueue

    want = only or set(FIGURES)
    home = bench_home("bench", BOTTLE)
    work = bench_work(home)  # the agent's workspace: never the home itself
    env = cli_env(home)
    bottle = bottle_argv()
    settings = Settings.from_env({**os.environ, "BOTTLE_HOME": str(home)})
    rows: list[Figure] = []
    try:
        if want & {"P1", "P1b"}:
            timed([*bottle, "run", "bench", "--", "true"], env, cwd=work)  # warm images, byte code
        if "P1" in want:

            def plain() -> float:
                newest = max((home / "state").iterdir(), key=lambda p: p.stat().st_mtime)
                compose = [
                    "docker",
                    "compose",
                    "-f",
                    str(newest / "docker-compose.yml"),
                    "-p",
                    f"bench-plain-{newest.name}",
                ]
                started = time.perf_counter()
                subprocess.run(
                    [*compose, "up", "-d", "--wait"], check=True, capture_output=True, cwd=newest
                )
                subprocess.run(
                    [*compose, "exec", "-T", "agent", "true"], check=True, capture_output=True
                )
                subprocess.run([*compose, "down", "-v", "-t", "5"], check=True, capture_output=True)
                return time.perf_counter() - started

            cpus: list[float] = []

            def ours_run() -> float:
                took, cpu = _timed_cpu([*bottle, "run", "bench", "--", "true"], env, cwd=work)
                cpus.append(cpu)
                return took

            ours, peer = interleaved(rounds, ours_run, plain)
            ratio = median(ours) / median(peer)
            rows.append(
                Figure(
                    "P1",
                    "`bottle run shell -- true` vs compose up/exec/down",
                    "<= 1.10x",
                    f"{ratio:.2f}x",
                    ratio <= 1.10,
                    ratio=ratio,
                    detail=f"interleaved, {rounds} rounds: bottle run "
                    f"{spread(ours, 's')}, compose {spread(peer, 's')}; bottle run's CPU "
                    f"(docker children included) {spread(cpus, 's')}",
                )
            )
        if "P1b" in want:
            rows.append(_boot_figure(max((home / "state").iterdir(), key=_mtime), rounds))
        if "P2" in want:
            rows.append(_stop_figure(bottle, env, work, settings, rounds))
        if "P5" in want:
            with Bottle("bench", cwd=work, settings=settings).start() as instance:
                queue = ProposalQueue(instance.state.path / "proposals")
                lives = []
                for n in range(rounds * 2):
                    filed = queue.create(
                        "egress-block", {"host": f"p5-{n}.example", "paths": ["/"]}, "bench"
                    )
                    lives.append(clock(partial(instance.proposals.approve, filed.id)))
            rows.append(
                Figure(
                    "P5",
                    "approve -> route live",
                    "<= 100 ms",
                    f"{median(lives) * 1000:.0f} ms",
                    median(lives) <= 0.100,
                    detail=f"approve {spread(lives)}, {len(lives)} proposals, each "
                    "until egress's status file confirmed the new routes",
                )
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    return rows


def _stop_figure(
    bottle: list[str], env: dict[str, str], work: Path, settings: Settings, rounds: int
) -> Figure:
    """P2: ``bottle stop``, and its floors, each of a like instance, interleaved."""
    from bottle import Bottle

    stops, cpus = [], []
    engine: list[float] = []
    down: list[float] = []
    # One stop first, not counted: the home's byte code cache starts empty, and an
    # installed bottle has its byte code (P1 warms it the same way).
    warm = Bottle("bench", cwd=work, settings=settings).start()
    timed([*bottle, "stop", warm.slug], env)
    for _ in range(max(1, min(rounds, 3))):
        instance = Bottle("bench", cwd=work, settings=settings).start()
        took, cpu = _timed_cpu([*bottle, "stop", instance.slug], env)
        stops.append(took)
        cpus.append(cpu)
        assert instance.state.compose_log.exists()
        for floor, times in ((_engine_down, engine), (_compose_down, down)):
            other = Bottle("bench", cwd=work, settings=settings).start()
            times.append(clock(partial(floor, other)))
            other.stop()  # a no-op but for its state: nothing is left
    return Figure(
        "P2",
        "`bottle stop` of a running instance",
        "<= 1.0 s",
        f"{median(stops):.2f} s",
        median(stops) <= 1.0,
        detail=f"stop {spread(stops, 's')}, {len(stops)} instances, its CPU "
        f"(docker children included) {spread(cpus, 's')}; floors, interleaved: the "
        f"engine's calls for the same work {spread(engine, 's')}, compose down (no log "
        f"kept) {spread(down, 's')}",
    )


def _docker(*argv: str) -> str:
    return subprocess.run(["docker", *argv], check=True, capture_output=True, text=True).stdout


def _engine_down(instance: Instance) -> None:
    """What ``bottle stop`` asks of the engine, from a program already running: list, stop,
    then the logs and the containers' removal beside the networks' (the engine removes
    networks one at a time, and a stopped container holds none)."""
    project = instance.metadata.compose_project
    label = f"label=com.docker.compose.project={project}"
    ids = _docker("ps", "--all", "--quiet", "--no-trunc", "--filter", label).split()
    networks = _docker("network", "ls", "--quiet", "--no-trunc", "--filter", label).split()
    _docker("stop", "--time", "5", *ids)
    removal = subprocess.Popen(["docker", "network", "rm", *networks], stdout=subprocess.DEVNULL)
    logs = [
        subprocess.Popen(
            ["docker", "logs", "--timestamps", cid],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for cid in ids
    ]
    for child in logs:
        child.communicate()
    _docker("rm", "--force", "--volumes", *ids)
    if removal.wait() != 0:
        raise RuntimeError(f"the networks of {project} stayed")


def _compose_down(instance: Instance) -> None:
    """``docker compose down`` of the instance's own file: one command, no log kept."""
    compose = ["compose", "-f", str(instance.state.compose_file)]
    compose += ["-p", instance.metadata.compose_project]
    _docker(*compose, "down", "--volumes", "--timeout", "5")


#: The sidecars P1b starts, in the bench bottle.
BOOTED = ("egress", "supervise")


def _mtime(path: Path) -> float:
    return path.stat().st_mtime


def _boot_figure(state: Path, rounds: int) -> Figure:
    """P1b: egress and supervise of ``state``'s compose file booted together, as a start boots
    them (the agent left out): each one's container CPU and seconds until its status file."""
    from benchmarks.egress import _cpu_seconds

    compose = ["docker", "compose", "-f", str(state / "docker-compose.yml")]
    compose += ["-p", f"bench-boot-{state.name}"]
    cpu: dict[str, list[float]] = {name: [] for name in BOOTED}
    ready: dict[str, list[float]] = {name: [] for name in BOOTED}
    for _ in range(rounds):
        files = {name: state / "status" / f"{name}.json" for name in BOOTED}
        for file in files.values():
            file.unlink(missing_ok=True)
        started = time.perf_counter()
        try:
            subprocess.run([*compose, "up", "-d", *BOOTED], check=True, capture_output=True)
            ids = {
                name: subprocess.run(
                    [*compose, "ps", "-q", name], check=True, capture_output=True, text=True
                ).stdout.strip()
                for name in BOOTED
            }
            waiting = set(BOOTED)
            while waiting and time.perf_counter() - started < 60:
                for name in sorted(waiting):
                    if files[name].exists():
                        ready[name].append(time.perf_counter() - started)
                        used = _cpu_seconds(ids[name])
                        if used is not None:
                            cpu[name].append(used)
                        waiting.discard(name)
                time.sleep(0.01)
            if waiting:
                raise RuntimeError(f"P1b: {', '.join(sorted(waiting))} never became ready")
        finally:
            subprocess.run([*compose, "down", "-v", "-t", "3"], check=True, capture_output=True)
    total = [sum(both) for both in zip(*cpu.values(), strict=True)] if all(cpu.values()) else []
    parts = [
        f"{name}: CPU {spread(cpu[name], 's') if cpu[name] else 'not readable'}, ready after "
        f"{spread(ready[name], 's')}"
        for name in BOOTED
    ]
    return Figure(
        "P1b",
        "sidecar boot CPU (egress + supervise, until ready)",
        "see issue",
        f"{median(total):.2f} s" if total else "not measured",
        bool(total),
        detail=f"{rounds} rounds, each container's cgroup CPU when its status file appeared "
        f"(from compose up): {'; '.join(parts)}",
    )


def _timed_cpu(argv: list[str], env: dict[str, str], **kwargs: object) -> tuple[float, float]:
    """Seconds ``argv`` took, and the CPU seconds it and its children used: the machine is
    shared, and wall time alone mixes our cost with everyone else's."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    took = timed(argv, env, **kwargs)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return took, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    print(markdown(figures(parser.parse_args().rounds)))
