"""``bottle queue`` over a state dir with many decided proposals and a few pending.

    uv run python -m benchmarks.queue [--decided 1000] [--pending 5] [--runs 10]

Makes a throwaway BOTTLE_HOME with one running instance (its owner is this process, so
it counts as alive) whose queue holds ``--decided`` decided capability proposals of about
65 KB each (the most one may weigh; issue 9 filed 1000 of 75 KB) and ``--pending``
pending ones, then times ``bottle queue`` and ``bottle queue --json`` as whole CLI
processes: the operator waits for the process, not the function. Needs no Docker. Prints
the median, the slowest run, the CPU time and the bytes each printed, with the machine's
load (on a shared machine, wall time is mostly waiting for a core).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks._table import Figure
from benchmarks._timing import spread
from bottle.proposals import ProposalQueue

AGENT_IMAGE = "bottle-agent:bench"
SLUG = "bench-queue"


def dockerfile(target_bytes: int) -> str:
    lines = [f"FROM {AGENT_IMAGE}"]
    size = len(lines[0]) + 1
    n = 0
    while size < target_bytes:
        line = f"RUN echo step {n:06d} {'x' * 60}"
        lines.append(line)
        size += len(line) + 1
        n += 1
    return "\n".join(lines) + "\n"


def make_home(decided: int, pending: int) -> Path:
    home = Path(tempfile.mkdtemp(prefix="bottle-bench-queue-"))
    state = home / "state" / SLUG
    (state / "proposals").mkdir(parents=True)
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    metadata = {
        "slug": SLUG,
        "agent": "bench",
        "bottle": "bench",
        "provider": "shell",
        "cwd": str(home),
        "compose_project": f"bottle-{SLUG}",
        "images": {},
        "services": ["agent", "egress", "supervise"],
        "status": "running",
        "started_at": now,
        "updated_at": now,
        "pid": os.getpid(),
    }
    (state / "metadata.json").write_text(json.dumps(metadata))
    (state / "status").mkdir()
    (state / "status" / "supervise.json").write_text('{"service": "supervise"}\n')
    queue = ProposalQueue(state / "proposals")
    big = dockerfile(60 * 1024)  # near MAX_PAYLOAD_BYTES, with the longest justification
    template = queue.create(
        "capability-block", {"dockerfile": big}, "j" * 4000, base_ref=AGENT_IMAGE
    )
    queue.decide(template.id, approved=False, by="bench", reason="too big")
    data = json.loads(queue.path(template.id).read_text())
    # Copies of a decided file: what 1000 create + decide calls leave, written faster.
    for proposal_id in range(2, decided + 1):
        data["id"] = proposal_id
        queue.path(proposal_id).write_text(json.dumps(data, indent=2))
    queue.rebuild_index()  # as the sidecar does when it starts
    for n in range(pending):
        queue.create(
            "capability-block" if n % 2 else "egress-block",
            {"dockerfile": big} if n % 2 else {"host": f"h{n}.example.com", "paths": ["/v1/"]},
            f"pending number {n}",
            base_ref=AGENT_IMAGE,
        )
    return home


def time_cli(home: Path, args: list[str], runs: int) -> tuple[list[float], int, float]:
    bottle = Path(sys.executable).with_name("bottle")
    # Byte code cached, as an installed bottle has it (a sandbox may disable writing it).
    env = {**os.environ, "BOTTLE_HOME": str(home), "PYTHONPYCACHEPREFIX": str(home / "pyc")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    subprocess.run([str(bottle), *args], env=env, capture_output=True, check=True)  # warm
    times, size = [], 0
    cpu_before = _children_cpu()
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([str(bottle), *args], env=env, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
        size = len(done.stdout) + len(done.stderr)
    return times, size, (_children_cpu() - cpu_before) / runs


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def time_python(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - start)
    return times


FIGURES = ("P3",)


def figures(rounds: int) -> list[Figure]:
    """P3: ``bottle queue`` over 1000 decided proposals (and 5 pending)."""
    home = make_home(1000, 5)
    try:
        times, _size, cpu = time_cli(home, ["queue"], rounds * 2)
    finally:
        shutil.rmtree(home)
    mid = statistics.median(times)
    return [
        Figure(
            "P3",
            "`bottle queue`, 1000 decided proposals",
            "<= 300 ms",
            f"{mid * 1000:.0f} ms",
            mid <= 0.300,
            detail=f"queue {spread(times)}, {len(times)} runs, CPU {cpu * 1000:.0f} ms a run",
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decided", type=int, default=1000)
    parser.add_argument("--pending", type=int, default=5)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--keep", action="store_true", help="keep the BOTTLE_HOME")
    args = parser.parse_args()
    start = time.perf_counter()
    home = make_home(args.decided, args.pending)
    disk = sum(p.stat().st_size for p in home.rglob("*") if p.is_file())
    print(
        f"home {home}: {args.decided} decided + {args.pending} pending proposals, "
        f"{disk / 1e6:.0f} MB, made in {time.perf_counter() - start:.1f} s"
    )
    baseline = time_python(args.runs)
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
        f"'python -c pass' median {statistics.median(baseline) * 1000:.0f} ms"
    )
    try:
        for cli_args in (["queue"], ["queue", "--json"]):
            times, size, cpu = time_cli(home, cli_args, args.runs)
            print(
                f"bottle {' '.join(cli_args):14} median {statistics.median(times) * 1000:4.0f} ms, "
                f"max {max(times) * 1000:4.0f} ms, CPU {cpu * 1000:4.0f} ms, "
                f"{size} bytes printed ({args.runs} runs)"
            )
    finally:
        if not args.keep:
            shutil.rmtree(home)


if __name__ == "__main__":
    main()
