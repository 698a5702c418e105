"""P6 and P8: what bottles cost at rest, and how big their images are (images cached).

    uv run python -m benchmarks.rest [--rounds 2] [--idle 10] [--window 60]

P6a: the resident memory (VmRSS) of every process of one instance's sidecars (egress and
supervise), once they serve and have been idle a few seconds; beside it their PSS (a page
both map counts half in each), and the floors: a bare ``python3``, plain ``mitmdump`` and a
bare MCP server, each alone in a container of the sidecar image.
P6b: host CPU of ``--idle`` idle instances over ``--window`` seconds, per instance: their
containers' own CPU (cgroup cpuacct) plus their containerd shims', plus what dockerd and
containerd spent over the same window minus what they spent over a window with none of
these instances running ("minus none"; other users of the daemon make that part noisy, so
the two windows alternate, once each per round).
P8: the sizes of the sidecar image and of the shell agent's image, as ``docker images``
counts them (base included).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks._home import bench_home
from benchmarks._table import Figure, markdown

AGENT = "rest"
BOTTLE = (
    "---\nagent: {provider: shell}\nsupervise: true\negress:\n  routes: [{host: pypi.org}]\n---\n"
)
RSS_GOAL_MB = 60.0
CPU_GOAL_PCT = 0.2
IMAGE_GOAL_MB = 150.0
SETTLE_S = 5.0
_TICK = os.sysconf("SC_CLK_TCK")


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


class Home:
    """One BOTTLE_HOME whose instances each run from a working directory of their own."""

    def __init__(self) -> None:
        self.path = bench_home(AGENT, BOTTLE)
        self.env = {**os.environ, "BOTTLE_HOME": str(self.path)}
        self.bottle = [sys.executable, "-m", "bottle_cli"]
        self._count = 0

    def start(self) -> str:
        self._count += 1
        workdir = self.path / f"work{self._count}"
        workdir.mkdir()
        if os.getuid() == 0:
            os.chown(workdir, 1000, 1000)
        done = _run([*self.bottle, "start", "--detach", AGENT], cwd=workdir, env=self.env)
        if done.returncode != 0:
            raise SystemExit(f"bottle start failed: {(done.stderr or done.stdout)[-800:]}")
        for meta in (self.path / "state").glob("*/metadata.json"):
            data = json.loads(meta.read_text())
            if Path(data["cwd"]) == workdir:
                return str(data["slug"])
        raise SystemExit("a started instance left no metadata")

    def stop(self, slugs: list[str]) -> None:
        if slugs:
            _run([*self.bottle, "stop", *slugs], env=self.env, timeout=600)

    def metadata(self, slug: str) -> dict[str, object]:
        data = json.loads((self.path / "state" / slug / "metadata.json").read_text())
        return dict(data)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _containers(slug: str) -> dict[str, str]:
    """Container id by compose service, of one instance."""
    listing = _run(
        ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=bottle.slug={slug}"]
    ).stdout.split()
    found = {}
    for cid in listing:
        role = _run(["docker", "inspect", "-f", '{{index .Config.Labels "bottle.role"}}', cid])
        found[role.stdout.strip()] = cid
    return found


def _pids(container: str) -> list[int]:
    top = _run(["docker", "top", container, "-o", "pid"]).stdout.split()[1:]
    return [int(p) for p in top if p.isdigit()]


def _proc_kb(pid: int, name: str, key: str) -> int:
    """The ``key:`` line's kB in ``/proc/PID/<name>``, 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/{name}").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _rss_kb(pid: int) -> int:
    return _proc_kb(pid, "status", "VmRSS")


def _pss_kb(pid: int) -> int:
    """Proportional set size: each shared page counted as 1/n in each of its n users (the
    two sidecars run the same image: its shared libraries' pages are in both RSS figures)."""
    return _proc_kb(pid, "smaps_rollup", "Pss")


def sidecar_rss(slug: str) -> dict[str, float]:
    """MB of resident memory per sidecar, every process of its container summed."""
    return {
        role: sum(_rss_kb(p) for p in _pids(cid)) / 1024
        for role, cid in _containers(slug).items()
        if role != "agent"
    }


def sidecar_pss(slug: str) -> dict[str, float]:
    """MB of proportional set size per sidecar, every process of its container summed."""
    return {
        role: sum(_pss_kb(p) for p in _pids(cid)) / 1024
        for role, cid in _containers(slug).items()
        if role != "agent"
    }


