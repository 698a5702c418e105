"""Clones and a push through git-gate vs straight to the same SSH upstream, in one run.

    uv run python benchmarks/git_gate.py [--size-mb 50] [--commits 100]

An SSH git server container (``tests/git_server``) on the instance's egress network holds a
repository of ``--size-mb`` MB of incompressible data. Reports: a clone by the agent through
the gate (cold mirror), a second one (warm mirror), and a clone by a container on the egress
network straight from the server (the same key), with the ratios; then a push of
``--commits`` commits through the gate: total time and the gate's scan time (from its log).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from _home import bench_home  # benchmarks/ is on sys.path when a script in it runs

from bottle import Bottle

SERVER_DIR = Path(__file__).resolve().parents[1] / "tests" / "git_server"
IDENTITY = (
    "export GIT_AUTHOR_NAME=a GIT_AUTHOR_EMAIL=a@b GIT_COMMITTER_NAME=a GIT_COMMITTER_EMAIL=a@b; "
)


def keygen(path: Path) -> tuple[str, str]:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path.read_text(), " ".join(Path(f"{path}.pub").read_text().split()[:2])


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=50)
    parser.add_argument("--commits", type=int, default=100)
    opts = parser.parse_args()
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
    with Bottle("gb", cwd=home).start() as instance:
        meta = instance.metadata
        net = f"{meta.compose_project}_egress"
        image = f"bottle-bench-git-server:{meta.slug}"
        docker(
            "build",
            "-q",
            "-t",
            image,
            "--build-arg",
            f"BASE={meta.images['sidecar']}",
            str(SERVER_DIR),
        )
        server = docker(
            "run",
            "-d",
            "--network",
            net,
            "--network-alias",
            "git.test",
            "-v",
            f"{keys}:/keys:ro",
            image,
        ).strip()
        try:
            docker(
                "exec",
                server,
                "sh",
                "-c",
                "set -e; until [ -x /srv/git/repo.git/hooks/pre-receive ]; do sleep 0.2; done; "
                "git config --global safe.directory '*'; t=$(mktemp -d); "
                "git clone -q /srv/git/repo.git $t; cd $t; "
                f"for i in 1 2 3 4 5; do head -c {opts.size_mb // 5}M /dev/urandom > b$i; done; "
                "git add .; git -c user.name=u -c user.email=u@u commit -qm big; "
                "git push -q origin main; chown -R git:git /srv/git/repo.git",
            )

            def agent_clone(name: str) -> float:
                start = time.perf_counter()
                done = instance.exec(
                    ["sh", "-c", f"git clone -q git@git.test:repo.git ~/src/{name}"], capture=True
                )
                assert done.exit_code == 0, done.stderr
                return time.perf_counter() - start

            cold = agent_clone("cold")
            warm = agent_clone("warm")
            direct_script = (
                "cp /key /tmp/k && chmod 600 /tmp/k && "
                "GIT_SSH_COMMAND='ssh -i /tmp/k -o StrictHostKeyChecking=no "
                "-o UserKnownHostsFile=/dev/null' "
                "git clone -q git@git.test:repo.git /tmp/direct"
            )
            start = time.perf_counter()
            docker(
                "run",
                "--rm",
                "--network",
                net,
                "--entrypoint",
                "sh",
                "-v",
                f"{tmp / 'client'}:/key:ro",
                image,
                "-c",
                direct_script,
            )
            direct = time.perf_counter() - start

            script = (
                IDENTITY + "cd ~/src/warm && "
                f"for i in $(seq {opts.commits}); do echo $i > n.txt; git add n.txt; "
                "git commit -qm c$i; done && "
                "start=$(date +%s.%N) && git push -q origin main && end=$(date +%s.%N) && "
                'echo "$start $end"'
            )
            out = instance.exec(["sh", "-c", script], capture=True)
            assert out.exit_code == 0, out.stderr
            begin, end = map(float, out.stdout.split())
            log = (instance.state.path / "logs" / "git-gate.jsonl").read_text().splitlines()
            push = [json.loads(line) for line in log if '"op":"push"' in line][-1]
        finally:
            subprocess.run(["docker", "rm", "-f", server], capture_output=True, check=False)
            subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)
    print(
        f"clone of {opts.size_mb} MB: direct {direct:.2f}s, through the gate cold {cold:.2f}s "
        f"({cold / direct:.2f}x), warm {warm:.2f}s ({warm / direct:.2f}x)"
    )
    scan = push["scan_ms"] / 1000
    print(
        f"push of {opts.commits} commits: total {end - begin:.2f}s, scan {scan:.2f}s, "
        f"gate total {push['duration_ms'] / 1000:.2f}s"
    )


if __name__ == "__main__":
    main()
