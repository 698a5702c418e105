"""The ``bottle`` command: a thin typer app over the library.

Commands parse, call one library function and render. Imports of the library happen
inside the commands so that ``bottle --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from bottle_cli import decisions, output, syntax
from bottle_cli.params import JsonOpt, RunOptions, SlugArg, SlugsArg, run_options, running
from bottle_cli.params import open_instance as _open
from bottle_cli.params import settings as _settings

app = typer.Typer(
    name="bottle",
    help="Run an AI coding agent in a bottle: a container whose only way out is its sidecars.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    add_completion=False,
    epilog=f"start, run, exec: {syntax.RULE}",
)

AgentArg = Annotated[str, typer.Argument(help="agent name (see 'bottle agents')")]
BottleOpt = Annotated[
    str | None,
    typer.Option("--bottle", "-b", metavar="NAME", help="bottle to use instead of the agent's own"),
]
#: ``start``/``run``/``exec``: options anywhere before ``--``, the agent's words after it.
_AGENT_COMMAND: dict[str, Any] = {"cls": syntax.AgentCommand, "epilog": syntax.RULE}


def _bottle(agent: str, bottle: str | None, args: list[str] | None = None) -> Any:
    from bottle_cli.quick import load_bottle

    return load_bottle(agent, bottle, args or (), _settings())


def _ask(name: str, question: str) -> str:
    if not sys.stdin.isatty():
        from bottle.errors import PlanError

        raise PlanError(
            f"{name} must be answered at start ({question!r}), but there is no terminal",
            hint="Run from a terminal, or give the value in the bottle's env.",
        )
    answer: str = typer.prompt(f"{question} [{name}]", hide_input=True)
    return answer


def _argv(cmd: list[str] | None, *, required: bool = True) -> list[str]:
    """The words after ``--`` (``syntax.AgentCommand`` puts them there, and only them)."""
    argv = list(cmd or [])
    if required and not argv:
        raise typer.BadParameter("give the command to run after --", param_hint="CMD")
    return argv


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        output.out.print(f"bottle {version('bot-bottle')}", markup=False)
        raise typer.Exit(0)


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="on an error, also print its cause and traceback (or set BOTTLE_DEBUG=1)",
        ),
    ] = False,
    _version: Annotated[
        bool,
        typer.Option("--version", is_eager=True, callback=_version, help="print the version"),
    ] = False,
) -> None:
    """Run an AI coding agent in a bottle: a container whose only way out is its sidecars."""
    if debug:
        run_options().debug = True


# -- the pure half ---------------------------------------------------------------------------


@app.command()
def render(
    agent: Annotated[str, typer.Argument(help="agent name")] = "shell",
    bottle: BottleOpt = None,
    json_: Annotated[
        bool,
        typer.Option("--json", help="the compose spec and each service's notes as JSON"),
    ] = False,
) -> None:
    """Print the compose file an instance of AGENT would run.

    Each service that will not start on this host as it is (an unset variable, an image
    still to build, a remote with no credential) is named on stderr, with the fix; the
    YAML on stdout stays usable with 'docker compose -f -'.
    """
    from bottle.compose import dump_yaml

    target = _bottle(agent, bottle)
    spec = target.render()
    found = _render_notes(target)
    if json_:
        services = {
            name: {
                "starts": all(n.starts for n in found if n.service == name),
                "notes": [
                    {"kind": n.kind, "problem": n.problem, "fix": n.fix}
                    for n in found
                    if n.service == name
                ],
            }
            for name in spec["services"]
        }
        starts = all(n.starts for n in found)
        output.print_json({"compose": spec, "starts": starts, "services": services})
        return
    for note in found:
        if note.kind == "refused":
            output.warn(f"{note.service} will not start: {note.problem}")
        elif note.kind == "limited":
            output.warn(f"{note.service} starts, but {note.problem}")
        else:
            output.progress(f"{note.service}: {note.problem}")
        output.hint(note.fix)
    output.out.print(dump_yaml(spec), end="", markup=False)


def _render_notes(target: Any) -> list[Any]:
    """The plan's notes, with the images checked when the engine answers."""
    from bottle.compose import notes
    from bottle.errors import Failed

    plan = target.plan()
    try:
        return notes(plan, image_present=target.engine.image_exists)
    except Failed as exc:
        output.warn(f"cannot tell which images are built: {exc.message}")
        return notes(plan)


