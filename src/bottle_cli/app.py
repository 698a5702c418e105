"""The ``bottle`` command: a thin typer app over the library.

Commands parse, call one library function and render. Imports of the library happen
inside the commands so that ``bottle --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from bottle_cli import decisions, output
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
)

AgentArg = Annotated[str, typer.Argument(help="agent name (see 'bottle agents')")]
BottleOpt = Annotated[
    str | None, typer.Option("--bottle", "-b", help="bottle to use instead of the agent's own")
]


def _bottle(agent: str, bottle: str | None, args: list[str] | None = None) -> Any:
    from bottle import Bottle

    instance = Bottle(agent, bottle=bottle, args=args or (), settings=_settings())
    for warning in instance.manifest.warnings:
        output.warn(warning)
    return instance


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
    """The words after ``--`` (click keeps the separator when options stop early)."""
    argv = list(cmd or [])
    argv = argv[1:] if argv and argv[0] == "--" else argv
    if required and not argv:
        raise typer.BadParameter("give the command to run after --", param_hint="CMD")
    return argv


@app.callback()
def _options(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            help="on an error, also print its cause and traceback (or set BOTTLE_DEBUG=1)",
        ),
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
) -> None:
    """Print the docker-compose.yml an instance of AGENT would be brought up with."""
    from bottle.compose import dump_yaml

    target = _bottle(agent, bottle)
    plan = target.plan()
    if plan.missing_env:
        output.warn(f"not set on this host (needed at start): {', '.join(plan.missing_env)}")
    output.out.print(dump_yaml(target.render()), end="", markup=False)


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
            [r.name, r.bottle, r.origin, r.trust or "-", r.path or "(built-in)", r.description]
            for r in rows
        ],
    )


@app.command()
def bottles(json_: JsonOpt = False) -> None:
    """List the bottles agents can run in, and the file each comes from."""
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
                r.provider,
                str(r.column("routes")),
                r.path or "(built-in)",
                r.description,
            ]
            for r in rows
        ],
    )


# -- instances -------------------------------------------------------------------------------


@app.command(context_settings={"allow_interspersed_args": False})
def start(
    agent: AgentArg = "shell",
    bottle: BottleOpt = None,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="leave it running")] = False,
    args: Annotated[list[str] | None, typer.Argument(help="extra agent arguments")] = None,
) -> None:
    """Start AGENT in its bottle and attach to it (or leave it running with --detach)."""
    from bottle.session import attached_session

    target = _bottle(agent, bottle, _argv(args, required=False))
    if detach:
        instance = target.start(progress=output.progress, ask=_ask)
        output.out.print(instance.slug, markup=False)
        output.progress(f"attach with: bottle attach {instance.slug}")
        return
    raise typer.Exit(attached_session(target, progress=output.progress, ask=_ask))


OutputFormat = Literal["text", "json", "stream-json"]


@app.command()
def run(
    agent: AgentArg,
    cmd: Annotated[
        list[str] | None, typer.Argument(help="command to run in the agent, after --")
    ] = None,
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
    """Start AGENT, run CMD (or the agent on --prompt) inside it headless, stop; exits with
    its exit code. CMD is run as given, except the agent's own program (claude), which
    keeps the bottle's system prompt, supervise tools and permission flags."""
    from bottle.errors import Refused
    from bottle.session import headless_argv, headless_run

    argv = _argv(cmd, required=False)
    if prompt is not None and argv:
        raise Refused(
            "give either --prompt or a command after --, not both",
            hint=f"bottle run {agent} --prompt 'the task', or bottle run {agent} -- CMD",
        )
    if prompt is None and not argv:
        raise Refused(
            "nothing to run",
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
    run_argv = headless_argv(target, prompt=prompt, cmd=argv, output=form)
    raise typer.Exit(headless_run(target, run_argv, progress=output.progress, ask=_ask))


@app.command()
def attach(slug: SlugArg) -> None:
    """Hand this terminal to the agent program of a running instance."""
    raise typer.Exit(_open(slug).attach(tty=sys.stdin.isatty()))


@app.command("exec", context_settings={"allow_interspersed_args": False})
def exec_(
    slug: SlugArg,
    cmd: Annotated[list[str], typer.Argument(help="command, after --")],
    service: Annotated[str, typer.Option(help="service to run it in")] = "agent",
) -> None:
    """Run a command inside a running instance; exits with its exit code."""
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    raise typer.Exit(_open(slug).exec(_argv(cmd), tty=tty, service=service).exit_code)


@app.command()
def stop(
    slugs: SlugsArg = None,
    all_: Annotated[bool, typer.Option("--all", help="stop every running instance")] = False,
) -> None:
    """Save compose.log, then take the instance(s) down; the state directory stays."""
    from bottle.instances import instances

    targets = list(slugs or [])
    if all_:
        up = {"running", "degraded", "preserved"}
        targets += [r.slug for r in instances(_settings()) if r.status in up]
    if not targets:
        output.error("no instance named", "Give one or more slugs (see 'bottle ls') or --all.")
        raise typer.Exit(2)
    for slug in targets:
        instance = _open(slug)
        instance.stop()
        output.progress(f"stopped {instance.slug}; its state is in {instance.state.path}")


@app.command("ls")
def ls(json_: JsonOpt = False) -> None:
    """List instances: state directories joined with docker compose ls."""
    from bottle.instances import instances

    rows = instances(_settings())
    if json_:
        output.print_json([row.model_dump(mode="json") for row in rows])
        return
    output.table(
        ["slug", "agent", "bottle", "status", "running", "started", "cwd"],
        [
            [
                r.slug,
                r.agent or "-",
                r.bottle or "-",
                _status(r),
                str(r.running),
                r.started_at.strftime("%Y-%m-%d %H:%M") if r.started_at else "-",
                r.cwd or "-",
            ]
            for r in rows
        ],
    )


def _status(row: Any) -> str:
    """``degraded (egress: exited)``: which sidecar is not well, and how."""
    from bottle.instance import WELL

    ill = [f"{name}: {state}" for name, state in row.sidecars.items() if state not in WELL]
    return f"{row.status} ({', '.join(ill)})" if ill else str(row.status)


@app.command()
def logs(
    slug: SlugArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing")] = False,
    service: Annotated[list[str] | None, typer.Option(help="only these services")] = None,
) -> None:
    """Print the logs of an instance (compose.log once it has stopped)."""
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
    """Print an instance's conversation: turns, tool calls and results, with egress
    refusals and proposals, in order (--json: one event a line)."""
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
        stamp = event.time[11:19] if len(event.time) >= 19 else "--:--:--"
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
    """Try every way out of a running bottle from inside its agent; exit 1 on a leak."""
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
) -> None:
    """Take down preserved instances and orphans; remove finished state directories."""
    from bottle.instances import plan_cleanup, run_cleanup

    plan = plan_cleanup(_settings())
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
    """Allow repository agent files (./.bottle/agents/NAME.md) to run, as they are now."""
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
    """Forget the trust given to repository agent files; they no longer start."""
    from bottle import trust

    home = _settings().home
    for path in paths:
        known = trust.untrust(home, path)
        output.progress(f"{'untrusted' if known else 'was not trusted:'} {trust.key(path)}")


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
    from typer.exceptions import TyperException

    args = list(sys.argv[1:] if argv is None else argv)
    options = RunOptions(debug=os.environ.get("BOTTLE_DEBUG") == "1")
    command = typer.main.get_command(app)
    try:
        # Without standalone mode, typer returns a command's typer.Exit code, and 130 after
        # Ctrl-C inside a command; what it raises is handled here.
        with running(options):
            code = command.main(args=args, prog_name="bottle", standalone_mode=False)
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
