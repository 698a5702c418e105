"""A throwaway BOTTLE_HOME for one benchmark run: one agent in a bottle of its own."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def bench_home(agent: str, bottle_text: str) -> Path:
    """A new home directory where ``agent`` runs in a bottle written from ``bottle_text``."""
    home = Path(tempfile.mkdtemp(prefix="bottle-bench-"))
    (home / "bottles").mkdir()
    (home / "agents").mkdir()
    (home / "bottles" / f"{agent}.md").write_text(bottle_text)
    (home / "agents" / f"{agent}.md").write_text(f"---\nbottle: {agent}\n---\n")
    if os.getuid() == 0:
        os.chown(home, 1000, 1000)
    return home


def bench_work(home: Path) -> Path:
    """The agent's workspace next to ``home`` (bottle refuses one that holds its home)."""
    work = home.with_name(home.name + "-work")
    work.mkdir(exist_ok=True)
    if os.getuid() == 0:
        # bottle never runs an agent as root: it runs as the workspace's owner.
        os.chown(work, 1000, 1000)
    return work
