"""Requests through egress vs straight to the same upstream, in one run.

    uv run python benchmarks/egress.py [--requests 200]

An upstream container on the instance's egress network serves a small body and a 100 MB
body over plain HTTP. The agent requests through egress; a second container on the egress
network (the sidecar side) requests directly. Reports the added median latency per small
request and the throughput of the 100 MB download both ways.
"""

from __future__ import annotations

import argparse
import os
import subprocess

from _home import bench_home  # benchmarks/ is on sys.path when a script in it runs

from bottle import Bottle

SERVER = r"""
import http.server as h
BIG = b"x" * (100 * 1024 * 1024)
class H(h.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = BIG if self.path.startswith("/big") else b"ok"
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers()
        self.wfile.write(body)
h.ThreadingHTTPServer(("", 80), H).serve_forever()
"""

CLIENT = r"""
import statistics, sys, time, urllib.request
n = int(sys.argv[1])
opener = urllib.request.build_opener()
times = []
for _ in range(n):
    t = time.perf_counter(); opener.open("http://upstream.test/small").read(); times.append(time.perf_counter() - t)
t = time.perf_counter(); size = len(opener.open("http://upstream.test/big").read()); big = time.perf_counter() - t
print(statistics.median(times) * 1000, size / big / 1e6)
"""

BOTTLE = "---\nsupervise: false\negress:\n  routes: [{host: upstream.test, private: true}]\n---\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    n = parser.parse_args().requests
    home = bench_home("eb", BOTTLE)
    os.environ["BOTTLE_HOME"] = str(home)
    with Bottle("eb", cwd=home).start() as instance:
        meta = instance.metadata
        net = f"{meta.compose_project}_egress"
        image = meta.images["sidecar"]
        up = subprocess.run(
            [
                "docker",
                "run",
                "-d",
                "--network",
                net,
                "--network-alias",
                "upstream.test",
                image,
                "python",
                "-c",
                SERVER,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
        try:
            via = instance.exec(["python3", "-c", CLIENT, str(n)], capture=True)
            direct = subprocess.run(
                ["docker", "run", "--rm", "--network", net, image, "python", "-c", CLIENT, str(n)],
                check=True,
                capture_output=True,
                text=True,
            )
        finally:
            subprocess.run(["docker", "rm", "-f", up], capture_output=True, check=False)
    lat_via, tp_via = map(float, via.stdout.split())
    lat_direct, tp_direct = map(float, direct.stdout.split())
    print(
        f"small request median: via egress {lat_via:.2f} ms, direct {lat_direct:.2f} ms, "
        f"added {lat_via - lat_direct:.2f} ms"
    )
    print(
        f"100 MB download: via egress {tp_via:.0f} MB/s, direct {tp_direct:.0f} MB/s, "
        f"ratio {tp_via / tp_direct:.2f}"
    )


if __name__ == "__main__":
    main()