@app.command()
def agents(json_: JsonOpt = False) -> None:
    """List the agents you can start, and the file each comes from."""
    from bottle.catalog import list_agents

    rows = list_agents(_settings(), Path.cwd())
    if json_:
        output.print_json([row.model_dump(mode="json") for row in rows])
        return
    output.table(
        ["agent", "bottle", "origin", "trust", "file", "description"],
        [
            [
                r.name,
                r.bottle or "-",
                r.origin,
                r.trust or "-",
                r.path or "(built-in)",
                "BROKEN (below)" if r.error else r.description,
            ]
            for r in rows
        ],
        keep={0},
    )
    _broken(rows)


@app.command()
def bottles(json_: JsonOpt = False) -> None:
    """List the bottles agents run in, and each one's file."""
    from bottle.catalog import list_bottles

    rows = list_bottles(_settings(), Path.cwd())
    if json_:
        output.print_json([row.model_dump(mode="json") for row in rows])
        return
    output.table(
        ["bottle", "extends", "provider", "routes", "file", "description"],
        [
            [
                r.name,
                ",".join(r.extends),
                r.provider or "-",
                "-" if r.error else str(r.column("routes")),
                r.path or "(built-in)",
                "BROKEN (below)" if r.error else r.description,
            ]
            for r in rows
        ],
        keep={0},
    )
    _broken(rows)


def _broken(rows: Sequence[Any]) -> None:
    """Each file that does not load, with all its errors: the rest of the list still works."""
    for row in rows:
        if row.error:
            output.error(f"{row.name} is broken: {row.error}")


# -- instances -------------------------------------------------------------------------------


@app.command(**_AGENT_COMMAND)
def start(
    agent: AgentArg = "shell",
    bottle: BottleOpt = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="leave it running")] = False,
    args: Annotated[list[str] | None, typer.Argument(help="the agent's own arguments")] = None,
) -> None:
    """Start AGENT in its bottle and attach to it.

    With --detach it is left running and its slug printed.
    """
    from bottle.session import attached_session

    target = _bottle(agent, bottle, _argv(args, required=False))
    if detach:
        instance = target.start(progress=output.progress, ask=_ask)
        output.out.print(instance.slug, markup=False)
        output.progress(f"attach with: bottle attach {instance.slug}")
        return
    raise typer.Exit(attached_session(target, progress=output.progress, ask=_ask))


OutputFormat = Literal["text", "json", "stream-json"]


@app.command(**_AGENT_COMMAND)
def run(
    agent: AgentArg,
    cmd: Annotated[list[str] | None, typer.Argument(help="command to run in the agent")] = None,
    *,
    bottle: BottleOpt = None,
    prompt: Annotated[
        str | None,
        typer.Option(help="the task: the agent works on it alone, its answer on stdout"),
    ] = None,
    json_: Annotated[
        bool, typer.Option("--json", help="with --prompt: the structured result on stdout")
    ] = False,
    output_format: Annotated[
        OutputFormat | None,
        typer.Option(help="with --prompt: text, json or stream-json (one event a line)"),
    ] = None,
) -> None:
    """Run CMD, or a --prompt task, in a new AGENT, then stop.

    Exits with its exit code. CMD runs as given, except the agent's own program (claude),
    which keeps the bottle's system prompt, supervise tools and permission flags.
    """
    from bottle.errors import Refused
    from bottle.session import headless_argv, headless_prompt_run, headless_run

    argv = _argv(cmd, required=False)
    _require_task(prompt)
    if prompt is not None and argv:
        raise Refused(
            "give either --prompt or a command after --, not both",
            hint=f"bottle run {agent} --prompt 'the task', or bottle run {agent} -- CMD",
        )
    if prompt is None and not argv:
        raise Refused(
            "nothing to run: give the task with --prompt, or a command after --",
            hint=f"bottle run {agent} --prompt 'the task', or bottle run {agent} -- CMD",
        )
    if prompt is None and (json_ or output_format):
        raise Refused(
            "--json and --output-format shape the agent's answer to --prompt",
            hint="A command after -- prints what it prints.",
        )
    if json_ and output_format not in (None, "json"):
        raise Refused(
            f"--json asks for json, --output-format for {output_format}",
            hint="Give one of them.",
        )
    form: OutputFormat = "json" if json_ else output_format or "text"
    target = _bottle(agent, bottle)
    if prompt is not None:
        # Through the session that follows a capability swap: the agent's work goes on.
        # JSON on stdout is read by a program: no build view on stderr either.
        quiet = output.progress if form == "text" else output.quiet_progress
        code = headless_prompt_run(target, prompt, output=form, progress=quiet, ask=_ask)
    else:
        run_argv = headless_argv(target, cmd=argv)
        code = headless_run(target, run_argv, progress=output.progress, ask=_ask)
    raise typer.Exit(code)


