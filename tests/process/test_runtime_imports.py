"""The sidecar image's context alone runs the sidecars: a new interpreter imports their
entry points from it, and nothing from the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bottle.images as images
from bottle.images.sources import runtime_sources


def test_the_runtime_modules_import_on_their_own(tmp_path: Path) -> None:
    """The context is enough: the sidecars' entry points import from it alone."""
    context = tmp_path / "context"
    for name, data in runtime_sources(Path(images.__file__).parent.parent).items():
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_bytes(data)
    code = (
        "import sys, bottle; assert bottle.__file__.startswith(sys.argv[1]), bottle.__file__\n"
        "import bottle.runtime.egress.__main__, bottle.runtime.supervise.__main__\n"
        "import bottle.runtime.supervise.server\n"
        "import runpy; runpy.run_path(sys.argv[2], run_name='addon')\n"
    )
    addon = context / "bottle" / "runtime" / "egress" / "addon.py"
    result = subprocess.run(
        [sys.executable, "-c", code, str(context), str(addon)],
        env={**os.environ, "PYTHONPATH": str(context)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
