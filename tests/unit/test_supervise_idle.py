"""An idle supervise server sleeps until something happens (issue 14, P6: CPU at rest).

uvicorn's own main loop wakes every 0.1 s for the server's whole life; bottle's waits for
the exit signal instead. The idle process itself is measured in
tests/integration/test_supervise_process.py.
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from bottle.runtime.supervise import server as supervise


def _server(tmp_path: Path) -> supervise._Server:
    async def app(scope: Any, receive: Any, send: Any) -> None:  # never called
        raise AssertionError(scope)

    config = supervise.Config.from_env(
        {"BOTTLE_PROPOSALS_DIR": str(tmp_path / "p"), "BOTTLE_STATUS_DIR": str(tmp_path / "s")}
    )
    return supervise._Server(uvicorn.Config(app, date_header=False), config)


def test_the_main_loop_never_polls_and_ends_at_the_exit_signal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = _server(tmp_path)
    server.config.load()
    naps: list[float] = []
    real_sleep = asyncio.sleep

    async def recorded(delay: float, *args: Any) -> Any:
        naps.append(delay)
        return await real_sleep(delay, *args)

    monkeypatch.setattr(asyncio, "sleep", recorded)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(server.main_loop())
        for _ in range(1000):  # until it waits on something: nothing else is ready to run
            await real_sleep(0)
            if not loop._ready:  # type: ignore[attr-defined]
                break
        # Parked, and on no timer: nothing but the signal can wake the loop (a poll of any
        # period, or a wait with a timeout, would be a timer here).
        assert not waiting.done() and not loop._ready  # type: ignore[attr-defined]
        assert loop._scheduled == []  # type: ignore[attr-defined]
        server.handle_exit(signal.SIGTERM, None)
        await asyncio.wait_for(waiting, timeout=30)

    asyncio.run(run())
    assert server.should_exit and naps == []


def test_an_exit_signal_before_the_loop_starts_is_not_lost(tmp_path: Path) -> None:
    server = _server(tmp_path)
    server.config.load()
    server.handle_exit(signal.SIGTERM, None)
    asyncio.run(asyncio.wait_for(server.main_loop(), timeout=30))
