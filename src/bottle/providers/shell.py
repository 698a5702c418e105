"""``provider: shell``: a login bash, its history kept in the transcript."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

from bottle.providers.base import TRANSCRIPT, Output

if TYPE_CHECKING:
    from bottle.plan import BottlePlan


@dataclass(frozen=True)
class Shell:
    kind: Literal["shell"] = "shell"

    def env(self, plan: BottlePlan) -> dict[str, str]:
        return {"HISTFILE": f"{TRANSCRIPT}/bash_history", "PROMPT_COMMAND": "history -a"}

    def skills_target(self, plan: BottlePlan) -> PurePosixPath:
        return PurePosixPath("/home/agent/.skills")

    def seed_files(self, plan: BottlePlan) -> dict[str, bytes]:
        return {}

    def interactive_command(self, args: Sequence[str], *, resume: bool = False) -> list[str]:
        # A shell's "conversation" is its history file, which every new login reads.
        return ["bash", "-l", *args]

    def headless_command(
        self, prompt: str, *, output: Output = "text", resume: bool = False
    ) -> list[str]:
        return ["bash", "-lc", prompt]

    def user_command(self, argv: Sequence[str]) -> list[str]:
        return list(argv)


PROVIDER = Shell()
