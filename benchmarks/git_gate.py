"""Clones and a push through git-gate vs straight to the same upstream, in one run.

    uv run python -m benchmarks.git_gate [--rounds 5] [--size-mb 50] [--commits 100]

A git server container (``tests/git_server``) on the instance's egress network holds a
repository of ``--size-mb`` MB of incompressible data, repacked as a real server keeps it
(one pack with a bitmap, ``git repack -adb``), served over SSH and over HTTPS (the test CA
given to bottle through ``BOTTLE_EXTRA_CA_CERTS``). For each transport, each round times, in
an interleaved order that flips every round: a clone by the agent through the gate with its
mirror emptied first (cold), a second one (warm mirror), and a clone straight from the
server by a container on the egress network with the same credential and transport. Every
clone is timed inside its container, around ``git clone`` alone; the gate's fetch of a cold
clone is read from its decision log (the rest of a cold clone is serving from the mirror).
A figure is the median over the rounds of each round's gate / direct ratio.
Then a push of ``--commits`` commits through the gate: total and the gate's scan time.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tests.integration.test_git_gate import cached_ca, server_cert

from benchmarks._home import bench_home, bench_work
from benchmarks._table import Figure, markdown
from bottle import Bottle
from bottle.engine.images import ensure_base
from bottle.instance import Instance
from bottle.settings import Settings

SERVER_DIR = Path(__file__).resolve().parents[1] / "tests" / "git_server"
IDENTITY = (
    "export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@b GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@b; "
)
MIRRORS = "/var/lib/git-gate/mirrors"
#: transport -> (the gate's remote name, the URL the agent and the direct client use).
TRANSPORTS = {
    "ssh": ("origin", "git@git.test:repo.git"),
    "https": ("web", "https://git.test/repo.git"),
}
#: Prints the seconds ``git clone`` took, measured in the container itself.
TIMED = 's=$(date +%s.%N); {clone} >&2 || exit 1; e=$(date +%s.%N); echo "$s $e"'


def keygen(path: Path) -> tuple[str, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_text(), " ".join(Path(f"{path}.pub").read_text().split()[:2])


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"docker {args[0]} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def seconds(out: str) -> float:
    begin, end = map(float, out.split()[-2:])
    return end - begin


class Bench:
    """One bottle with git-gate, its upstream server and a direct client beside it."""

    def __init__(self, instance: Instance, server: str, direct: str, token: str) -> None:
        self.instance = instance
        self.server = server
        self.direct = direct
        self.token = token
        project = instance.metadata.compose_project
        self.gate = docker(
            "ps", "-q", "--filter", f"label=com.docker.compose.project={project}",
            "--filter", "label=com.docker.compose.service=git-gate",
        ).strip()  # fmt: skip

    def agent(self, script: str) -> str:
        done = self.instance.exec(["sh", "-c", IDENTITY + script], capture=True)
        assert done.exit_code == 0, done.stderr
        return str(done.stdout)

    def empty_mirror(self, remote: str) -> None:
        """As a gate that never fetched: no objects, no refs (its config and hook stay)."""
        docker("exec", self.gate, "sh", "-c",
               f"cd {MIRRORS}/{remote}.git && rm -rf objects/pack/* objects/?? packed-refs "
               "refs/heads refs/tags && mkdir refs/heads refs/tags")  # fmt: skip

    def gate_clone(self, transport: str, name: str) -> float:
        url = TRANSPORTS[transport][1]
        clone = f"rm -rf ~/src/{name} && git clone -q {url} ~/src/{name}"
        return seconds(self.agent(TIMED.format(clone=clone)))

    def direct_clone(self, transport: str) -> float:
        url = TRANSPORTS[transport][1]
        if transport == "https":
            url = url.replace("https://", f"https://x:{self.token}@")
        clone = f"rm -rf /tmp/direct && git clone -q {url} /tmp/direct"
        return seconds(docker("exec", self.direct, "sh", "-c", TIMED.format(clone=clone)))

    def records(self, op: str) -> list[dict[str, object]]:
        path = self.instance.state.path / "logs" / "git-gate.jsonl"
        log = path.read_text().splitlines() if path.exists() else []  # none before a fetch
        return [json.loads(line) for line in log if f'"op":"{op}"' in line]

    def fetches(self, remote: str) -> list[dict[str, object]]:
        """The remote's fetch lines but a relayed listing's (the pack's line says it all)."""
        return [r for r in self.records("fetch") if r["remote"] == remote
                and "refs listed" not in str(r["reason"])]  # fmt: skip

    def cold_clone(self, transport: str, remote: str) -> tuple[float, float, bool, float]:
        """A clone through an emptied mirror: its seconds, the gate's fetch's, whether the
        relay carried it, and when the gate ended the relayed answer (0 if not relayed).
        Returns once the gate has stored it (the warm clone next would wait for that)."""
        self.empty_mirror(remote)
        before = len(self.fetches(remote))
        took = self.gate_clone(transport, "cold")
        line = self.pack_fetch(remote, before)
        reason = str(line["reason"])
        answered = re.search(r"answered in (\d+) ms", reason)
        fetch = int(str(line["duration_ms"])) / 1000
        return (
            took,
            fetch,
            reason.startswith("relayed:"),
            int(answered[1]) / 1000 if answered else 0,
        )

    def pack_fetch(self, remote: str, before: int) -> dict[str, object]:
        """The cold clone's fetch line: a relayed clone's is written once the gate has
        stored the pack, after the agent's answer ended, so wait for it (polled, 120 s)."""
        deadline = time.monotonic() + 120
        while len(fetches := self.fetches(remote)) <= before:
            if time.monotonic() > deadline:
                raise RuntimeError(f"no fetch line for {remote} after its cold clone")
            time.sleep(0.05)
        return fetches[before]

    def push(self, commits: int) -> tuple[float, dict[str, object]]:
        script = (
            "cd ~/src/warm-ssh && "
            f"for i in $(seq {commits}); do echo $i > n.txt; git add n.txt; "
            "git commit -qm c$i; done && " + TIMED.format(clone="git push -q origin main")
        )
        total = seconds(self.agent(script))
        return total, self.records("push")[-1]


def populate(server: str, size_mb: int) -> None:
    """Fill the server's repository, then pack it as a server keeps it (one pack, bitmap)."""
    docker(
        "exec", server, "sh", "-c",
        "set -e; until [ -x /srv/git/repo.git/hooks/pre-receive ]; do sleep 0.2; done; "
        "git config --global safe.directory '*'; t=$(mktemp -d); "
        "git clone -q /srv/git/repo.git $t; cd $t; "
        f"for i in 1 2 3 4 5; do head -c {size_mb // 5}M /dev/urandom > b$i; done; "
        "git add .; git -c user.name=u -c user.email=u@u commit -qm big; "
        "git push -q origin main; cd /; rm -rf $t; "
        "git -C /srv/git/repo.git repack -q -a -d -b; "
        "test $(ls /srv/git/repo.git/objects/pack/*.pack | wc -l) = 1; "
        "git -C /srv/git/repo.git count-objects -v | grep -qx 'count: 0'; "
        "chown -R git:git /srv/git/repo.git",
    )  # fmt: skip


def measure(rounds: int, size_mb: int, commits: int) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="bottle-bench-git-"))
    keys = tmp / "keys"
    keys.mkdir()
    _, host_pub = keygen(keys / "host_ed25519")
    client_key, client_pub = keygen(tmp / "client")
    (keys / "client.pub").write_text(client_pub + "\n")
    os.chmod(keys / "host_ed25519", 0o644)
    (tmp / "client").chmod(0o644)
    ca = cached_ca()
    server_cert(ca, keys)
    token = "bench-token-" + uuid.uuid4().hex
    bottle = (
        "---\nsupervise: false\ngit:\n  remotes:\n"
        "    - {name: origin, url: 'git@git.test:repo.git', key_ref: BENCH_KEY,\n"
        f"       host_key: '{host_pub}'}}\n"
        "    - {name: web, url: 'https://git.test/repo.git', token_ref: BENCH_TOKEN}\n---\n"
    )
    home = bench_home("gb", bottle)
    environ = {**os.environ, "BOTTLE_HOME": str(home), "BENCH_KEY": client_key,
               "BENCH_TOKEN": token, "BOTTLE_EXTRA_CA_CERTS": str(ca / "ca.pem")}  # fmt: skip
    sides = ("cold", "warm", "direct", "fetch", "relayed", "answered")
    out: dict[str, list[float]] = {
        key: [] for key in ("push", "scan", "gate_push", *(f"{side}_{transport}"
                            for transport in TRANSPORTS for side in sides))
    }  # fmt: skip
    settings = Settings.from_env(environ)
    work = bench_work(home)  # the agent's workspace: never the home itself
    with Bottle("gb", cwd=work, settings=settings, environ=environ).start() as instance:
        meta = instance.metadata
        net = f"{meta.compose_project}_egress"
        image = f"bottle-bench-git-server:{meta.slug}"
        base = ensure_base(Settings.from_env(), lambda _line: None)  # the sidecar has no apt
        docker("build", "-q", "-t", image, "--build-arg", f"BASE={base}",
               str(SERVER_DIR))  # fmt: skip
        server = docker("run", "-d", "--network", net, "--network-alias", "git.test",
                        "-v", f"{keys}:/keys:ro", "-e", f"GIT_TOKEN={token}",
                        image).strip()  # fmt: skip
        keep = "cp /key /tmp/k && chmod 600 /tmp/k && exec sleep infinity"
        direct = docker("run", "-d", "--network", net, "--entrypoint", "sh",
                        "-v", f"{tmp / 'client'}:/key:ro", "-v", f"{ca / 'ca.pem'}:/ca.pem:ro",
                        image, "-c", keep).strip()  # fmt: skip
        try:
            populate(server, size_mb)
            ssh = "ssh -i /tmp/k -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null"
            docker("exec", direct, "git", "config", "--global", "core.sshCommand", ssh)
            docker("exec", direct, "git", "config", "--global", "http.sslCAInfo", "/ca.pem")
            bench = Bench(instance, server, direct, token)
            for index in range(rounds):
                for transport, (remote, _url) in TRANSPORTS.items():

                    def cold(transport: str = transport, remote: str = remote) -> None:
                        took = bench.cold_clone(transport, remote)
                        for side, value in zip(
                            ("cold", "fetch", "relayed", "answered"), took, strict=True
                        ):
                            out[f"{side}_{transport}"].append(float(value))
                        out[f"warm_{transport}"].append(
                            bench.gate_clone(transport, f"warm-{transport}")
                        )

                    def straight(transport: str = transport) -> None:
                        out[f"direct_{transport}"].append(bench.direct_clone(transport))

                    # Flipped every round, so a drift of the machine's load hits both sides.
                    steps = (cold, straight) if index % 2 == 0 else (straight, cold)
                    for step in steps:
                        step()
            for _ in range(rounds):
                total, record = bench.push(commits)
                out["push"].append(total)
                out["scan"].append(int(str(record["scan_ms"])) / 1000)
                out["gate_push"].append(int(str(record["duration_ms"])) / 1000)
        finally:
            for container in (server, direct):
                subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False)
            subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)
    # The keys, and the agent's clones (hundreds of MB a run).
    for path in (tmp, home, work):
        shutil.rmtree(path, ignore_errors=True)
    return out


