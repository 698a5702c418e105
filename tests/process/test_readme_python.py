"""The README's Python examples type-check against the library as it is (``mypy --strict``):
a renamed method, a dropped keyword or a changed return shape fails here, with nothing run
(the examples start real bottles and reach pypi.org)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_python_example_of_the_readme_type_checks(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    assert len(blocks) >= 2  # the library and the operator's side
    files = []
    for number, block in enumerate(blocks):
        files.append(tmp_path / f"readme_example_{number}.py")
        files[-1].write_text(block)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file",
         str(ROOT / "pyproject.toml"), *map(str, files)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_wrong_example_would_fail(tmp_path: Path) -> None:
    # The check above is only worth something if mypy sees the library's real types.
    wrong = tmp_path / "wrong.py"
    wrong.write_text("from bottle import Instance\nInstance.open('x').routes.allw()\n")
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--config-file",
         str(ROOT / "pyproject.toml"), str(wrong)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 1 and 'has no attribute "allw"' in done.stdout, done.stdout
