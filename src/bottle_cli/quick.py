"""The ``bottle`` entry point: ``exec``, ``ls`` and ``stop`` answer without loading the
command line.

typer builds a pydantic adapter for every parameter of the command it runs, and the
library's models load pydantic again: some 200 ms before ``docker exec`` even starts. A
plain ``bottle exec [--service NAME] SLUG -- CMD...`` of a running instance is read here,
and recorded and run by the same library code the full command uses (``bottle.execlog``,
``ComposeProject.exec``); a plain ``bottle ls [--json | -q]`` lists through
``bottle.instances`` and ``bottle_cli.listing``, as the full command does; a plain
``bottle stop SLUG...`` whose every slug names one instance runs ``stop_each``, the full
command's own loop (typer's load was a fifth of a stop), and as the console script
ends its process without Python's teardown; a plain ``bottle run AGENT --
CMD...`` runs the full command's ``headless_run`` (typer and its parse were a tenth of a
run's wall time, a third of its own CPU). Everything else, and anything
here that is not exactly that (an unknown word, no ``--``, a slug that does not name one
instance, an option), goes to ``bottle_cli.app.main``, which says what is
wrong in its own words: the quick path only ever decides to run, never to refuse.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from bottle.bottle import Bottle
    from bottle.settings import Settings

#: Exit code after Ctrl-C (``bottle_cli.app.INTERRUPTED``).
INTERRUPTED = 130
#: ``bottle_cli.app.COMPLETE_VAR``: a shell asking for completions gets the full command.
_COMPLETE_VAR = "_BOTTLE_COMPLETE"
#: A compose service name as bottle names its services; anything else is typer's to judge.
_SERVICE = re.compile(r"[a-z][a-z0-9_-]{0,62}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bottle ARGS``; returns the exit code (the console script exits with it)."""
    args = list(sys.argv[1:] if argv is None else argv)
    quick = _QUICK.get(args[0]) if args and _COMPLETE_VAR not in os.environ else None
    if quick is not None:
        code = quick(args[1:])
        if code is not None:
            if argv is None and quick is quick_stop:
                _exit_now(code)  # the console script's own process: it ends here
            return code
    from bottle_cli.app import main as full

    return full(args)


def _exit_now(code: int) -> NoReturn:
    """End the process with ``code`` without Python's teardown.

    A stop has nothing left to do once it returns: every file it wrote was written whole
    (``atomic_write``), its threads were joined, its docker children waited for. Tearing
    down the modules it loaded (pydantic, the manifest's models, rich) took a tenth of a
    second of CPU after the last container and network were gone.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing to say
            stream.flush()
    os._exit(code)


#: ``ls``'s words the quick path knows: each option alone (several go to the full command).
_LS = {(): (False, False), ("--json",): (True, False), ("-q",): (False, True)}
_LS[("--quiet",)] = _LS[("-q",)]


def quick_ls(words: Sequence[str]) -> int | None:
    """``bottle ls``'s exit code, or ``None`` when the full command must run instead."""
    shape = _LS.get(tuple(words))
    if shape is None:
        return None
    from bottle.instances import instances
    from bottle.settings import Settings
    from bottle_cli import listing

    try:
        listing.show(instances(Settings.from_env()), json_=shape[0], quiet=shape[1])
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return INTERRUPTED
    except Exception as exc:  # the full command's boundary: no traceback here either
        return _report(exc)
    return 0


def _report(exc: Exception) -> int:
    """The full command's error boundary: a message and a hint, never a traceback."""
    from bottle_cli.app import _report as report

    return report(exc, os.environ.get("BOTTLE_DEBUG") == "1")


def parse_exec(words: Sequence[str]) -> tuple[str, str, list[str]] | None:
    """``(slug, service, cmd)`` of ``exec``'s words, or ``None`` unless they are plain."""
    if "--" not in words:
        return None
    cut = list(words).index("--")
    head, cmd = list(words[:cut]), list(words[cut + 1 :])
    slug: str | None = None
    service = "agent"
    while head:
        word = head.pop(0)
        if word == "--service" and head:
            service = head.pop(0)
        elif word.startswith("--service="):
            service = word.partition("=")[2]
        elif word.startswith("-") or slug is not None:
            return None
        else:
            slug = word
    if slug is None or not cmd or not _SERVICE.fullmatch(service):
        return None
    return slug, service, cmd


