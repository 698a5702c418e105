"""Sessions: start, use, end — the lifecycle rules in one place.

* attended (``bottle start``): attach to the agent; a clean exit stops the instance and
  marks it finished; a crash (non-zero exit), Ctrl-C or a kill leaves it preserved.
* headless (``bottle run``): run one command, stop, return its exit code; Ctrl-C preserves.
  The command is the agent program on a prompt (``headless_command``), or the user's own
  (``user_command``: the provider's program keeps the bottle's wiring, anything else runs
  as given).
* resumed (``bottle resume``): the same, on an instance brought up again, with the
  provider's resume command (the conversation the transcript holds continues).

A capability approval replaces the agent's container, and the program this session runs
there dies with it. The session then waits for the new container and continues the
conversation in it (:func:`follow`), so the user's terminal, or a headless run, survives.
"""

from __future__ import annotations

import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence

from bottle import layout
from bottle.bottle import Ask, Bottle, Progress
from bottle.errors import StateError
from bottle.instance import Instance
from bottle.providers import Provider, provider
from bottle.providers.base import Output
from bottle.state import InstanceStatus

#: How long a session waits for a replaced agent's new container (a capability
#: recreate, bounded by ``bottle.capability.RECREATE_TIMEOUT``, plus the rollback's).
REPLACE_WAIT_S = 150.0
_POLL_S = 0.5

#: What a resumed conversation is told after its agent was replaced.
CONTINUE_PROMPT = (
    "bottle: an approved capability was installed (the agent now runs on image {image}); "
    "its container was replaced, so the last command may have been cut short. "
    "Continue the task where you left off."
)
ROLLBACK_PROMPT = (
    "bottle: installing an approved capability failed, and the agent runs its previous "
    "image {image} again; its container was replaced, so the last command may have been "
    "cut short. Continue the task where you left off."
)


def _preserve(instance: Instance, reason: str, progress: Progress) -> None:
    instance.preserve(reason)
    progress(
        f"{instance.slug} is preserved ({reason}): resume with 'bottle resume {instance.slug}', "
        f"or clean up with 'bottle stop {instance.slug}' / 'bottle cleanup'"
    )


def replaced_since(instance: Instance, seen: int, *, wait_s: float = REPLACE_WAIT_S) -> str | None:
    """What to tell the conversation when the agent's container was replaced after
    ``seen`` restarts (waiting for a replacement under way); None when it was not."""
    deadline = time.monotonic() + wait_s
    metadata = instance.metadata
    while metadata.replacing is not None and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        metadata = instance.metadata
    if metadata.agent_restarts <= seen:
        return None
    image = metadata.images.get("agent", "?")
    capability = image.startswith("bottle-agent-capability:")
    return (CONTINUE_PROMPT if capability else ROLLBACK_PROMPT).format(image=image)


def follow(
    instance: Instance,
    first: Sequence[str],
    then: Callable[[str], Sequence[str] | None],
    *,
    tty: bool,
    progress: Progress,
) -> int:
    """Run ``first`` in the agent; each time its container is replaced under it, run
    ``then(message)`` there (None: stop following). The last exit code."""
    argv: Sequence[str] | None = first
    code = 0
    while argv is not None:
        seen = instance.metadata.agent_restarts
        code = instance.exec(argv, tty=tty).exit_code
        if code == 0:
            return code
        message = replaced_since(instance, seen)
        if message is None:
            return code
        argv = then(message)
        if argv is not None:
            progress(f"the agent of {instance.slug} was replaced; its conversation continues")
    return code


def _attended(instance: Instance, *, resume: bool, progress: Progress) -> int:
    """Attach until the program exits; the instance ends finished, or preserved."""
    metadata = instance.metadata
    agent = provider(metadata.provider)
    instance.require_agent()
    tty = sys.stdin.isatty()
    # The terminal is the conversation: a shell's history, or the CLI's transcript.
    try:
        code = follow(
            instance,
            agent.interactive_command(metadata.agent_args, resume=resume),
            lambda message: _interactive_resume(agent, metadata.agent_args, message, progress),
            tty=tty,
            progress=progress,
        )
    except KeyboardInterrupt:
        _preserve(instance, "interrupted", progress)
        raise
    if code != 0:
        _preserve(instance, f"agent exited with code {code}", progress)
        return code
    instance.stop(status=InstanceStatus.FINISHED, exit_code=0)
    progress(f"{instance.slug} finished; its state is in {instance.state.path}")
    return 0


