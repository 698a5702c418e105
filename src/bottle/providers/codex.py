"""``provider: codex``: the Codex CLI, its home (its session files) in the transcript."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

from bottle.providers.base import TRANSCRIPT, Output

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

    def seed_files(self, plan: BottlePlan) -> dict[str, bytes]:
        return {}

    def interactive_command(self, args: Sequence[str], *, resume: bool = False) -> list[str]:
        head = ["codex", "resume", "--last"] if resume else ["codex"]
        return [*head, "--dangerously-bypass-approvals-and-sandbox", *args]

    def headless_command(
        self, prompt: str, *, output: Output = "text", resume: bool = False
    ) -> list[str]:
        head = ["codex", "exec", *(["resume", "--last"] if resume else [])]
        json_flag = [] if output == "text" else ["--json"]
        return [*head, "--dangerously-bypass-approvals-and-sandbox", *json_flag, prompt]

    def user_command(self, argv: Sequence[str]) -> list[str]:
        return list(argv)


PROVIDER = Codex()
