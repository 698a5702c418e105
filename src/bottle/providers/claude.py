"""``provider: claude``: Claude Code, its config dir (its project JSONL) in the transcript."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from bottle.providers.base import AGENT_DIR, TRANSCRIPT, Output

if TYPE_CHECKING:
    from bottle.plan import BottlePlan

CONFIG_DIR = TRANSCRIPT / "claude"

# The system prompt is a file (it may be long and hold any character); the shell reads it
# so no argument of ours is ever re-parsed by a shell.
_LAUNCH = (
    'mcp="$1"; prompt="$2"; shift 2; exec claude --dangerously-skip-permissions '
    '--mcp-config "$mcp" --append-system-prompt "$(cat "$prompt")" "$@"'
)


@dataclass(frozen=True)
class Claude:
    kind: Literal["claude"] = "claude"

    def env(self, plan: BottlePlan) -> dict[str, str]:
        return {"CLAUDE_CONFIG_DIR": str(CONFIG_DIR)}

    def skills_target(self, plan: BottlePlan) -> PurePosixPath:
        return CONFIG_DIR / "skills"

    def seed_files(
        self, plan: BottlePlan, mcp_servers: Mapping[str, Mapping[str, Any]]
    ) -> dict[str, bytes]:
        return {}

    def interactive_command(self, args: Sequence[str], *, resume: bool = False) -> list[str]:
        return self._launch([*(["--continue"] if resume else []), *args])

    def headless_command(
        self, prompt: str, *, output: Output = "text", resume: bool = False
    ) -> list[str]:
        flags = ["--continue"] if resume else []
        if output == "stream-json":
            flags += ["--verbose"]  # claude -p refuses stream-json without it
        return self._launch([*flags, "--output-format", output, "-p", prompt])

    def _launch(self, args: Sequence[str]) -> list[str]:
        return [
            "sh",
            "-c",
            _LAUNCH,
            "claude",
            f"{AGENT_DIR}/mcp.json",
            f"{AGENT_DIR}/system-prompt.md",
            *args,
        ]


PROVIDER = Claude()
