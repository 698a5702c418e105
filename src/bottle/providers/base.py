"""The Provider protocol: everything bottle knows about one agent program.

A provider is one module in ``bottle/providers/`` exporting ``PROVIDER``; the registry in
``__init__.py`` maps the manifest's ``provider:`` kind to it. Host side only: the agent
container runs the program, this module only says how.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Literal, Protocol

from bottle import layout

if TYPE_CHECKING:
    from bottle.manifest.models import ProviderKind
    from bottle.plan import BottlePlan

#: Where the agent's config files land, read-only (system prompt, MCP config, git config).
AGENT_DIR = layout.AGENT_CONFIG
#: The writable directory that outlives the container: the program's own state goes here.
TRANSCRIPT = layout.TRANSCRIPT


class Provider(Protocol):
    kind: ProviderKind

    def env(self, plan: BottlePlan) -> dict[str, str]:
        """The agent's environment for this program: config and transcript locations."""
        ...

    def skills_target(self, plan: BottlePlan) -> PurePosixPath:
        """Where the agent's skills are mounted, one directory per skill."""
        ...

    def seed_files(self, plan: BottlePlan) -> dict[str, bytes]:
        """The program's config as a finished first start leaves it: paths relative to the
        transcript dir (a trailing ``/``: a directory), written before the first start
        when missing, owned by the agent's uid."""
        ...

    def interactive_command(self, args: Sequence[str], *, resume: bool = False) -> list[str]:
        """The program an attended session hands the terminal to; ``resume`` continues the
        conversation the transcript holds."""
        ...

    def headless_command(
        self, prompt: str, *, output: Output = "text", resume: bool = False
    ) -> list[str]:
        """The program working on ``prompt`` alone: the answer on stdout, progress on stderr,
        non-zero when it failed; ``output`` "json"/"stream-json" for the structured result."""
        ...

    def user_command(self, argv: Sequence[str]) -> list[str]:
        """What ``bottle run AGENT -- CMD`` runs for ``CMD``: the provider's own program
        with the bottle's wiring (system prompt, MCP servers, flags), anything else as
        given."""
        ...


#: What a headless run prints on stdout.
Output = Literal["text", "json", "stream-json"]
