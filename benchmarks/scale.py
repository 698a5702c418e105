"""P7: many bottles started at once on this machine (images cached).

    uv run python -m benchmarks.scale [--rounds 1] [--bottles 20]

Each round starts ``--bottles`` bottles at the same moment, each from its own ``bottle``
process and working directory (one BOTTLE_HOME, as one user would). Each process: start
detached, one request from the agent through its egress to an upstream container on that
bottle's egress network (never outside), stop. The figure is the wall time from the first
start to the last clean stop, and how many of the bottles did all three.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks._home import bench_home
from benchmarks._table import Figure, markdown

AGENT = "scale"
BOTTLE = (
    "---\nagent: {provider: shell}\nsupervise: true\n"
    "egress:\n  routes: [{host: upstream.test, private: true}]\n---\n"
)
UPSTREAM = r"""
import http.server as h
class H(h.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_GET(self):
        body = b"hello from upstream"
        self.send_response(200); self.send_header("content-length", str(len(body)))
        self.end_headers(); self.wfile.write(body)
h.ThreadingHTTPServer(("", 80), H).serve_forever()
"""
GOAL_S = 90.0


def _run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload, no-any-return]


def _bottle(home: Path) -> tuple[list[str], dict[str, str]]:
    return [sys.executable, "-m", "bottle_cli"], {**os.environ, "BOTTLE_HOME": str(home)}


def one_bottle(home: Path, workdir: Path, upstream: str) -> dict[str, object]:
    """Start, request through egress, stop: what went well and how long each took."""
    bottle, env = _bottle(home)
    found: dict[str, object] = {"ok": False}
    started = time.perf_counter()
    up = _run([*bottle, "start", "--detach", AGENT], cwd=workdir, env=env, timeout=600)
    found["start_s"] = time.perf_counter() - started
    slug = _slug(home, workdir)
    if slug is None:
        found["error"] = f"start: {_said(up)}"
        return found
    network = f"bottle-{slug}_egress"
    try:
        if up.returncode != 0:
            found["error"] = f"start: {_said(up)}"
            return found
        joined = _run(
            ["docker", "network", "connect", "--alias", "upstream.test", network, upstream]
        )
        if joined.returncode != 0:
            # What the start said and what the engine has of it, to tell a lost network
            # from a start that reported success too early.
            nets = _run(["docker", "network", "ls", "--filter", f"label=bottle.slug={slug}"])
            found["error"] = (
                f"connect upstream: {joined.stderr.strip()}; start said: "
                f"{_said(up)}; networks: {nets.stdout.split()}"
            )
            return found
        asked = _run(
            [*bottle, "exec", slug, "--", "curl", "-sS", "--max-time", "20",
             "http://upstream.test/"],
            env=env, timeout=120,
        )  # fmt: skip
        found["request_ok"] = asked.returncode == 0 and "hello from upstream" in asked.stdout
        if not found["request_ok"]:
            found["error"] = f"request: {_said(asked)}"
    finally:
        _run(["docker", "network", "disconnect", "--force", network, upstream])
        stopping = time.perf_counter()
        down = _run([*bottle, "stop", slug], env=env, timeout=300)
        found["stop_s"] = time.perf_counter() - stopping
        left = _run(["docker", "ps", "-aq", "--filter", f"label=bottle.slug={slug}"])
        found["stopped"] = down.returncode == 0 and not left.stdout.strip()
        if not found["stopped"]:
            found.setdefault("error", f"stop: {_said(down)}")
    found["ok"] = bool(found.get("request_ok")) and bool(found["stopped"])
    return found


def _said(done: subprocess.CompletedProcess[str]) -> str:
    """The CLI's error line (and what follows it, briefly), else the output's tail."""
    text = (done.stderr or done.stdout).strip()
    at = text.find("error:")
    return text[at : at + 400] if at >= 0 else text[-400:]


def _slug(home: Path, workdir: Path) -> str | None:
    """The instance started from ``workdir`` (each bottle has its own)."""
    for meta in (home / "state").glob("*/metadata.json"):
        data = json.loads(meta.read_text())
        if Path(data.get("cwd", "")) == workdir:
            return str(data["slug"])
    return None


def one_round(count: int) -> tuple[float, list[dict[str, object]]]:
    home = bench_home(AGENT, BOTTLE)
    workdirs = []
    for index in range(count):
        workdir = home / f"work{index}"
        workdir.mkdir()
        if os.getuid() == 0:
            os.chown(workdir, 1000, 1000)
        workdirs.append(workdir)
    bottle, env = _bottle(home)
    # Warm: images built and cached, so the round measures starting, not building.
    # From a directory of its own: its finished instance must not be taken (by cwd) for
    # the round's bottle of that directory, which would then be left running.
    warmdir = home / "warm"
    warmdir.mkdir()
    if os.getuid() == 0:
        os.chown(warmdir, 1000, 1000)
    warm = _run([*bottle, "run", AGENT, "--", "true"], cwd=warmdir, env=env, timeout=1800)
    if warm.returncode != 0:
        raise SystemExit(f"warm-up failed: {warm.stderr.strip()[-800:]}")
    image = _sidecar_image(home)
    upstream = f"bottle-bench-upstream-{uuid.uuid4().hex[:8]}"
    made = _run(["docker", "run", "-d", "--name", upstream, "--label", "bottle.bench=scale",
                 image, "python", "-c", UPSTREAM])  # fmt: skip
    if made.returncode != 0:
        raise SystemExit(f"the upstream did not start: {made.stderr.strip()}")
    try:
        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=count) as pool:
            results = list(pool.map(lambda w: one_bottle(home, w, upstream), workdirs))
        wall = time.perf_counter() - started
    finally:
        _run(["docker", "rm", "-f", upstream])
        shutil.rmtree(home, ignore_errors=True)
    return wall, results


def _sidecar_image(home: Path) -> str:
    for meta in (home / "state").glob("*/metadata.json"):
        return str(json.loads(meta.read_text())["images"]["sidecar"])
    raise SystemExit("the warm-up left no metadata")


FIGURES = ("P7",)


def figures(rounds: int, bottles: int = 20) -> list[Figure]:
    rows = []
    for index in range(rounds):
        wall, results = one_round(bottles)
        done = sum(1 for r in results if r["ok"])
        starts = sorted(float(r["start_s"]) for r in results)  # type: ignore[arg-type]
        errors = sorted({str(r["error"]) for r in results if "error" in r})
        detail = (
            f"round {index + 1}/{rounds}: {bottles} `bottle start -d` + `exec curl` through "
            f"egress + `stop`, concurrently; start median {starts[len(starts) // 2]:.1f} s, "
            f"slowest {starts[-1]:.1f} s"
            + (f"; errors: {'; '.join(errors)[:600]}" if errors else "")
        )
        rows.append(
            Figure(
                id="P7",
                name=f"{bottles} bottles started concurrently, each a request through egress",
                goal=f"{bottles}/{bottles}, <= {GOAL_S:.0f} s",
                measured=f"{done}/{bottles} in {wall:.0f} s",
                passed=done == bottles and wall <= GOAL_S,
                detail=detail,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--bottles", type=int, default=20)
    args = parser.parse_args()
    print(markdown(figures(args.rounds, args.bottles)), end="")


if __name__ == "__main__":
    main()