def _require_task(prompt: str | None) -> None:
    from bottle.errors import Refused

    if prompt is not None and not prompt.strip():
        raise Refused("the task is empty", hint="Give it with --prompt 'what to do'.")


@app.command()
def attach(slug: SlugArg) -> None:
    """Hand this terminal to the agent program of a running instance.

    A preserved one (its session died) becomes this session's: exiting cleanly finishes it.
    One whose containers stopped is brought back with 'bottle resume'.
    """
    from bottle.session import attach_session

    raise typer.Exit(attach_session(_open(slug), progress=output.progress))


@app.command()
def resume(
    slug: SlugArg,
    prompt: Annotated[
        str | None,
        typer.Option("--prompt", "-p", help="continue headless on PROMPT, then stop"),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="bring it up and leave it running")
    ] = False,
) -> None:
    """Start a stopped or finished instance again and continue it.

    A preserved one too (its containers stopped). Same state directory, routes in force,
    transcript, home and workspace; the agent program starts with its resume command
    (claude --continue, codex resume --last) and gets the terminal, as 'bottle start' does.
    """
    from bottle.errors import Refused
    from bottle.session import resumed_session

    _require_task(prompt)
    if detach and prompt is not None:
        raise Refused(
            "--prompt runs the agent on a task until it ends; --detach leaves it idle",
            hint=f"bottle resume {slug} --prompt 'the task', or bottle resume {slug} --detach",
        )
    instance = _open(slug)
    if detach:
        instance.resume(progress=output.progress, ask=_ask)
        output.out.print(instance.slug, markup=False)
        output.progress(f"attach with: bottle attach {instance.slug}")
        return
    code = resumed_session(instance, progress=output.progress, ask=_ask, prompt=prompt)
    raise typer.Exit(code)


@app.command("exec", **_AGENT_COMMAND)
def exec_(
    slug: SlugArg,
    cmd: Annotated[list[str] | None, typer.Argument(help="command to run")] = None,
    service: Annotated[str, typer.Option(help="service to run it in")] = "agent",
) -> None:
    """Run CMD inside a running instance.

    Exits with CMD's exit code; the command and its exit code are recorded in the
    instance's transcript directory (never an environment value).
    """
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    instance = _open(slug)
    done = instance.exec(_argv(cmd), tty=tty, service=service, record=True)
    if done.exit_code != 0:
        # Only a failed exec pays for a look: docker's own "is not running" names no fix.
        _require_running(instance, service)
    raise typer.Exit(done.exit_code)


def _require_running(instance: Any, service: str) -> None:
    """StateError naming ``bottle resume`` when ``service``'s container does not run."""
    from bottle.errors import StateError
    from bottle.instance import WELL

    state = instance.health().get(service, "missing")
    if state not in WELL:
        raise StateError(
            f"{service} of {instance.slug} is not running (its container is {state})",
            hint=f"Bring it back with 'bottle resume {instance.slug}'.",
        )


@app.command()
def stop(
    slugs: SlugsArg = None,
    all_: Annotated[bool, typer.Option("--all", help="stop every running instance")] = False,
) -> None:
    """Take instances down; their state directories stay.

    compose.log keeps every container's log, its last lines included. With --all and
    nothing running, there is nothing to do.
    """
    from bottle.instances import instances

    targets = list(slugs or [])
    if all_:
        up = {"running", "degraded", "preserved"}
        targets += [r.slug for r in instances(_settings()) if r.status in up]
        if not targets:
            return  # nothing running: the state asked for is already there
    if not targets:
        output.error("no instance named", "Give one or more slugs (see 'bottle ls') or --all.")
        raise typer.Exit(2)
    from bottle_cli.quick import stop_each

    if stop_each(targets, _settings()):
        raise typer.Exit(1)  # down left something behind: the library said what


@app.command("ls")
def ls(
    json_: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="print slugs only")] = False,
) -> None:
    """List instances: state directories joined with compose."""
    from bottle.instances import instances
    from bottle_cli import listing

    listing.show(instances(_settings()), json_=json_, quiet=quiet)


def _ask_kept(plan: Any, *, yes: bool) -> None:
    """Stopped and failed state goes only after a yes on a terminal (or ``--all``)."""
    names = ", ".join(plan.kept_state)
    what = f"the state of {len(plan.kept_state)} stopped/failed instance(s) ({names})"
    if not yes and sys.stdin.isatty():
        question = f"Also remove {what}: audit log, proposals, capabilities?"
        if typer.confirm(question, default=False, err=True):
            plan.remove_kept()
            return
    else:
        output.warn(f"keeping {what}")
    output.progress("to remove them too: bottle cleanup --all")


