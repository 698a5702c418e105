"""``provider: command``: any CLI agent, run from the argv templates of its bottle.

The bottle names the program (``agent.command``: ``interactive``, ``headless`` with
``{prompt}``, optional ``resume`` / ``headless_resume``) and a Dockerfile that installs it
on the shell agent's image. The templates reach the container as ``command.json`` in the
read-only agent config dir; a few lines of Python there fill in ``{prompt}`` and exec the
program, so the task is one argument and never passes through a shell. Without a resume
template, resuming runs the plain command again (a new conversation, same workspace).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal

from bottle.providers.base import AGENT_DIR, Output

if TYPE_CHECKING:
    from bottle.manifest.models import AgentCommand
    from bottle.plan import BottlePlan

#: The templates in the agent config dir (``compose.agent_files`` writes it).
COMMAND_FILE = "command.json"

# argv: mode, prompt, extra args. ``str.format`` fills ``{prompt}`` (and ``{{``) only: the
# host validated that no other field is there, and the value is never parsed again.
_LAUNCH = (
    "import json, os, sys\n"
    "mode, prompt, extra = sys.argv[1], sys.argv[2], sys.argv[3:]\n"
    f"with open({str(AGENT_DIR / COMMAND_FILE)!r}) as f:\n"
    "    template = json.load(f)[mode]\n"
    "argv = [word.format(prompt=prompt) for word in template] + extra\n"
    "os.execvp(argv[0], argv)\n"
)


def command_file(command: AgentCommand) -> bytes:
    """``command.json``: every mode's template, a missing resume falling back to the plain one."""
    modes = {
        "interactive": command.interactive,
        "resume": command.resume or command.interactive,
        "headless": command.headless,
        "headless_resume": command.headless_resume or command.headless,
    }
    return json.dumps({k: list(v) for k, v in modes.items()}, indent=2).encode() + b"\n"


@dataclass(frozen=True)
class Command:
    kind: Literal["command"] = "command"

    def env(self, plan: BottlePlan) -> dict[str, str]:
        return {}

    def skills_target(self, plan: BottlePlan) -> PurePosixPath:
        return PurePosixPath("/home/agent/.skills")

    def seed_files(self, plan: BottlePlan) -> dict[str, bytes]:
        return {}  # the program's own config is the Dockerfile's business

    def interactive_command(self, args: Sequence[str], *, resume: bool = False) -> list[str]:
        return self._launch("resume" if resume else "interactive", "", args)

    def headless_command(
        self, prompt: str, *, output: Output = "text", resume: bool = False
    ) -> list[str]:
        # A program of the user's has no structured output bottle knows: text only.
        return self._launch("headless_resume" if resume else "headless", prompt, ())

    def user_command(self, argv: Sequence[str]) -> list[str]:
        return list(argv)

    def _launch(self, mode: str, prompt: str, args: Sequence[str]) -> list[str]:
        return ["python3", "-c", _LAUNCH, mode, prompt, *args]


PROVIDER = Command()
