"""Sessions: start, use, end — the lifecycle rules in one place.

* attended (``bottle start``): attach to the agent; a clean exit stops the instance and
  marks it finished; a crash (non-zero exit), Ctrl-C or a kill leaves it preserved.
* headless (``bottle run``): run one command, stop, return its exit code; Ctrl-C preserves.
  The command is the agent program on a prompt (``headless_command``), or the user's own
  (``user_command``: the provider's program keeps the bottle's wiring, anything else runs
  as given).
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

from bottle.bottle import Ask, Bottle, Progress
from bottle.files import now
from bottle.instance import Instance
from bottle.providers import provider
from bottle.providers.base import Output
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


def headless_argv(
    bottle: Bottle,
    *,
    prompt: str | None = None,
    cmd: Sequence[str] = (),
    output: Output = "text",
    resume: bool = False,
) -> list[str]:
    """What a headless run of ``bottle`` executes in the agent: its program on ``prompt``
    (the answer on stdout, ``output`` its form), else ``cmd``."""
    program = provider(bottle.plan().provider)
    if prompt is not None:
        return program.headless_command(prompt, output=output, resume=resume)
    return program.user_command(cmd)


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
