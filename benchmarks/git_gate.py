"""Clones and a push through git-gate vs straight to the same SSH upstream, in one run.

    uv run python -m benchmarks.git_gate [--rounds 3] [--size-mb 50] [--commits 100]

An SSH git server container (``tests/git_server``) on the instance's egress network holds a
repository of ``--size-mb`` MB of incompressible data. Each round: a clone by the agent
through the gate with its mirror emptied first (cold), a second one (warm mirror), and a
clone straight from the server by a container on the egress network (the same key). Every
clone is timed inside its container, around ``git clone`` alone. Then a push of
``--commits`` commits through the gate: total time and the gate's scan time (its log).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from benchmarks._home import bench_home
from benchmarks._table import Figure, markdown

from bottle import Bottle
from bottle.engine.images import ensure_base
from bottle.instance import Instance
from bottle.settings import Settings

SERVER_DIR = Path(__file__).resolve().parents[1] / "tests" / "git_server"
IDENTITY = (
    "export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@b GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@b; "
)
MIRROR = "/var/lib/git-gate/mirrors/origin.git"
#: Prints the seconds ``git clone`` took, measured in the container itself.
TIMED = 's=$(date +%s.%N); {clone} >&2 || exit 1; e=$(date +%s.%N); echo "$s $e"'


def keygen(path: Path) -> tuple[str, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_text(), " ".join(Path(f"{path}.pub").read_text().split()[:2])


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def seconds(out: str) -> float:
    begin, end = map(float, out.split()[-2:])
    return end - begin


class Bench:
    """One bottle with git-gate, its upstream server and a direct client beside it."""

    def __init__(self, instance: Instance, server: str, direct: str) -> None:
        self.instance = instance
        self.server = server
        self.direct = direct
        project = instance.metadata.compose_project
        self.gate = docker(
            "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
            "--filter", "label=com.docker.compose.service=git-gate",
        ).strip()  # fmt: skip

    def agent(self, script: str) -> str:
        done = self.instance.exec(["sh", "-c", IDENTITY + script], capture=True)
        assert done.exit_code == 0, done.stderr
        return str(done.stdout)

    def empty_mirror(self) -> None:
        """As a gate that never fetched: no objects, no refs (its config and hook stay)."""
        docker("exec", self.gate, "sh", "-c",
               f"cd {MIRROR} && rm -rf objects/pack/* objects/?? packed-refs refs/heads "
               "refs/tags && mkdir refs/heads refs/tags")  # fmt: skip

    def gate_clone(self, name: str) -> float:
        clone = f"rm -rf ~/src/{name} && git clone -q git@git.test:repo.git ~/src/{name}"
        return seconds(self.agent(TIMED.format(clone=clone)))

    def direct_clone(self) -> float:
        clone = "rm -rf /tmp/direct && git clone -q git@git.test:repo.git /tmp/direct"
        return seconds(docker("exec", self.direct, "sh", "-c", TIMED.format(clone=clone)))

    def push(self, commits: int) -> tuple[float, dict[str, int]]:
        script = (
            "cd ~/src/warm && "
            f"for i in $(seq {commits}); do echo $i > n.txt; git add n.txt; "
            "git commit -qm c$i; done && " + TIMED.format(clone="git push -q origin main")
        )
        total = seconds(self.agent(script))
        log = (self.instance.state.path / "logs" / "git-gate.jsonl").read_text().splitlines()
        record: dict[str, int] = [json.loads(line) for line in log if '"op":"push"' in line][-1]
        return total, record


def measure(rounds: int, size_mb: int, commits: int) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="bottle-bench-git-"))
    keys = tmp / "keys"
    keys.mkdir()
    _, host_pub = keygen(keys / "host_ed25519")
    client_key, client_pub = keygen(tmp / "client")
    (keys / "client.pub").write_text(client_pub + "\n")
    os.chmod(keys / "host_ed25519", 0o644)
    (tmp / "client").chmod(0o644)
    bottle = (
        "---\nsupervise: false\ngit:\n  remotes:\n"
        "    - {name: origin, url: 'git@git.test:repo.git', key_ref: BENCH_KEY,\n"
        f"       host_key: '{host_pub}'}}\n---\n"
    )
    home = bench_home("gb", bottle)
    os.environ |= {"BOTTLE_HOME": str(home), "BENCH_KEY": client_key}
    out: dict[str, list[float]] = {"cold": [], "warm": [], "direct": [], "push": [], "scan": []}
    out["gate_push"] = []
    with Bottle("gb", cwd=home).start() as instance:
        meta = instance.metadata
        net = f"{meta.compose_project}_egress"
        image = f"bottle-bench-git-server:{meta.slug}"
        base = ensure_base(Settings.from_env(), lambda _line: None)  # the sidecar has no apt
        docker("build", "-q", "-t", image, "--build-arg", f"BASE={base}",
               str(SERVER_DIR))  # fmt: skip
        server = docker("run", "-d", "--network", net, "--network-alias", "git.test",
                        "-v", f"{keys}:/keys:ro", image).strip()  # fmt: skip
        keep = "cp /key /tmp/k && chmod 600 /tmp/k && exec sleep infinity"
        direct = docker("run", "-d", "--network", net, "--entrypoint", "sh",
                        "-v", f"{tmp / 'client'}:/key:ro", image, "-c", keep).strip()  # fmt: skip
        try:
            docker(
                "exec", server, "sh", "-c",
                "set -e; until [ -x /srv/git/repo.git/hooks/pre-receive ]; do sleep 0.2; done; "
                "git config --global safe.directory '*'; t=$(mktemp -d); "
                "git clone -q /srv/git/repo.git $t; cd $t; "
                f"for i in 1 2 3 4 5; do head -c {size_mb // 5}M /dev/urandom > b$i; done; "
                "git add .; git -c user.name=u -c user.email=u@u commit -qm big; "
                "git push -q origin main; chown -R git:git /srv/git/repo.git",
            )  # fmt: skip
            ssh = "ssh -i /tmp/k -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
            docker("exec", direct, "git", "config", "--global", "core.sshCommand", ssh)
            bench = Bench(instance, server, direct)
            for _ in range(rounds):
                bench.empty_mirror()
                out["cold"].append(bench.gate_clone("cold"))
                out["warm"].append(bench.gate_clone("warm"))
                out["direct"].append(bench.direct_clone())
            for _ in range(rounds):
                total, record = bench.push(commits)
                out["push"].append(total)
                out["scan"].append(record["scan_ms"] / 1000)
                out["gate_push"].append(record["duration_ms"] / 1000)
        finally:
            for container in (server, direct):
                subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
            subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)
    return out


FIGURES = (
    "G1",
    "G2",
    "G3",
    "G4",
)


def figures(rounds: int, size_mb: int = 50, commits: int = 100) -> list[Figure]:
    runs = measure(rounds, size_mb, commits)
    med = {key: statistics.median(values) for key, values in runs.items()}
    cold, warm = med["cold"] / med["direct"], med["warm"] / med["direct"]
    each = ", ".join(f"{v:.1f}" for v in runs["direct"])
    sides = f"median of {rounds}; direct {med['direct']:.1f} s ({each})"
    return [
        Figure(
            "G1", f"clone of {size_mb} MB through git-gate, cold mirror, vs direct", "<= 1.3x",
            f"{cold:.2f}x", cold <= 1.3, cold,
            f"{sides}; gate {med['cold']:.1f} s ({', '.join(f'{v:.1f}' for v in runs['cold'])})",
        ),
        Figure(
            "G2", f"clone of {size_mb} MB through git-gate, warm mirror, vs direct", "<= 1.0x",
            f"{warm:.2f}x", warm <= 1.0, warm,
            f"{sides}; gate {med['warm']:.1f} s ({', '.join(f'{v:.1f}' for v in runs['warm'])})",
        ),
        Figure(
            "G3", f"push of {commits} commits through git-gate: total", "report",
            f"{med['push']:.2f} s", True, None,
            f"median of {rounds}; in the gate {med['gate_push']:.2f} s",
        ),
        Figure(
            "G4", f"push of {commits} commits: the gate's policy check and scan", "report",
            f"{med['scan']:.2f} s", True, None, f"median of {rounds}",
        ),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--commits", type=int, default=100)
    opts = parser.parse_args()
    print(markdown(figures(opts.rounds, opts.size_mb, opts.commits)), end="")


if __name__ == "__main__":
    main()