FIGURES = ("G1", "G1b", "G2", "G2b", "G3", "G4")


def _each(values: list[float]) -> str:
    return ", ".join(f"{v:.1f}" for v in values)


def figures(rounds: int, size_mb: int = 50, commits: int = 100) -> list[Figure]:
    runs = measure(rounds, size_mb, commits)
    med = {key: statistics.median(values) for key, values in runs.items()}
    rows = []
    for transport, suffix in (("ssh", ""), ("https", "b")):
        direct = med[f"direct_{transport}"]
        sides = (
            f"{transport}, median of {rounds}; direct {direct:.1f} s "
            f"({_each(runs[f'direct_{transport}'])})"
        )
        for fid, side, goal, limit in (
            ("G1", "cold", "<= 1.3x", 1.3),
            ("G2", "warm", "<= 1.0x", 1.0),
        ):
            key = f"{side}_{transport}"
            # Each round's gate clone against that round's direct one (run next to it): a
            # drift of the machine's load between rounds cancels out.
            paired = [g / d for g, d in zip(runs[key], runs[f"direct_{transport}"], strict=True)]
            ratio = statistics.median(paired)
            detail = (
                f"{sides}; gate {med[key]:.1f} s ({_each(runs[key])}); "
                f"per round {', '.join(f'{r:.2f}x' for r in paired)}"
            )
            if side == "cold":
                detail += (
                    f"; the gate's fetch (relayed: its pack relayed and stored) "
                    f"{med[f'fetch_{transport}']:.1f} s"
                )
                relayed = int(sum(runs[f"relayed_{transport}"]))
                detail += f"; relayed {relayed}/{rounds}"
                if relayed:  # of the cold clone's time, how much until the gate's answer ended
                    detail += f", its answer ended at {med[f'answered_{transport}']:.1f} s"
            rows.append(Figure(
                f"{fid}{suffix}", f"clone of {size_mb} MB over {transport} through git-gate, "
                f"{side} mirror, vs direct", goal, f"{ratio:.2f}x", ratio <= limit, ratio, detail,
            ))  # fmt: skip
    rows.sort(key=lambda row: row.id)
    return [
        *rows,
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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--commits", type=int, default=100)
    opts = parser.parse_args()
    print(markdown(figures(opts.rounds, opts.size_mb, opts.commits)), end="")


if __name__ == "__main__":
    main()
