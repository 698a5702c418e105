"""The bounds of a proposal queue: pending count, filing rate, and the index behind them.

The supervise tools are driven in-process (``Supervise.file``), so each bound's answer to the
agent is checked word for word, along with the directory it must leave untouched.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp.server.fastmcp.exceptions import ToolError

from bottle.errors import ApplyError
from bottle.proposals import ProposalQueue
from bottle.proposals.limits import Limits, TokenBucket
from bottle.proposals.rows import MAX_FILE_BYTES
from bottle.runtime.supervise.server import Config, Supervise


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (the index too) with its content."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != ".decide.lock"
    }


def _supervise(tmp_path: Path, clock: Clock | None = None, **limits: int) -> Supervise:
    config = Config(proposals_dir=tmp_path / "proposals", wait_s=0, limits=Limits(**limits))
    supervise = Supervise(config)
    if clock is not None:
        supervise.rate = TokenBucket(config.limits.per_minute, config.limits.burst, clock=clock)
    return supervise


def _file(supervise: Supervise, host: str) -> str:
    async def run() -> str:
        return await supervise.file("egress-block", {"host": host}, "the build needs it")

    return anyio.run(run)


def test_the_pending_bound_answers_and_writes_nothing(tmp_path: Path) -> None:
    supervise = _supervise(tmp_path, max_pending=2, burst=10)
    assert _file(supervise, "a.example.com").startswith("pending, id 1")
    assert _file(supervise, "b.example.com").startswith("pending, id 2")
    before = _tree(supervise.queue.directory)
    with pytest.raises(ToolError) as refused:
        _file(supervise, "c.example.com")
    message = str(refused.value)
    assert "you have 2 proposals waiting for the operator" in message
    assert "max_pending 2" in message
    assert "Nothing was queued" in message and "proposal-status" in message
    assert _tree(supervise.queue.directory) == before
    # A decision frees a place.
    supervise.queue.decide(1, approved=False, by="op", reason="no")
    assert _file(supervise, "c.example.com").startswith("pending, id 3")


def test_the_rate_bound_says_when_to_try_again(tmp_path: Path) -> None:
    clock = Clock()
    supervise = _supervise(tmp_path, clock, per_minute=6, burst=2)
    _file(supervise, "a.example.com")
    _file(supervise, "b.example.com")
    before = _tree(supervise.queue.directory)
    with pytest.raises(ToolError) as refused:
        _file(supervise, "c.example.com")
    message = str(refused.value)
    assert "faster than this bottle allows (6 per minute, 2 at once)" in message
    assert "Try again in 10 seconds" in message and "proposal-status" in message
    assert _tree(supervise.queue.directory) == before
    clock.now += 9
    with pytest.raises(ToolError, match="Try again in 1 seconds"):
        _file(supervise, "c.example.com")
    clock.now += 1
    assert _file(supervise, "c.example.com").startswith("pending, id 3")


def test_a_refused_filing_costs_no_token(tmp_path: Path) -> None:
    supervise = _supervise(tmp_path, Clock(), per_minute=1, burst=1)
    with pytest.raises(ToolError, match="refused"):
        _file(supervise, "not a host")
    assert _file(supervise, "ok.example.com").startswith("pending, id 1")


def test_the_size_bound_answers_and_writes_nothing(tmp_path: Path) -> None:
    supervise = _supervise(tmp_path)

    async def run() -> str:
        huge = "FROM x\n" + "RUN true\n" * 20000
        return await supervise.file("capability-block", {"dockerfile": huge}, "tools")

    with pytest.raises(ToolError, match=r"more than the \d+ allowed.*nothing was queued"):
        anyio.run(run)
    proposals = tmp_path / "proposals"
    assert not proposals.exists() or _tree(proposals) == {}


def test_limits_from_the_environment() -> None:
    config = Config.from_env(
        {
            "BOTTLE_SUPERVISE_MAX_PENDING": "3",
            "BOTTLE_SUPERVISE_PER_MINUTE": "4",
            "BOTTLE_SUPERVISE_BURST": "2",
        }
    )
    assert config.limits == Limits(max_pending=3, per_minute=4, burst=2)
    assert Config.from_env({}).limits == Limits()
    for bad in ("0", "1.5", "x"):
        with pytest.raises(SystemExit, match="BOTTLE_SUPERVISE_BURST"):
            Config.from_env({"BOTTLE_SUPERVISE_BURST": bad})


# ------------------------------------------------------------------------- the index


def _queue(tmp_path: Path) -> ProposalQueue:
    return ProposalQueue(tmp_path / "proposals")


def _create(queue: ProposalQueue, n: int, **kw: Any) -> int:
    return queue.create("egress-block", {"host": f"h{n}.example.com"}, "j", **kw).id


def _markers(queue: ProposalQueue) -> list[str]:
    return sorted(os.listdir(queue.directory / "pending"))


def test_the_index_follows_create_approve_and_reject(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    ids = [_create(queue, n) for n in range(4)]
    assert _markers(queue) == [".complete", "1", "2", "3", "4"]
    queue.decide(ids[0], approved=True, by="op", applied=True)
    queue.decide(ids[2], approved=False, by="op", reason="no")
    assert _markers(queue) == [".complete", "2", "4"]
    assert queue.indexed_pending() == [2, 4]
    assert [p.id for p in queue.list("pending").proposals] == [2, 4]
    assert [p.id for p in queue.list().proposals] == [1, 2, 3, 4]


def test_listing_pending_reads_no_decided_file(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    for n in range(5):
        _create(queue, n)
    for proposal_id in (1, 2, 3):
        queue.decide(proposal_id, approved=False, by="op", reason="no")
    # Decided files made unreadable: a listing of pending ones must not even open them.
    for proposal_id in (1, 2, 3):
        queue.path(proposal_id).write_text("{not json")
    listing = queue.list("pending")
    assert [p.id for p in listing.proposals] == [4, 5]
    assert listing.problems == ()


def test_a_crash_after_the_decision_leaves_a_stale_marker_that_is_skipped(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    for n in range(3):
        _create(queue, n)
    decided = queue.decide(1, approved=False, by="op", reason="no")
    # The crash: the decision is on disk, the marker was never removed.
    (queue.directory / "pending" / "1").touch()
    assert queue.get(1) == decided
    assert [p.id for p in queue.list("pending").proposals] == [2, 3]
    # At the bound, create checks the markers and drops the stale one instead of refusing.
    assert _create(queue, 9, max_pending=3) == 4
    assert _markers(queue) == [".complete", "2", "3", "4"]


def test_a_crash_before_the_proposal_file_leaves_a_marker_without_a_file(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    _create(queue, 0)
    (queue.directory / "pending" / "2").touch()  # marker made, then the sidecar died
    assert [p.id for p in queue.list("pending").proposals] == [1]
    assert queue.rebuild_index() == 1
    assert _markers(queue) == [".complete", "1"]
    assert _create(queue, 1) == 2


def test_a_crash_after_reserving_an_id_is_reported(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    _create(queue, 0)
    (queue.directory / "pending" / "2").touch()
    queue.path(2).touch()
    old = queue.path(2).stat().st_mtime - 60
    os.utime(queue.path(2), (old, old))
    listing = queue.list("pending")
    assert [p.id for p in listing.proposals] == [1]
    assert any("2.json: empty file" in problem for problem in listing.problems)


def test_without_an_index_listing_scans_and_the_sidecar_rebuilds_it(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    for n in range(3):
        _create(queue, n)
    queue.decide(2, approved=True, by="op", applied=True)
    # A queue written before the index existed (or by an older sidecar).
    for name in os.listdir(queue.directory / "pending"):
        os.unlink(queue.directory / "pending" / name)
    os.rmdir(queue.directory / "pending")
    assert queue.indexed_pending() is None
    assert [p.id for p in queue.list("pending").proposals] == [1, 3]
    assert queue.rebuild_index() == 2
    assert _markers(queue) == [".complete", "1", "3"]
    # A marker without .complete is not trusted.
    os.unlink(queue.directory / "pending" / ".complete")
    os.unlink(queue.directory / "pending" / "3")
    assert [p.id for p in queue.list("pending").proposals] == [1, 3]


def test_a_link_in_place_of_the_index_is_not_followed(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    _create(queue, 0)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "1").write_text("keep me")
    (elsewhere / ".complete").touch()
    for name in os.listdir(queue.directory / "pending"):
        os.unlink(queue.directory / "pending" / name)
    os.rmdir(queue.directory / "pending")
    (queue.directory / "pending").symlink_to(elsewhere)
    assert queue.indexed_pending() is None  # the link is not an index: a full scan
    assert [p.id for p in queue.list("pending").proposals] == [1]
    queue.decide(1, approved=False, by="op", reason="no")
    assert (elsewhere / "1").read_text() == "keep me"
    with pytest.raises(ApplyError, match="not a directory"):
        _create(queue, 1)


def test_a_malformed_or_oversized_file_is_reported_and_the_rest_listed(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    for n in range(4):
        _create(queue, n)
    queue.path(2).write_text("{not json")
    data = json.loads(queue.path(3).read_text())
    data["justification"] = "x" * (MAX_FILE_BYTES + 1)
    queue.path(3).write_text(json.dumps(data))
    listing = queue.list("pending")
    assert [p.id for p in listing.proposals] == [1, 4]
    assert len(listing.problems) == 2
    assert "2.json: not JSON" in listing.problems[0]
    assert "3.json" in listing.problems[1] and "more than the" in listing.problems[1]
    # An unreadable pending file still counts against the bound: the operator must see it.
    with pytest.raises(ApplyError, match="max_pending 4"):
        _create(queue, 9, max_pending=4)


def test_the_rebuilt_index_names_an_unreadable_file_so_it_is_reported(tmp_path: Path) -> None:
    queue = _queue(tmp_path)
    for n in range(3):
        _create(queue, n)
    queue.decide(3, approved=False, by="op", reason="no")
    queue.path(2).write_text("{not json")
    assert queue.rebuild_index() == 2
    assert _markers(queue) == [".complete", "1", "2"]
    listing = queue.list("pending")
    assert [p.id for p in listing.proposals] == [1]
    assert len(listing.problems) == 1 and "2.json: not JSON" in listing.problems[0]


def test_an_id_taken_by_a_writer_without_the_lock_leaves_its_marker_alone(
    tmp_path: Path,
) -> None:
    queue = _queue(tmp_path)
    _create(queue, 0)
    # An older sidecar (no lock, no index) filed id 2 while _ids() was being read.
    real_ids = queue._ids
    queue._ids = lambda: [1]  # type: ignore[method-assign]
    taken = queue.create("egress-block", {"host": "taken.example.com"}, "j")
    queue._ids = real_ids  # type: ignore[method-assign]
    assert taken.id == 2
    queue.decide(2, approved=False, by="op", reason="no")
    queue._ids = lambda: [1]  # type: ignore[method-assign]
    assert _create(queue, 9) == 3  # 2 exists: skipped, and no marker is left on it
    queue._ids = real_ids  # type: ignore[method-assign]
    assert _markers(queue) == [".complete", "1", "3"]
