"""Agent providers: which program runs in the agent container and where it keeps its transcript."""

from __future__ import annotations

from dataclasses import dataclass

from bottle import layout
from bottle.manifest.models import ProviderKind

_AGENT_DIR = layout.AGENT_CONFIG
_TRANSCRIPT = layout.TRANSCRIPT


@dataclass(frozen=True)
class Provider:
    kind: ProviderKind
    command: tuple[str, ...]
    env: tuple[tuple[str, str], ...]  # transcript and config locations

    def interactive_command(self, args: tuple[str, ...]) -> list[str]:
        return [*self.command, *args]


PROVIDERS: dict[ProviderKind, Provider] = {
    "shell": Provider(
        "shell",
        ("bash", "-l"),
        (
            ("HISTFILE", f"{_TRANSCRIPT}/bash_history"),
            ("PROMPT_COMMAND", "history -a"),
        ),
    ),
    "claude": Provider(
        "claude",
        (
            "sh",
            "-c",
            'mcp="$1"; prompt="$2"; shift 2; exec claude --dangerously-skip-permissions '
            '--mcp-config "$mcp" --append-system-prompt "$(cat "$prompt")" "$@"',
            "claude",
            f"{_AGENT_DIR}/mcp.json",
            f"{_AGENT_DIR}/system-prompt.md",
        ),
        (("CLAUDE_CONFIG_DIR", f"{_TRANSCRIPT}/claude"),),
    ),
    "codex": Provider(
        "codex",
        ("codex", "--dangerously-bypass-approvals-and-sandbox"),
        (("CODEX_HOME", f"{_TRANSCRIPT}/codex"),),
    ),
}
