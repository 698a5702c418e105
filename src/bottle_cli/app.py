"""The ``bottle`` command: a thin typer app over the library.

Commands parse, call one library function and render. Imports of the library happen
inside the commands so that ``bottle --help`` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bottle_cli import output

app = typer.Typer(
    name="bottle",
    help="Run an AI coding agent in a bottle: a container whose only way out is its sidecars.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    add_completion=False,
)
egress_app = typer.Typer(
    help="The egress sidecar: routes, reload, decision log.", no_args_is_help=True
)
app.add_typer(egress_app, name="egress")

AgentArg = Annotated[str, typer.Argument(help="agent name (see 'bottle agents')")]
BottleOpt = Annotated[
    str | None, typer.Option("--bottle", "-b", help="bottle to use instead of the agent's own")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="print plain JSON on stdout")]
SlugArg = Annotated[str, typer.Argument(help="instance slug (or a unique prefix; see 'bottle ls')")]


def _settings() -> Any:
    from bottle.settings import Settings

    return Settings.from_env()


def _bottle(agent: str, bottle: str | None, args: list[str] | None = None) -> Any:
    from bottle import Bottle

    instance = Bottle(agent, bottle=bottle, args=args or ())
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


def _argv(cmd: list[str]) -> list[str]:
    """The command after ``--`` (click keeps the separator when options stop early)."""
    argv = cmd[1:] if cmd and cmd[0] == "--" else cmd
    if not argv:
        raise typer.BadParameter("give the command to run after --", param_hint="CMD")
    return argv


def _open(slug: str) -> Any:
    from bottle.instances import resolve

    return resolve(slug)


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
        ["agent", "bottle", "origin", "file", "description"],
        [[r.name, r.bottle, r.origin, r.path or "(built-in)", r.description] for r in rows],
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
                str(r.routes),
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

    target = _bottle(agent, bottle, [a for a in args or [] if a != "--"])
    if detach:
        instance = target.start(progress=output.progress, ask=_ask)
        output.out.print(instance.slug, markup=False)
        output.progress(f"attach with: bottle attach {instance.slug}")
        return
    raise typer.Exit(attached_session(target, progress=output.progress, ask=_ask))


@app.command(context_settings={"allow_interspersed_args": False})
def run(
    agent: AgentArg,
    cmd: Annotated[list[str], typer.Argument(help="command to run in the agent, after --")],
    bottle: BottleOpt = None,
) -> None:
    """Start AGENT, run CMD inside it headless, stop; exits with CMD's exit code."""
    from bottle.session import headless_run

    target = _bottle(agent, bottle)
    raise typer.Exit(headless_run(target, _argv(cmd), progress=output.progress, ask=_ask))


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
    slugs: Annotated[list[str] | None, typer.Argument(help="instances to stop")] = None,
    all_: Annotated[bool, typer.Option("--all", help="stop every running instance")] = False,
) -> None:
    """Save compose.log, then take the instance(s) down; the state directory stays."""
    from bottle.instances import instances

    targets = list(slugs or [])
    if all_:
        targets += [r.slug for r in instances() if r.status in {"running", "preserved"}]
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

    rows = instances()
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
                r.status,
                str(r.running),
                r.started_at.strftime("%Y-%m-%d %H:%M") if r.started_at else "-",
                r.cwd or "-",
            ]
            for r in rows
        ],
    )


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
        path = instance.state.compose_log
        output.out.print(path.read_text() if path.exists() else "", end="", markup=False)
        return
    if follow:
        raise typer.Exit(instance.follow_logs(services=service or ()))
    output.out.print(instance.logs(services=service or ()), markup=False)


