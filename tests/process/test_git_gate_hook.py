"""git-gate's pre-receive hook as git runs it: a new interpreter per push, and one at the
gate's start for the probe (``bottle.runtime.git_gate.server``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bottle.runtime import git_gate as gate

#: What a push needs and the probe does not: the secret scan, the redaction, the upstream.
PUSH_ONLY = (
    "bottle.runtime.egress.dlp",
    "bottle.runtime.git_gate.gitlinks",
    "bottle.runtime.git_gate.scan",
    "bottle.runtime.git_gate.upstream",
)

RUN_HOOK = """
import json, runpy, sys
try:
    runpy.run_module("bottle.runtime.git_gate.hook", run_name="__main__")
except SystemExit as exc:
    code = exc.code
except Exception as exc:  # the control: a push with no gate config to read
    code = type(exc).__name__
print(json.dumps({"code": code, "loaded": sorted(m for m in json.loads(sys.argv[1])
                                               if m in sys.modules)}))
"""


def _hook(env: dict[str, str]) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", RUN_HOOK, json.dumps(PUSH_ONLY)],
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    found: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def test_the_probe_answers_before_the_pushs_imports() -> None:
    assert _hook({gate.PROBE_ENV: "1"}) == {"code": 0, "loaded": []}


def test_without_the_probe_the_hook_loads_what_a_push_needs(tmp_path: Path) -> None:
    # The control: the same run without the setting is a push, which fails here for want
    # of a gate config, after the imports the probe skipped.
    found = _hook({gate.PROBE_ENV: "", gate.CONFIG_ENV: str(tmp_path / "no-config")})
    assert found == {"code": "FileNotFoundError", "loaded": sorted(PUSH_ONLY)}
