"""How much an agent may ask for: pending proposals per instance, and how fast it files them.

An agent that files without end would fill the operator's disk and screen (1000 proposals
of 75 KB in under a minute made ``bottle queue`` print 103 MB). The size of one proposal is
bounded by its fields (:data:`~bottle.proposals.payloads.MAX_PAYLOAD_BYTES`,
:data:`~bottle.proposals.models.MAX_JUSTIFICATION_CHARS`); these bound how many there are.
Over a bound the filing tool answers with what bound it hit and when to try again, and
nothing is written.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bottle.errors import ApplyError

#: Proposals of one instance that may wait for a decision at the same time.
DEFAULT_MAX_PENDING = 20
#: Proposals one instance may file per minute, on average (a token bucket) ...
DEFAULT_PER_MINUTE = 10
#: ... and at once, after a quiet spell (the bucket's size).
DEFAULT_BURST = 5


@dataclass(frozen=True, kw_only=True)
class Limits:
    """The bounds of one instance's queue (``supervise:`` settings of the bottle file)."""

    max_pending: int = DEFAULT_MAX_PENDING
    per_minute: int = DEFAULT_PER_MINUTE
    burst: int = DEFAULT_BURST

    def __post_init__(self) -> None:
        if min(self.max_pending, self.per_minute, self.burst) < 1:
            raise ValueError("every proposal limit must be at least 1")


def too_many_pending(pending: int, limit: int) -> ApplyError:
    return ApplyError(
        f"you have {pending} proposals waiting for the operator, the most this bottle allows "
        f"(max_pending {limit})",
        hint="Nothing was queued. Check the ones you filed with proposal-status; file this "
        "again once one of them is decided.",
    )


@dataclass
class TokenBucket:
    """``per_minute`` filings on average, ``burst`` at once; refills continuously."""

    per_minute: int
    burst: int
    clock: Callable[[], float] = time.monotonic
    _tokens: float = field(init=False)
    _at: float = field(init=False)

    def __post_init__(self) -> None:
        self._tokens = float(self.burst)
        self._at = self.clock()

    def _refill(self) -> None:
        now = self.clock()
        earned = (now - self._at) * self.per_minute / 60
        self._tokens = min(float(self.burst), self._tokens + earned)
        self._at = now

    def check(self) -> None:
        """``ApplyError`` (with when to try again) if a filing now would be over the rate."""
        self._refill()
        if self._tokens >= 1:
            return
        wait_s = math.ceil((1 - self._tokens) * 60 / self.per_minute)
        raise ApplyError(
            f"you are filing proposals faster than this bottle allows "
            f"({self.per_minute} per minute, {self.burst} at once)",
            hint=f"Nothing was queued. Try again in {wait_s} seconds; meanwhile check the ones "
            "you filed with proposal-status.",
        )

    def take(self) -> None:
        """Count one filing (after :meth:`check` passed and the proposal was written)."""
        self._refill()
        self._tokens = max(0.0, self._tokens - 1)