@app.command()
def cleanup(
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Take down preserved instances and orphans; remove finished state directories."""
    from bottle.instances import plan_cleanup, run_cleanup

    plan = plan_cleanup()
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
    run_cleanup(plan)
    output.progress("cleaned up")


# -- egress and the operator's decisions ----------------------------------------------------

audit_app = typer.Typer(
    help="The tamper-evident audit log of operator decisions.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")


@egress_app.command("reload")
def egress_reload(slug: SlugArg) -> None:
    """Validate live-config/egress/routes.yaml, SIGHUP egress, confirm the new table is live."""
    from bottle.sidecars import egress

    status = egress.reload(_open(slug))
    output.progress(f"egress generation {status.generation} is live")


@egress_app.command("routes")
def egress_routes(slug: SlugArg, json_: JsonOpt = False) -> None:
    """Show the routes in force."""
    from bottle.sidecars import egress

    routes = egress.load_routes(_open(slug))
    if json_:
        output.print_json(routes.model_dump(mode="json")["routes"])
        return
    output.out.print(egress.routes_yaml(routes).decode(), end="", markup=False)


@egress_app.command("log")
def egress_log(
    slug: SlugArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing")] = False,
    json_: JsonOpt = False,
) -> None:
    """The decision log: one line per request (never a secret)."""
    import json as _json
    import time

    path = _open(slug).state.egress_log
    lines = path.read_text().splitlines() if path.exists() else []
    if json_ and not follow:
        output.print_json([_json.loads(line) for line in lines if line.strip()])
        return

    def show(line: str) -> None:
        if json_:
            print(line, flush=True)
            return
        e = _json.loads(line)
        output.out.print(
            f"{e.get('time', '')} {e.get('decision', ''):9} {e.get('method', '')} "
            f"{e.get('host', '')}{e.get('path', '')}  {e.get('reason') or ''}",
            markup=False,
        )

    for line in lines:
        show(line)
    if follow:
        with path.open() as handle:
            handle.seek(0, 2)
            while True:
                line = handle.readline()
                if line:
                    show(line.rstrip("\n"))
                else:
                    time.sleep(0.2)


@app.command()
def allow(
    slug: SlugArg,
    host: Annotated[str, typer.Argument(help="host to allow, e.g. api.example.com")],
    path: Annotated[list[str] | None, typer.Option("--path", help="path prefix or ^regex")] = None,
    method: Annotated[list[str] | None, typer.Option("--method", help="HTTP method")] = None,
    reason: Annotated[str, typer.Option(help="why, for the audit log")] = "",
) -> None:
    """Add a route to a running instance (no restart) and audit it."""
    from pydantic import ValidationError

    from bottle.errors import ApplyError
    from bottle.operator import allow as allow_route
    from bottle.policy import Route

    try:
        route = Route(host=host, paths=tuple(path or ()), methods=tuple(method or ()))
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ApplyError(message, hint="Give a bare host name, paths starting with '/'.") from None
    allow_route(_open(slug), route, reason=reason)
    output.progress(f"allowed {host} in {slug}")


@app.command()
def queue(json_: JsonOpt = False) -> None:
    """Pending proposals of every instance."""
    from bottle.instances import instances
    from bottle.operator import proposal_queue

    rows = []
    for info in instances():
        if info.status != "running":
            continue
        listing = proposal_queue(_open(info.slug)).list(status="pending")
        for problem in listing.problems:
            output.warn(f"{info.slug}: {problem}")
        for p in listing.proposals:
            rows.append({"slug": info.slug, **p.model_dump(mode="json")})
    if json_:
        output.print_json(rows)
        return
    output.table(
        ["slug", "id", "tool", "what", "justification"],
        [
            [r["slug"], str(r["id"]), r["tool"], _what(r["payload"]), r["justification"]]
            for r in rows
        ],
    )


def _what(payload: dict[str, Any]) -> str:
    if "dockerfile" in payload:
        return f"Dockerfile ({len(payload['dockerfile'].splitlines())} lines)"
    return str(payload.get("url") or payload.get("host", ""))


@app.command()
def approve(
    slug: SlugArg,
    proposal_id: Annotated[int, typer.Argument(help="proposal id (see 'bottle queue')")],
    reason: Annotated[str | None, typer.Option(help="why, for the audit log")] = None,
) -> None:
    """Apply a pending proposal to the live instance, then tell the agent."""
    from bottle.operator import approve as approve_proposal

    decided = approve_proposal(_open(slug), proposal_id, reason=reason)
    output.progress(f"proposal {decided.id} approved and applied")


@app.command()
def reject(
    slug: SlugArg,
    proposal_id: Annotated[int, typer.Argument(help="proposal id")],
    reason: Annotated[str, typer.Option(help="why: the agent reads this")],
) -> None:
    """Refuse a pending proposal; the agent is told the reason."""
    from bottle.operator import reject as reject_proposal

    reject_proposal(_open(slug), proposal_id, reason=reason)
    output.progress(f"proposal {proposal_id} rejected")


@audit_app.command("verify")
def audit_verify(slug: SlugArg) -> None:
    """Check the hash chain of an instance's audit log; exit 1 if anything was changed."""
    from bottle.operator import audit_log

    result = audit_log(_open(slug)).verify()
    if not result.ok:
        output.error(
            f"audit log broken at line {result.first_bad_line}: {result.problem}",
            "The log was changed after it was written; keep the file for investigation.",
        )
        raise typer.Exit(1)
    output.progress(f"audit log intact: {result.entries} entries")


# -- entry point -----------------------------------------------------------------------------


#: Exit code after Ctrl-C (128 + SIGINT), once the library's cleanup ran.
INTERRUPTED = 130


def main(argv: list[str] | None = None) -> None:
    """The one error boundary: bottle errors print a message and a hint, never a traceback."""
    from typer.exceptions import TyperException

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("BOTTLE_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    command = typer.main.get_command(app)
    try:
        code = command.main(args=args, prog_name="bottle", standalone_mode=False)
    except typer.Exit as exc:
        code = exc.exit_code
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
        code = _report(exc, debug)
    sys.exit(code if isinstance(code, int) else 0)


def _report(exc: Exception, debug: bool) -> int:
    from bottle.errors import BottleError, EngineError

    if isinstance(exc, BottleError):
        output.error(exc.message, exc.hint)
        if debug and isinstance(exc, EngineError):
            output.err.print(f"argv: {' '.join(exc.argv)}\n{exc.stderr}", markup=False)
        return exc.exit_code
    output.error(f"internal error ({type(exc).__name__}: {exc}); this is a bug in bottle")
    if debug:
        import traceback

        traceback.print_exception(exc)
    else:
        output.err.print("run again with --debug for the traceback", markup=False)
    return 1
