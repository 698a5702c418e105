"""Sessions: start, use, end — the lifecycle rules in one place.

* attended (``bottle start``): attach to the agent; a clean exit stops the instance and
  marks it finished; a crash (non-zero exit), Ctrl-C or a kill leaves it preserved.
* headless (``bottle run``): run one command, stop, return its exit code; Ctrl-C preserves.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

from bottle.bottle import Ask, Bottle, Progress
from bottle.files import now
from bottle.instance import Instance
from bottle.state import InstanceStatus


def _preserve(instance: Instance, reason: str, progress: Progress) -> None:
    instance.preserve(reason)
    progress(
        f"{instance.slug} is preserved ({reason}): resume with 'bottle attach {instance.slug}', "
        f"or clean up with 'bottle stop {instance.slug}' / 'bottle cleanup'"
    )


def attached_session(bottle: Bottle, *, progress: Progress, ask: Ask | None = None) -> int:
    instance = bottle.start(progress=progress, ask=ask, owner_pid=os.getpid())
    try:
        code = instance.attach(tty=sys.stdin.isatty())
    except KeyboardInterrupt:
        _preserve(instance, "interrupted", progress)
        raise
    if code != 0:
        _preserve(instance, f"agent exited with code {code}", progress)
        return code
    instance.stop(status=InstanceStatus.FINISHED, exit_code=0)
    progress(f"{instance.slug} finished; its state is in {instance.state.path}")
    return 0


def headless_run(
    bottle: Bottle,
    argv: Sequence[str],
    *,
    progress: Progress,
    ask: Ask | None = None,
) -> int:
    instance = bottle.start(progress=progress, ask=ask, owner_pid=os.getpid())
    try:
        instance.record("run.log", f"{now().isoformat()} $ {shlex.join(argv)}\n")
        code = instance.exec(argv).exit_code
        instance.record("run.log", f"{now().isoformat()} exit {code}\n")
    except KeyboardInterrupt:
        _preserve(instance, "interrupted", progress)
        raise
    except BaseException:
        instance.stop(status=InstanceStatus.STOPPED)
        raise
    instance.stop(status=InstanceStatus.FINISHED, exit_code=code)
    return code