@app.command()
def logs(
    slug: SlugArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing")] = False,
    service: Annotated[list[str] | None, typer.Option(help="only these services")] = None,
) -> None:
    """Print the logs of an instance (compose.log once stopped)."""
    instance = _open(slug)
    from bottle.state import DOWN

    if instance.status in DOWN:
        output.block(_saved_log(instance.state.compose_log))
        return
    if follow:
        raise typer.Exit(instance.follow_logs(services=service or (), on_line=output.line))
    output.block(instance.logs(services=service or ()) + "\n")


@app.command()
def transcript(slug: SlugArg, json_: JsonOpt = False) -> None:
    """Print an instance's conversation, in order.

    Turns, tool calls and results, with egress refusals and proposals between them
    (--json: one event a line).
    """
    import json

    from bottle.text import inert
    from bottle.transcripts import events

    instance = _open(slug)
    found = events(instance.state, instance.metadata.provider)
    if json_:
        # ASCII-escaped JSON: nothing the agent wrote reaches the terminal raw.
        for event in found:
            print(json.dumps(event.to_json()))
        return
    if not found:
        output.progress(f"{instance.slug} has no conversation in {instance.state.transcript}")
        return
    for event in found:
        # The writer's timestamp, agent text like the rest: eight raw characters can clear
        # the screen or set the window title.
        stamp = inert(event.time[11:19]) if len(event.time) >= 19 else "--:--:--"
        body = inert(event.text, multiline=True).replace("\n", "\n" + " " * 21)
        output.out.print(f"{stamp} {event.kind:<11} {body}", markup=False, highlight=False)


def _saved_log(path: Path) -> str:
    from bottle.errors import StateError

    try:
        # Containers wrote these lines: undecodable bytes are shown, not fatal.
        return path.read_text(errors="replace") if path.exists() else ""
    except OSError as exc:
        raise StateError(
            f"cannot read the saved log {path}: {exc.strerror or exc}",
            hint="Check the state directory's permissions ('bottle ls').",
        ) from exc


@app.command()
def check(slug: SlugArg, json_: JsonOpt = False) -> None:
    """Probe every way out of a running bottle; exit 1 on a leak.

    The probes run inside the agent's container.
    """
    from bottle.checks import run_checks

    results = run_checks(_open(slug))
    if json_:
        output.print_json([r.to_dict() for r in results])
    else:
        rows = [[r.where, r.check, r.expected, r.seen, "ok" if r.ok else "LEAK"] for r in results]
        output.table(["where", "check", "expected", "seen", "ok"], rows)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


@app.command()
def cleanup(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
    all_: Annotated[
        bool, typer.Option("--all", help="also remove stopped and failed state directories")
    ] = False,
) -> None:
    """Remove finished instances; take down leftovers and orphans.

    Stopped and failed instances keep their state (audit log, proposals) unless --all
    is given or you say yes on a terminal.
    """
    from bottle.instances import plan_cleanup, run_cleanup

    plan = plan_cleanup(_settings(), everything=all_)
    if plan.kept_state:
        _ask_kept(plan, yes=yes)
    if plan.empty:
        output.progress("nothing to clean up")
        return
    for slug in plan.take_down:
        output.err.print(f"take down   {slug}", markup=False)
    for slug in plan.remove_state:
        output.err.print(f"remove dir  {slug}", markup=False)
    for cid in plan.orphan_containers:
        output.err.print(f"remove container {cid[:12]}", markup=False)
    for nid in plan.orphan_networks:
        output.err.print(f"remove network   {nid[:12]}", markup=False)
    if not yes and not typer.confirm("Go ahead?", err=True):
        raise typer.Exit(1)
    failed = 0
    for step in run_cleanup(plan, _settings()):
        target = step.target if step.action in ("take down", "remove dir") else step.target[:12]
        if step.error is None:
            output.progress(f"done   {step.action} {target}")
        else:
            failed += 1
            output.error(f"{step.action} {target}: {step.error.message}", step.error.hint)
    if failed:
        output.progress(f"cleaned up, except {failed} failed (above)")
        raise typer.Exit(1)
    output.progress("cleaned up")


@app.command("trust")
def trust_(
    paths: Annotated[list[Path] | None, typer.Argument(help="repository agent files")] = None,
    list_: Annotated[bool, typer.Option("--list", help="show what is trusted")] = False,
    json_: JsonOpt = False,
) -> None:
    """Let repository agent files run, as they are now.

    Repository agents are ./.bottle/agents/NAME.md; a changed file needs trusting again.
    """
    from bottle import trust

    home = _settings().home
    if list_ or not paths:
        entries = trust.trusted(home)
        if json_:
            output.print_json({p: e.model_dump(mode="json") for p, e in entries.items()})
            return
        output.table(
            ["file", "sha256", "trusted at"],
            [
                [p, e.sha256[:16], e.trusted_at.strftime("%Y-%m-%d %H:%M")]
                for p, e in entries.items()
            ],
        )
        return
    for path in paths:
        entry = trust.trust(home, path)
        output.progress(f"trusted {trust.key(path)} (sha256 {entry.sha256[:16]}…)")


