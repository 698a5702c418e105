"""The egress process as the sidecar runs it: mitmdump with the addons registered in place,
started as a real process on loopback (no Docker).

The addons used to be a ``-s`` script, which mitmproxy stats every second for the proxy's
life (issue 14, P6: CPU at rest): the running process must refuse an unrouted request (the
guards are in its chain) and sleep when idle.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from bottle.runtime.egress import __main__ as egress_main
from tests.conftest import assert_idle, wait_for


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_egress_process_refuses_an_unrouted_request_and_sleeps_when_idle(
    tmp_path: Path,
) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text("routes: []\n")
    status = tmp_path / "status" / "egress.json"
    port = _free_port()
    argv = egress_main.mitmdump_argv(tmp_path / "conf", None)[1:]
    loopback = {
        "listen_host=0.0.0.0": "listen_host=127.0.0.1",
        "listen_port=8080": f"listen_port={port}",
    }
    argv = [loopback.get(part, part) for part in argv]
    env = {
        **os.environ,
        "BOTTLE_EGRESS_ROUTES": str(routes),
        "BOTTLE_EGRESS_STATUS": str(status),
        "BOTTLE_EGRESS_LOG": str(tmp_path / "logs" / "egress.jsonl"),
    }
    (tmp_path / "status").mkdir()
    (tmp_path / "logs").mkdir()
    code = f"from bottle.runtime.egress import master; master.run({argv!r})"
    log = (tmp_path / "egress.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=log, stderr=log)
    try:

        def ready() -> dict[str, object] | None:
            if proc.poll() is not None:
                raise AssertionError((tmp_path / "egress.log").read_text())
            try:
                return dict(json.loads(status.read_text()))
            except (OSError, ValueError):
                return None

        assert wait_for(ready, 60, "egress.json")["routes"] == 0
        proxy = urllib.request.ProxyHandler({"http": f"http://127.0.0.1:{port}"})
        opener = urllib.request.build_opener(proxy)
        try:
            opener.open("http://unrouted.test/x", timeout=30)
            raise AssertionError("an unrouted request went through")
        except urllib.error.HTTPError as refused:
            assert refused.code == 403  # the guards ran: the addons are in the chain
        try:  # no onboarding app in the chain, and egress's routes refuse it as any host
            opener.open("http://mitm.it/", timeout=30)
            raise AssertionError("mitm.it was answered")
        except urllib.error.HTTPError as refused:
            assert refused.code == 403
        assert_idle(proc.pid)  # the script watcher alone woke it once a second
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
            log.close()
