"""egress's mitmdump ends with its own exit code and skips the interpreter's teardown."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

RUN = "import sys; from bottle.runtime.egress.__main__ import run_mitmdump; run_mitmdump(sys.argv[1:])"


def mitmdump(*options: str) -> list[str]:
    """A fresh interpreter running egress's mitmdump with ``--set`` of each option."""
    return [sys.executable, "-c", RUN, "mitmdump", *(a for o in options for a in ("--set", o))]


def test_a_refused_option_still_fails() -> None:
    done = subprocess.run(
        mitmdump("listen_host=127.0.0.1", "listen_port=notanumber"),
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode != 0
    assert done.returncode == 1
    assert "listen_port" in done.stderr + done.stdout


def test_sigterm_ends_it_cleanly_with_code_0(tmp_path: Path) -> None:
    # The addons are registered in place (bottle.runtime.egress.master): give them the
    # files the sidecar has, or their first error ends mitmdump at start.
    (tmp_path / "routes.yaml").write_text("routes: []\n")
    (tmp_path / "status").mkdir()
    (tmp_path / "logs").mkdir()
    env = {
        **os.environ,
        "BOTTLE_EGRESS_ROUTES": str(tmp_path / "routes.yaml"),
        "BOTTLE_EGRESS_STATUS": str(tmp_path / "status" / "egress.json"),
        "BOTTLE_EGRESS_LOG": str(tmp_path / "logs" / "egress.jsonl"),
    }
    child = subprocess.Popen(
        mitmdump(
            "listen_host=127.0.0.1",
            "listen_port=0",
            f"confdir={tmp_path / 'conf'}",
            "termlog_verbosity=info",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 120
        for line in child.stdout:
            if "listening" in line.lower() or time.monotonic() > deadline:
                break
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