#: What any sidecar built on this image and these dependencies holds at rest, each alone in
#: a container of the sidecar image: the interpreter, mitmdump with mitmproxy's own addons
#: and nothing of bottle's, and an MCP server of the same SDK with one tool.
FLOORS = {
    "python3": ["python3", "-c", "import time; time.sleep(600)"],
    "mitmdump": [
        "mitmdump",
        *("--set", "listen_port=8080", "--set", "flow_detail=0"),
        *("--set", "termlog_verbosity=alert"),
    ],
    "mcp server": [
        "python3",
        "-c",
        "from mcp.server.fastmcp import FastMCP\n"
        "server = FastMCP('floor', host='0.0.0.0', port=8000)\n"
        "@server.tool()\n"
        "def ping() -> str:\n"
        "    return 'pong'\n"
        "server.run(transport='streamable-http')\n",
    ],
}


def floors(image: str) -> dict[str, tuple[float, float]]:
    """(RSS, PSS) in MB of each of :data:`FLOORS`, run side by side, once they have settled."""
    started: dict[str, str] = {}
    try:
        for name, argv in FLOORS.items():
            done = _run(
                [
                    *("docker", "run", "-d", "--label", "bottle.bench=rest", "--network", "none"),
                    *("--entrypoint", argv[0], image, *argv[1:]),
                ]
            )
            if done.returncode != 0:
                raise SystemExit(f"floor {name!r} did not start: {done.stderr[-800:]}")
            started[name] = done.stdout.strip()
        time.sleep(SETTLE_S)
        found = {}
        for name, cid in started.items():
            pids = _pids(cid)
            if not pids:
                logs = _run(["docker", "logs", cid])
                raise SystemExit(f"floor {name!r} exited: {(logs.stderr or logs.stdout)[-800:]}")
            rss = sum(_rss_kb(p) for p in pids) / 1024
            found[name] = (rss, sum(_pss_kb(p) for p in pids) / 1024)
        return found
    finally:
        for cid in started.values():
            _run(["docker", "rm", "-f", cid])


