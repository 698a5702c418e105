"""``provider: claude``: Claude Code, its config dir (its project JSONL) in the transcript.

Claude Code runs non-root (the workspace owner's uid) with ``IS_SANDBOX=1``, the supported
way to tell it the container is the sandbox, so ``--dangerously-skip-permissions`` is
accepted. Its telemetry, error reporting and update checks are off by env; what it still
calls (managed settings, policy limits: ``GET api.anthropic.com/api/claude_code/...``) the
shipped ``claude`` bottle routes. Its first start is not a first start: ``seed_files``
pre-seeds the config dir with onboarding done, ``/workspace`` trusted, bypass mode accepted
and the placeholder API key approved.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from bottle import layout
from bottle.policy import PLACEHOLDER
from bottle.providers.base import AGENT_DIR, TRANSCRIPT, Output

if TYPE_CHECKING:
    from bottle.plan import BottlePlan

CONFIG_DIR = TRANSCRIPT / "claude"
#: The Claude Code release the image installs; the seeded config says onboarding was done
#: for it, so no "what's new" screen comes up.
VERSION = "2.1.332"

# The system prompt is a file (it may be long and hold any character); the shell reads it
# so no argument of ours is ever re-parsed by a shell.
_LAUNCH = (
    'mcp="$1"; prompt="$2"; shift 2; exec claude --dangerously-skip-permissions '
    '--mcp-config "$mcp" --append-system-prompt "$(cat "$prompt")" "$@"'
)

#: The agent's environment: the sandbox check satisfied, everything non-essential off.
ENV = {
    "CLAUDE_CONFIG_DIR": str(CONFIG_DIR),
    "IS_SANDBOX": "1",
    "DISABLE_TELEMETRY": "1",
    "DISABLE_ERROR_REPORTING": "1",
    "DISABLE_AUTOUPDATER": "1",
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    # MCP tools stay in the model's tool list instead of behind a tool search: supervise
    # has a handful, and an agent refused by egress must see at once how to ask.
    "ENABLE_TOOL_SEARCH": "false",
}


def global_config() -> dict[str, Any]:
    """``$CLAUDE_CONFIG_DIR/.claude.json`` as a finished first start leaves it."""
    return {
        "hasCompletedOnboarding": True,
        "lastOnboardingVersion": VERSION,
        "lastReleaseNotesSeen": VERSION,
        "numStartups": 1,
        "autoUpdates": False,
        "bypassPermissionsModeAccepted": True,
        "hasAcknowledgedCostThreshold": True,
        # The "Make auto mode your default permission mode?" dialog of an attended first
        # start; answering it (either way) sets this. Bypass mode is the bottle's choice.
        "hasSeenAutoDefaultNudge": True,
        # The agent's key is egress's placeholder; Claude Code remembers an approved key by
        # its last 20 characters.
        "customApiKeyResponses": {"approved": [PLACEHOLDER.strip()[-20:]], "rejected": []},
        "projects": {
            str(layout.WORKSPACE): {
                "hasTrustDialogAccepted": True,
                "hasCompletedProjectOnboarding": True,
                "projectOnboardingSeenCount": 1,
                "allowedTools": [],
            }
        },
    }


def settings() -> dict[str, Any]:
    """``$CLAUDE_CONFIG_DIR/settings.json``: broad permissions inside (the bottle is the
    sandbox), the bypass dialog already answered."""
    return {
        "permissions": {"defaultMode": "bypassPermissions"},
        "skipDangerousModePermissionPrompt": True,
    }


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, indent=2).encode() + b"\n"


@dataclass(frozen=True)
class Claude:
    kind: Literal["claude"] = "claude"

    def env(self, plan: BottlePlan) -> dict[str, str]:
        return dict(ENV)

    def skills_target(self, plan: BottlePlan) -> PurePosixPath:
        return CONFIG_DIR / "skills"

    def seed_files(self, plan: BottlePlan) -> dict[str, bytes]:
        # skills/ exists before Docker mounts each skill into it: Docker would make it (and
        # so the config dir) root's, and a non-root Claude would lose its transcript.
        return {
            "claude/.claude.json": _json(global_config()),
            "claude/settings.json": _json(settings()),
            "claude/skills/": b"",
        }

    def interactive_command(self, args: Sequence[str], *, resume: bool = False) -> list[str]:
        return self._launch([*(["--continue"] if resume else []), *args])

    def headless_command(
        self, prompt: str, *, output: Output = "text", resume: bool = False
    ) -> list[str]:
        flags = ["--continue"] if resume else []
        if output == "stream-json":
            flags += ["--verbose"]  # claude -p refuses stream-json without it
        # "--" ends the options: -p is a flag, and a prompt such as "--help" is the task.
        return self._launch([*flags, "--output-format", output, "-p", "--", prompt])

    def user_command(self, argv: Sequence[str]) -> list[str]:
        # `bottle run AGENT -- claude ...` is the bottle's Claude: its system prompt, the
        # supervise tools and the permission flags, as `bottle start` runs it.
        if argv and argv[0] == "claude":
            return self._launch(argv[1:])
        return list(argv)

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
