"""The supervise server as the sidecar runs it: ``python -m bottle.runtime.supervise``.

What only a process shows (no Docker needed): the environment it is configured by, the
status file it writes once its socket listens (its pid and the port it got), MCP over a real
socket, and a SIGTERM that takes the status file away. The tools themselves are
tests/unit/test_supervise_server.py, in-process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from bottle.proposals import ProposalQueue
from tests.conftest import assert_idle, wait_for


@contextmanager
def supervise_process(root: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A supervise process on loopback, its files under ``root``, once it is ready."""
    status_file = root / "status" / "supervise.json"
    env = {
        **os.environ,
        "BOTTLE_SUPERVISE_HOST": "127.0.0.1",
        "BOTTLE_SUPERVISE_PORT": "0",
        "BOTTLE_PROPOSALS_DIR": str(root / "proposals"),
        "BOTTLE_STATUS_DIR": str(root / "status"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "bottle.runtime.supervise"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(status_file.exists, 30, "supervise.json")
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_an_idle_server_process_barely_wakes(tmp_path: Path) -> None:
    """(issue 14, P6: CPU at rest; moved here from tests/unit/test_supervise_idle.py)"""
    with supervise_process(tmp_path) as proc:
        # uvicorn's loop alone made about 30 in 3 s here (10 a second).
        assert_idle(proc.pid)


def test_the_process_listens_reports_serves_bounds_and_stops(tmp_path: Path) -> None:
    status_dir = tmp_path / "status"
    status_dir.mkdir()
    status_file = status_dir / "supervise.json"
    status_file.write_text('{"stale": true}')  # from an "earlier run": must not count
    (tmp_path / "proposals").mkdir()
    # Filed before this server started: its index is rebuilt at start, and it counts.
    ProposalQueue(tmp_path / "proposals").create("egress-block", {"host": "old.test"}, "j")
    (tmp_path / "proposals" / "pending").joinpath(".complete").unlink()
    env = {
        **os.environ,
        "BOTTLE_SUPERVISE_HOST": "127.0.0.1",
        "BOTTLE_SUPERVISE_PORT": "0",
        "BOTTLE_SUPERVISE_WAIT": "0",
        "BOTTLE_SUPERVISE_MAX_PENDING": "2",
        "BOTTLE_PROPOSALS_DIR": str(tmp_path / "proposals"),
        "BOTTLE_STATUS_DIR": str(status_dir),
    }
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bottle.runtime.supervise"], env=env, stdout=log, stderr=log
    )
    try:

        def ready() -> dict[str, Any] | None:
            if proc.poll() is not None:
                raise AssertionError(
                    f"supervise exited {proc.returncode}:\n{(tmp_path / 'server.log').read_text()}"
                )
            try:
                data = json.loads(status_file.read_text())
            except (OSError, ValueError):
                return None
            return data if data.get("pid") == proc.pid else None

        status = wait_for(ready, 30, "supervise.json from the new server")
        assert status["service"] == "supervise" and status["path"] == "/mcp"
        assert status["port"] > 0 and status["wait_s"] == 0
        url = f"http://127.0.0.1:{status['port']}/mcp"

        async def session() -> tuple[list[str], str, str]:
            with anyio.fail_after(30):
                async with (
                    streamable_http_client(url) as (read, write, _),
                    ClientSession(read, write) as client,
                ):
                    await client.initialize()
                    names = [t.name for t in (await client.list_tools()).tools]
                    first = await client.call_tool(
                        "egress-block", {"host": "a.test", "justification": "j"}
                    )
                    over = await client.call_tool(
                        "egress-block", {"host": "b.test", "justification": "j"}
                    )
            assert not first.isError and over.isError
            said = [r.content[0] for r in (first, over)]
            assert isinstance(said[0], TextContent) and isinstance(said[1], TextContent)
            return names, said[0].text, said[1].text

        names, first, over = anyio.run(session)
        assert len(names) == 6 and "egress-block" in names
        assert first.startswith("pending, id 2")  # BOTTLE_SUPERVISE_WAIT=0: no wait
        assert "max_pending 2" in over  # BOTTLE_SUPERVISE_MAX_PENDING, and the old one counted

        proc.send_signal(signal.SIGTERM)
        # uvicorn re-raises the signal once it has shut down cleanly
        assert proc.wait(timeout=10) in (0, -signal.SIGTERM)
        assert not status_file.exists()
    finally:
        if proc.poll() is None:  # pragma: no cover
            proc.kill()
            proc.wait(timeout=10)
        log.close()


#: supervise as its container's PID 1 has it (under tini too, when tini forwards the signal
#: and uvicorn raises it again): a SIGTERM does not kill it, its own shutdown ends it.
AS_PID_1 = """
import atexit, pathlib, signal, sys
signal.raise_signal = lambda sig: None
atexit.register(pathlib.Path(sys.argv[1]).write_text, "teardown ran")
from bottle.runtime.supervise.server import main
main()
"""


def test_a_stopped_server_exits_without_the_interpreter_teardown(tmp_path: Path) -> None:
    """The teardown of FastMCP's modules took 0.4-0.7 s of every ``bottle stop`` (issue 14,
    P2); once the server has shut down nothing is left to write."""
    status_file = tmp_path / "status" / "supervise.json"
    marker = tmp_path / "teardown"
    env = {
        **os.environ,
        "BOTTLE_SUPERVISE_HOST": "127.0.0.1",
        "BOTTLE_SUPERVISE_PORT": "0",
        "BOTTLE_PROPOSALS_DIR": str(tmp_path / "proposals"),
        "BOTTLE_STATUS_DIR": str(tmp_path / "status"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-c", AS_PID_1, str(marker)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for(status_file.exists, 30, "supervise.json")
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")[-2000:]
    assert not status_file.exists()  # its shutdown ran
    assert not marker.exists()  # the interpreter's teardown did not