def _cpu_s_of_pid(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _cgroup_cpu_s(container: str) -> float:
    for path in (
        Path(f"/sys/fs/cgroup/cpuacct/docker/{container}/cpuacct.usage"),
        Path(f"/sys/fs/cgroup/cpu,cpuacct/docker/{container}/cpuacct.usage"),
    ):
        if path.is_file():
            return int(path.read_text()) / 1e9
    stat = Path(f"/sys/fs/cgroup/system.slice/docker-{container}.scope/cpu.stat")
    if stat.is_file():
        usage = stat.read_text().split()
        return int(usage[usage.index("usage_usec") + 1]) / 1e6
    raise SystemExit(f"no cgroup CPU accounting found for container {container[:12]}")


def _processes() -> dict[int, str]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found[int(entry.name)] = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
    return found


def _daemons() -> list[int]:
    return [
        pid
        for pid, cmd in _processes().items()
        if os.path.basename(cmd.split("\x00", 1)[0]) in {"dockerd", "containerd"}
    ]


def _shims(containers: list[str]) -> list[int]:
    ids = set(containers)
    found = []
    for pid, cmd in _processes().items():
        parts = cmd.split("\x00")
        if "shim" in parts[0] and "-id" in parts:
            index = parts.index("-id") + 1
            if index < len(parts) and parts[index] in ids:
                found.append(pid)
    return found


def _window(seconds: float, containers: list[str]) -> tuple[float, float]:
    """CPU seconds over ``seconds``: (the containers and their shims, dockerd + containerd)."""
    shims, daemons = _shims(containers), _daemons()

    def own() -> float:
        return sum(_cgroup_cpu_s(c) for c in containers) + sum(_cpu_s_of_pid(p) for p in shims)

    def daemon() -> float:
        return sum(_cpu_s_of_pid(p) for p in daemons)

    own0, daemon0 = own(), daemon()
    time.sleep(seconds)
    return own() - own0, daemon() - daemon0


def image_mb(ref: str) -> float:
    size = _run(["docker", "image", "inspect", "-f", "{{.Size}}", ref]).stdout.strip()
    return int(size) / 1e6


FIGURES = (
    "P6",
    "P8",
)


def figures(rounds: int, idle: int = 10, window: float = 60.0) -> list[Figure]:
    home = Home()
    slugs: list[str] = []
    try:
        slugs.append(home.start())  # also builds what is missing
        images = dict(home.metadata(slugs[0])["images"])  # type: ignore[call-overload]
        sizes = {name: image_mb(str(ref)) for name, ref in images.items()}
        rss: list[dict[str, float]] = []
        pss: list[dict[str, float]] = []
        floor: list[dict[str, tuple[float, float]]] = []
        own, daemon_with, daemon_none = [], [], []
        for _ in range(rounds):
            time.sleep(SETTLE_S)
            rss.append(sidecar_rss(slugs[0]))
            pss.append(sidecar_pss(slugs[0]))
            floor.append(floors(str(images["sidecar"])))
            home.stop(slugs)
            slugs = []
            none = _window(window, [])
            daemon_none.append(none[1])
            with ThreadPoolExecutor(max_workers=5) as pool:
                starts = [pool.submit(home.start) for _ in range(idle)]
            # Every instance that did start is stopped in ``finally``, even when one failed.
            slugs = [f.result() for f in starts if f.exception() is None]
            failed = [f.exception() for f in starts if f.exception() is not None]
            if failed:
                raise SystemExit(str(failed[0]))
            time.sleep(SETTLE_S)
            containers = [c for s in slugs for c in _containers(s).values()]
            spent = _window(window, containers)
            own.append(spent[0])
            daemon_with.append(spent[1])
    finally:
        home.stop(slugs)
        home.remove()
    totals = [sum(r.values()) for r in rss]
    total = statistics.median(totals)
    per = {name: statistics.median(r.get(name, 0.0) for r in rss) for name in rss[0]}
    pss_total = statistics.median(sum(r.values()) for r in pss)
    per_pss = {name: statistics.median(r.get(name, 0.0) for r in pss) for name in pss[0]}
    bare = {
        name: tuple(statistics.median(f[name][i] for f in floor) for i in (0, 1)) for name in FLOORS
    }
    floor_total = bare["mitmdump"][0] + bare["mcp server"][0]
    own_pct = statistics.median(own) / window / idle * 100
    extra = statistics.median(daemon_with) - statistics.median(daemon_none)
    daemon_pct = extra / window / idle * 100
    cpu_pct = own_pct + max(daemon_pct, 0.0)
    return [
        Figure(
            id="P6",
            name="one instance at rest: sidecar RSS in all",
            goal=f"<= {RSS_GOAL_MB:.0f} MB",
            measured=f"{total:.0f} MB",
            passed=total <= RSS_GOAL_MB,
            detail=f"{rounds} rounds, median; "
            + ", ".join(f"{name} {mb:.1f} MB" for name, mb in sorted(per.items())),
        ),
        Figure(
            id="P6",
            name="one instance at rest: sidecar PSS in all (shared pages split between users)",
            goal=f"<= {RSS_GOAL_MB:.0f} MB",
            measured=f"{pss_total:.0f} MB",
            passed=pss_total <= RSS_GOAL_MB,
            detail=f"{rounds} rounds, median, beside the RSS row (the goal's figure): "
            + ", ".join(f"{name} {mb:.1f} MB" for name, mb in sorted(per_pss.items()))
            + "; a page of the image's files both sidecars map counts half in each (other "
            "containers of the same image, other helpers' included, share it too)",
        ),
        Figure(
            id="P6",
            name="floor: plain mitmdump + a bare MCP server in the sidecar image, RSS in all",
            goal=f"<= {RSS_GOAL_MB:.0f} MB",
            measured=f"{floor_total:.0f} MB",
            passed=floor_total <= RSS_GOAL_MB,
            detail=f"{rounds} rounds, median, each alone in a container of the sidecar image "
            "(RSS / PSS): "
            + ", ".join(f"{name} {r:.1f} / {p:.1f} MB" for name, (r, p) in bare.items())
            + ". mitmdump has mitmproxy's default addons, none of bottle's; the MCP server is "
            "FastMCP with one tool on streamable HTTP. Above the goal, no egress on "
            "mitmproxy beside a supervise on the MCP SDK can reach it; the interpreter alone "
            f"is {bare['python3'][0]:.1f} MB of each",
        ),
        Figure(
            id="P6",
            name=f"host CPU, {idle} idle instances over {window:.0f} s, minus none",
            goal=f"<= {CPU_GOAL_PCT} % of a core per instance",
            measured=f"{cpu_pct:.3f} %",
            passed=cpu_pct <= CPU_GOAL_PCT,
            detail=f"{rounds} rounds, medians per instance: containers + shims "
            f"{own_pct:.3f} %, dockerd + containerd {daemon_pct:+.3f} % "
            f"({statistics.median(daemon_with):.2f} s with vs "
            f"{statistics.median(daemon_none):.2f} s without, shared with other users)",
        ),
        Figure(
            id="P8",
            name="sidecar image size",
            goal=f"<= {IMAGE_GOAL_MB:.0f} MB",
            measured=f"{sizes['sidecar']:.0f} MB",
            passed=sizes["sidecar"] <= IMAGE_GOAL_MB,
            detail=f"{images['sidecar']}, base included",
        ),
        Figure(
            id="P8",
            name="shell agent image size",
            goal=f"<= {IMAGE_GOAL_MB:.0f} MB",
            measured=f"{sizes['agent']:.0f} MB",
            passed=sizes["agent"] <= IMAGE_GOAL_MB,
            detail=f"{images['agent']}, base included",
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--idle", type=int, default=10)
    parser.add_argument("--window", type=float, default=60.0)
    args = parser.parse_args()
    print(markdown(figures(args.rounds, args.idle, args.window)), end="")


if __name__ == "__main__":
    main()
