"""``provider: codex``: the Codex CLI, its home (its session files) in the transcript."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

from bottle.providers.base import TRANSCRIPT

if TYPE_CHECKING:
    from bottle.plan import BottlePlan

CODEX_HOME = TRANSCRIPT / "codex"


@dataclass(frozen=True)
class Codex:
    kind: Literal["codex"] = "codex"

    def env(self, plan: BottlePlan) -> dict[str, str]:
        return {"CODEX_HOME": str(CODEX_HOME)}

    def skills_target(self, plan: BottlePlan) -> PurePosixPath:
        return PurePosixPath("/home/agent/.skills")

    def interactive_command(self, args: Sequence[str]) -> list[str]:
        return ["codex", "--dangerously-bypass-approvals-and-sandbox", *args]


PROVIDER = Codex()