@app.command()
def untrust(
    paths: Annotated[list[Path], typer.Argument(help="repository agent files")],
) -> None:
    """Forget the trust given to repository agent files."""
    from bottle import trust

    home = _settings().home
    for path in paths:
        known = trust.untrust(home, path)
        output.progress(f"{'untrusted' if known else 'was not trusted:'} {trust.key(path)}")


#: The variable a shell's completion function sets when it asks ``bottle`` for words.
COMPLETE_VAR = "_BOTTLE_COMPLETE"


class Shell(StrEnum):
    bash = "bash"
    zsh = "zsh"
    fish = "fish"


@app.command()
def completion(shell: Annotated[Shell, typer.Argument(help="bash, zsh or fish")]) -> None:
    """Print the shell completion script for SHELL.

    For bash, add eval "$(bottle completion bash)" to ~/.bashrc.
    """
    from typer._completion_shared import get_completion_script

    print(get_completion_script(prog_name="bottle", complete_var=COMPLETE_VAR, shell=shell))


decisions.register(app)


# -- entry point -----------------------------------------------------------------------------


#: Exit code after Ctrl-C (128 + SIGINT), once the library's cleanup ran.
INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """The one error boundary; returns the exit code (the console script exits with it).

    Bottle errors print a message and a hint, never a traceback; ``--debug`` (before the
    command) or ``BOTTLE_DEBUG=1`` adds the cause chain, and an internal error's traceback.
    Words after the command are the command's: ``bottle exec x -- pytest --debug`` keeps
    the agent's ``--debug``.
    """
    from typer._click.exceptions import UsageError
    from typer.exceptions import TyperException

    args = list(sys.argv[1:] if argv is None else argv)
    options = RunOptions(debug=os.environ.get("BOTTLE_DEBUG") == "1")
    command = cli()
    try:
        # Without standalone mode, typer returns a command's typer.Exit code, and 130 after
        # Ctrl-C inside a command; what it raises is handled here.
        with running(options):
            try:
                code = command.main(args=args, prog_name="bottle", standalone_mode=False)
            finally:
                # A build cut short leaves its live view: end it before any message.
                output.progress.close()
    except UsageError as exc:
        code = _usage_error(exc)
    except TyperException as exc:
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            output.error(exc.message)
        code = exc.exit_code
    except typer.Abort:
        output.err.print("aborted", markup=False)
        code = INTERRUPTED
    except KeyboardInterrupt:
        output.err.print("interrupted", markup=False)
        code = INTERRUPTED
    except Exception as exc:
        code = _report(exc, options.debug)
    return code if isinstance(code, int) else 0


def cli() -> Any:
    """The click command of ``bottle``, help pages in docker's style (``syntax.styled``)."""
    if COMPLETE_VAR in os.environ:
        # A shell asks for completions (see 'bottle completion'): typer's shell classes.
        from typer._completion_classes import completion_init

        completion_init()
    return syntax.styled(typer.main.get_command(app))


def _usage_error(exc: Any) -> int:
    """``error: <what>`` and a hint naming the command's help, never a usage dump."""
    ctx = exc.ctx
    where = ctx.command_path if ctx is not None else "bottle"
    hint = f"See '{where} --help'."
    if ctx is not None and isinstance(ctx.command, syntax.AgentCommand):
        hint = f"{syntax.RULE} {hint}"
    message = exc.format_message()
    output.error(message[:1].lower() + message[1:], hint)
    return int(exc.exit_code)


def _report(exc: Exception, debug: bool) -> int:
    import traceback

    from bottle.errors import BottleError, EngineError

    if isinstance(exc, BottleError):
        output.error(exc.message, exc.hint)
        if debug and isinstance(exc, EngineError):
            output.err.print(f"argv: {' '.join(exc.argv)}\n{exc.stderr}", markup=False)
        if debug and exc.__cause__ is not None:
            output.err.print("caused by:", markup=False)
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        return exc.exit_code
    output.error(f"internal error ({type(exc).__name__}: {exc}); this is a bug in bottle")
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    else:
        output.err.print("run again with 'bottle --debug ...' for the traceback", markup=False)
    return 1