def _interactive_resume(
    agent: Provider, args: Sequence[str], message: str, progress: Progress
) -> list[str]:
    """The resume command after a replacement: told ``message`` as its first prompt when
    the program takes one (a provider's optional ``interactive_prompt = True``); else the
    message is shown on the terminal."""
    if getattr(agent, "interactive_prompt", False):
        return agent.interactive_command([*args, message], resume=True)
    progress(message)
    return agent.interactive_command(args, resume=True)


def _headless(
    instance: Instance,
    argv: Sequence[str],
    *,
    prompt_run: bool,
    output: Output = "text",
    progress: Progress | None = None,
) -> int:
    """Run ``argv``, recorded in ``run.log``; a prompt run continues after a replacement
    (``headless_command(message, resume=True)``), a plain command is never re-run."""
    metadata = instance.metadata
    agent = provider(metadata.provider)
    say = progress or (lambda _line: None)

    def log(line: str) -> None:
        # A run.log that cannot be written is warned about, and never ends the run or
        # loses its exit code.
        try:
            instance.record(layout.RUN_LOG, line)
        except StateError as exc:
            say(f"warning: {exc.message}")

    def then(message: str) -> list[str] | None:
        if not prompt_run:
            return None
        again = agent.headless_command(message, output=output, resume=True)
        log(f"$ {shlex.join(again)}")
        return again

    log(f"$ {shlex.join(argv)}")
    code = follow(instance, argv, then, tty=False, progress=say)
    log(f"exit {code}")
    return code


def _ended(instance: Instance, run: Callable[[], int], progress: Progress) -> int:
    """A headless run's end: finished with its code; Ctrl-C preserves; an error stops."""
    try:
        code = run()
    except KeyboardInterrupt:
        _preserve(instance, "interrupted", progress)
        raise
    except BaseException:
        instance.stop(status=InstanceStatus.STOPPED)
        raise
    instance.stop(status=InstanceStatus.FINISHED, exit_code=code)
    return code


def attached_session(bottle: Bottle, *, progress: Progress, ask: Ask | None = None) -> int:
    instance = bottle.start(progress=progress, ask=ask, owner_pid=os.getpid())
    return _attended(instance, resume=False, progress=progress)


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
    return _ended(
        instance, lambda: _headless(instance, argv, prompt_run=False, progress=progress), progress
    )


def headless_prompt_run(
    bottle: Bottle,
    prompt: str,
    *,
    progress: Progress,
    ask: Ask | None = None,
    output: Output = "text",
) -> int:
    """Start, let the agent work on ``prompt`` (``headless_command``), stop; its exit code.

    A capability approved meanwhile replaces the agent's container: the run continues in
    the new one (``headless_command(<what was installed>, resume=True)``).
    """
    instance = bottle.start(progress=progress, ask=ask, owner_pid=os.getpid())
    argv = provider(instance.metadata.provider).headless_command(prompt, output=output)
    return _ended(
        instance,
        lambda: _headless(instance, argv, prompt_run=True, output=output, progress=progress),
        progress,
    )


def resumed_session(
    instance: Instance,
    *,
    progress: Progress,
    ask: Ask | None = None,
    prompt: str | None = None,
    output: Output = "text",
) -> int:
    """Bring ``instance`` up again and continue its conversation: attended, or headless
    on ``prompt`` (``headless_command(prompt, resume=True)``). Ends like a new session."""
    instance.resume(progress=progress, ask=ask, owner_pid=os.getpid())
    if prompt is None:
        return _attended(instance, resume=True, progress=progress)
    agent = provider(instance.metadata.provider)
    argv = agent.headless_command(prompt, output=output, resume=True)
    return _ended(
        instance,
        lambda: _headless(instance, argv, prompt_run=True, output=output, progress=progress),
        progress,
    )


def attach_session(instance: Instance, *, progress: Progress) -> int:
    """``bottle attach``: hand over the terminal. A preserved instance (its session died)
    becomes this session's: a clean exit finishes it, anything else preserves it again.
    A detached running one is left running either way."""
    if instance.effective_status() != InstanceStatus.PRESERVED:
        return instance.attach(tty=sys.stdin.isatty())
    instance.require_agent()
    instance.state.transition(InstanceStatus.RUNNING, pid=os.getpid())
    return _attended(instance, resume=False, progress=progress)
