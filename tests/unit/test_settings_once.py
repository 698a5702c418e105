"""Settings are read from the environment in one place per run, then passed down."""

from __future__ import annotations

import re
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

#: The only modules that may read settings from the environment: the factory itself, and
#: the CLI's one read per run (``quick.py`` for the commands it runs without typer).
READERS = {"bottle/settings.py", "bottle_cli/params.py", "bottle_cli/quick.py"}


def _sources() -> dict[str, str]:
    return {str(p.relative_to(SRC)): p.read_text() for p in SRC.rglob("*.py")}


def test_only_the_factory_and_the_cli_read_the_environment() -> None:
    readers = {name for name, text in _sources().items() if "Settings.from_env(" in text}
    assert readers <= READERS


def test_no_settings_or_fallback_hides_a_second_read() -> None:
    offenders = [
        name for name, text in _sources().items() if re.search(r"settings or Settings\.", text)
    ]
    assert offenders == []