def quick_exec(words: Sequence[str]) -> int | None:
    """``bottle exec``'s exit code, or ``None`` when the full command must run instead."""
    parsed = parse_exec(words)
    if parsed is None:
        return None
    slug, service, cmd = parsed
    from bottle.quickstate import DOWN, glance
    from bottle.settings import Settings

    found = glance(Settings.from_env().state_root, slug)
    if found is None or found.status in DOWN:
        return None  # the full command finds the instance, or says why not
    from bottle import execlog
    from bottle.engine.seam import DockerEngine
    from bottle.layout import COMPOSE_FILE

    project = DockerEngine().project(
        compose_file=found.path / COMPOSE_FILE,
        project=found.compose_project,
        project_dir=found.path,
    )
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    try:
        code = execlog.recorded(
            found.path, cmd, service, lambda: project.exec(service, cmd, tty=tty).exit_code
        )
        if code != 0:
            # As the full command: only a failed exec pays for a look, since docker's own
            # "is not running" names no fix.
            from bottle_cli.app import _require_running
            from bottle_cli.params import open_instance

            _require_running(open_instance(slug), service)
        return code
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return INTERRUPTED
    except Exception as exc:  # the full command's boundary: no traceback here either
        return _report(exc)


def quick_stop(words: Sequence[str]) -> int | None:
    """``bottle stop SLUG...``'s exit code, or ``None`` when the full command must run."""
    if not words or any(word.startswith("-") for word in words):
        return None
    from bottle.quickstate import glance
    from bottle.settings import Settings

    settings = Settings.from_env()
    if any(glance(settings.state_root, word) is None for word in words):
        return None  # the full command finds the instance, or says why not
    try:
        return 1 if stop_each(words, settings) else 0
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return INTERRUPTED
    except Exception as exc:  # the full command's boundary: no traceback here either
        return _report(exc)


def stop_each(slugs: Sequence[str], settings: Settings) -> int:
    """Stop each instance in turn, saying so; how many ``down`` could not take all down
    (the library said what is left, and they stay ``preserved``)."""
    from bottle.instances import resolve
    from bottle.state import InstanceStatus
    from bottle_cli import output

    incomplete = 0
    for slug in slugs:
        instance = resolve(slug, settings)
        instance.stop()
        if instance.status == InstanceStatus.PRESERVED:
            incomplete += 1
            continue
        output.progress(f"stopped {instance.slug}; its state is in {instance.state.path}")
    return incomplete


def quick_run(words: Sequence[str]) -> int | None:
    """``bottle run AGENT -- CMD...``'s exit code, or ``None`` when the full command must run
    (any option, no ``--``, no command: the full command reads them, or says what is wrong)."""
    if "--" not in words:
        return None
    cut = list(words).index("--")
    head, cmd = list(words[:cut]), list(words[cut + 1 :])
    if len(head) != 1 or head[0].startswith("-") or not cmd:
        return None
    from bottle.session import headless_argv, headless_run
    from bottle.settings import Settings
    from bottle_cli import output

    try:
        try:
            target = load_bottle(head[0], None, (), Settings.from_env())
            argv = headless_argv(target, cmd=cmd)
            return headless_run(target, argv, progress=output.progress, ask=_ask)
        finally:
            output.progress.close()  # as the full command: a build cut short ends its view
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return INTERRUPTED
    except Exception as exc:  # the full command's boundary: no traceback here either
        return _report(exc)


def _ask(name: str, question: str) -> str:
    """The full command's question at start (typer's prompt): loaded only when asked."""
    from bottle_cli.app import _ask as ask

    return ask(name, question)


def load_bottle(agent: str, bottle: str | None, args: Sequence[str], settings: Settings) -> Bottle:
    """``Bottle(agent, ...)`` with its manifest loaded, every warning about it said."""
    from bottle import Bottle
    from bottle_cli import output

    instance = Bottle(agent, bottle=bottle, args=args, settings=settings)
    manifest = instance.manifest
    for warning in manifest.warnings:
        output.warn(warning)
    for kind, broken in (("bottle", manifest.broken_bottles), ("agent", manifest.broken_agents)):
        for name, error in broken.items():
            output.warn(f"{kind} {name!r} does not load ({error.path}); see 'bottle {kind}s'")
    return instance


_QUICK = {"exec": quick_exec, "ls": quick_ls, "run": quick_run, "stop": quick_stop}
