"""The operator's commands: egress routes and log, the proposal queue, decisions, the audit log.

Every change goes through ``bottle.operator``: validate, apply live, then audit.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from bottle_cli import output
from bottle_cli.params import JsonOpt, SlugArg, open_instance, settings

if TYPE_CHECKING:
    from bottle.instance import Instance
    from bottle.proposals import Proposal
    from bottle.proposals.rows import Row
    from bottle.runtime.egress.records import LogRecord

egress_app = typer.Typer(
    help="The egress sidecar: routes, reload, decision log.", no_args_is_help=True
)
routes_app = typer.Typer(help="The live routes of an instance: show, edit.", no_args_is_help=True)
audit_app = typer.Typer(
    help="The tamper-evident audit log of operator decisions.", no_args_is_help=True
)

#: How often ``bottle queue --watch`` looks for new proposals, in seconds.
WATCH_INTERVAL = 1.0


def register(app: typer.Typer) -> None:
    app.add_typer(egress_app, name="egress")
    app.add_typer(routes_app, name="routes")
    app.add_typer(audit_app, name="audit")
    for command in (allow, queue, approve, reject, view):
        app.command()(command)


# -- egress ----------------------------------------------------------------------------------


@egress_app.command("reload")
def egress_reload(slug: SlugArg) -> None:
    """Validate a hand edit of the routes, then make it live.

    Checks live-config/egress/routes.yaml, sends egress SIGHUP and confirms the new
    table is in force.
    """
    status = open_instance(slug).routes.reload()
    output.progress(f"egress generation {status.generation} is live")


@egress_app.command("routes")
@routes_app.command("show")
def routes_show(slug: SlugArg, json_: JsonOpt = False) -> None:
    """Show the routes in force.

    Those egress runs: after a hand edit of the live file that does not parse (or is not
    reloaded yet), egress's own copy of what it loaded, with a warning naming the file.
    """
    instance = open_instance(slug)
    shown = instance.routes.in_force()
    if json_:
        output.print_json(
            {
                "routes": shown.routes.model_dump(mode="json")["routes"],
                "generation": shown.generation,
                "routes_sha256": shown.routes_sha256,
                "source": shown.source,
                "file": str(shown.file),
                "file_error": shown.file_error,
                "file_pending": shown.file_pending,
            }
        )
        return
    runs = f"egress runs generation {shown.generation}"
    if shown.file_error is not None:
        output.warn(f"the live routes file {shown.file} does not load: {shown.file_error}")
        output.warn(f"it is not in force; {runs}, shown below")
        output.hint(
            f"Fix the file, then 'bottle egress reload {instance.slug}' (or start over with "
            f"'bottle routes edit {instance.slug}'); until then these routes stay in force."
        )
    elif shown.file_pending:
        output.warn(f"the live routes file {shown.file} was changed and not reloaded")
        if shown.source == "egress":
            output.warn(f"it is not in force yet; {runs}, shown below")
        else:
            output.warn(f"what egress runs (generation {shown.generation}) may differ from it")
        output.hint(f"Make it live with 'bottle egress reload {instance.slug}'.")
    output.block(shown.routes.to_yaml().decode())


@routes_app.command("edit")
def routes_edit(
    slug: SlugArg,
    reason: Annotated[str, typer.Option(help="why, for the audit log")] = "",
) -> None:
    """Edit the live routes in $EDITOR.

    The edit is validated, applied without a restart, and audited.
    """
    from bottle.changes.routes import parse_routes
    from bottle.errors import ApplyError
    from bottle_cli.editor import edit_text

    instance = open_instance(slug)
    current = instance.routes.raw()
    edited = edit_text(current.decode(), extension=".yaml")
    if edited is None or edited.encode() == current:
        output.progress("routes unchanged")
        return
    try:
        routes = parse_routes(edited.encode(), source="the edited routes")
    except ApplyError as exc:
        raise ApplyError(
            exc.message, hint="Nothing changed; run 'bottle routes edit' again to fix it."
        ) from None
    instance.routes.apply(routes, reason=reason, based_on=current)
    output.progress(f"routes of {instance.slug} are live ({len(routes.routes)} routes)")


@egress_app.command("log")
def egress_log(
    slug: SlugArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing")] = False,
    json_: JsonOpt = False,
) -> None:
    """The decision log: one line per request, never a secret.

    With -f it follows until Ctrl-C.
    """
    path = open_instance(slug).state.egress_log
    if json_ and not follow:
        output.print_json([_as_json(e) for e in _log_records(path, follow=False)])
        return
    try:
        for e in _log_records(path, follow=follow):
            if json_:
                print(json.dumps(_as_json(e), sort_keys=True), flush=True)
                continue
            output.line(f"{e.time} {e.decision:9} {e.method} {e.host}{e.path}  {e.reason}")
    except KeyboardInterrupt:
        return  # following ends with Ctrl-C, like queue --watch


#: How often a follow loop looks for more, in seconds.
POLL_S = 0.2
#: The longest line of the decision log read (egress writes records of a few KiB).
MAX_LINE_CHARS = 1 << 20


def _as_json(record: LogRecord) -> dict[str, Any]:
    # The fields the line had: a record of an older egress is shown as it was written.
    return record.model_dump(mode="json", exclude_unset=True)


#: How often the log's files are opened again when egress rotated them meanwhile.
SNAPSHOT_TRIES = 5


def _log_records(path: Path, *, follow: bool) -> Iterator[LogRecord]:
    """The records of the decision log, its rotated files first (oldest first), then
    (``follow``) each one as it is written, into the next file when egress rotates it.

    The files are opened together (:func:`_snapshot`), so a rotation while they are read
    neither skips one nor reads one twice; following, the file it was on is read to its end,
    then every file written after it, however often egress rotated meanwhile.
    A line is used once its newline is there (egress may be half-way through writing it);
    a line that is not a decision record is reported and skipped, never fatal.
    """
    while not path.exists():
        if not follow:
            return
        time.sleep(POLL_S)
    opened = _snapshot(path)
    try:
        while opened:
            name, raw = opened.pop(0)
            try:
                if opened or not follow:
                    yield from _file_records(name, raw, follow=None)
                    continue
                # The newest: followed until egress moves it aside, then read to its end.
                yield from _file_records(name, raw, follow=path)
                # Still open, so its inode names it among the files and no new one reuses it.
                opened = _snapshot(path, after=os.fstat(raw.fileno()))
            finally:
                raw.close()
    finally:
        for _, raw in opened:
            raw.close()


def _snapshot(path: Path, after: os.stat_result | None = None) -> list[tuple[Path, BinaryIO]]:
    """The log's files open, oldest first, all as they were at one moment (those newer
    than the file ``after`` describes, when it is given and still kept)."""
    from bottle.errors import StateError
    from bottle.runtime.egress.records import log_files
    from bottle.safefs import open_read_regular

    names = log_files(path)
    for _ in range(SNAPSHOT_TRIES):
        opened: list[tuple[Path, BinaryIO]] = []
        try:
            for name in reversed(names):  # newest first: a rotation meanwhile changes `path`
                try:
                    opened.insert(0, (name, open_read_regular(name)))
                except FileNotFoundError:
                    continue
        except OSError as exc:
            for _, raw in opened:
                raw.close()
            raise StateError(f"cannot read {path}: {exc.strerror or exc}") from None
        if _unchanged(names, opened):
            return _newer(opened, after)
        for _, raw in opened:
            raw.close()
    raise StateError(f"cannot read {path}: egress rotated it {SNAPSHOT_TRIES} times while read")


def _unchanged(names: list[Path], opened: list[tuple[Path, BinaryIO]]) -> bool:
    """Whether each name still is the file opened under it (and no other has appeared)."""
    held = {name: os.fstat(raw.fileno()) for name, raw in opened}
    for name in names:
        try:
            now = os.stat(name, follow_symlinks=False)
        except FileNotFoundError:
            if name in held:
                return False
            continue
        was = held.get(name)
        if was is None or _ident(was) != _ident(now):
            return False
    return True


def _newer(
    opened: list[tuple[Path, BinaryIO]], after: os.stat_result | None
) -> list[tuple[Path, BinaryIO]]:
    if after is None:
        return opened
    held = [_ident(os.fstat(raw.fileno())) for _, raw in opened]
    if _ident(after) in held:
        start = held.index(_ident(after)) + 1
    else:  # dropped meanwhile: every file but the run's first (.0) came after it
        start = 1 if opened and opened[0][0].name.endswith(".0") else 0
    for _, raw in opened[:start]:
        raw.close()
    return opened[start:]


def _ident(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


def _replaced(path: Path, fd: int) -> bool:
    try:
        return _ident(os.stat(path, follow_symlinks=False)) != _ident(os.fstat(fd))
    except FileNotFoundError:
        return False  # between egress's rename and its new file: look again


def _file_records(
    name: Path, raw: BinaryIO, *, follow: Path | None
) -> Generator[LogRecord, None, None]:
    """One open file's records; ``follow``: until the file at that path is another one
    (egress rotated this one), then what is left of this one."""
    import io

    from pydantic import ValidationError

    from bottle.runtime.egress.records import LogRecord, Note

    handle = io.TextIOWrapper(raw, encoding="utf-8", errors="replace")
    partial, last_pass, skipping = "", False, False
    while True:
        # Bounded: the file is egress's, and a compromised egress writes what it likes.
        chunk = handle.readline(MAX_LINE_CHARS + 1 - len(partial))
        if chunk and skipping:
            skipping = not chunk.endswith("\n")
            continue
        if chunk:
            partial += chunk
            if not partial.endswith("\n"):
                if len(partial) > MAX_LINE_CHARS:
                    output.warn(f"{name}: skipped a line of more than {MAX_LINE_CHARS} characters")
                    partial, skipping = "", True
                continue
        elif follow is not None and not last_pass:
            # Renamed aside (a new file at the name): what is left of this one first.
            last_pass = _replaced(follow, raw.fileno())
            if not last_pass:
                time.sleep(POLL_S)
            continue
        line, partial = partial.strip(), ""
        if line:
            try:
                record: LogRecord | None = LogRecord.model_validate_json(line)
                if record is not None and record.decision == "note":
                    record = Note.model_validate_json(line)  # with its counts
            except ValidationError:
                record = None
                output.warn(
                    f"{name}: skipped a line that is not a JSON object of the decision "
                    f"log: {line[:80]!r}"
                )
            if record is not None:
                yield record
        if not chunk:
            handle.detach()  # the caller closes the file
            return


# -- the operator's decisions ----------------------------------------------------------------


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
    allow_route(open_instance(slug), route, reason=reason)
    output.progress(f"allowed {host} in {slug}")


def queue(
    json_: JsonOpt = False,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="keep printing new proposals until Ctrl-C")
    ] = False,
) -> None:
    """Pending proposals of every running instance."""
    # Rows, not models: no engine, no pydantic, so this answers in a blink (--watch polls).
    from bottle.pending import pending_rows

    found, problems = pending_rows(settings())
    for problem in problems:
        output.warn(problem)
    if not watch:
        if json_:
            output.print_json([_row(slug, row) for slug, row in found])
        else:
            _table(found)
        return
    # Watching: one line (or one JSON object) per new proposal, as they are filed.
    seen: set[tuple[str, int]] = set()
    warned = set(problems)
    try:
        while True:
            fresh = [(slug, row) for slug, row in found if (slug, row.id) not in seen]
            for slug, row in fresh:
                seen.add((slug, row.id))
                if json_:
                    print(json.dumps(_row(slug, row), sort_keys=True), flush=True)
                else:
                    _table([(slug, row)])
            time.sleep(WATCH_INTERVAL)
            found, problems = pending_rows(settings())
            for problem in set(problems) - warned:
                output.warn(problem)
            warned |= set(problems)
    except KeyboardInterrupt:
        return


def _row(slug: str, row: Row) -> dict[str, Any]:
    return {"slug": slug, **row.data}


#: The most a table cell shows of agent text; the rest is in --json and at approve time.
CELL_CHARS = 100


def clip(text: str, limit: int = CELL_CHARS) -> str:
    """The first line of ``text``, made inert, cut to ``limit`` characters with a marker."""
    from bottle.text import inert

    lines = text.splitlines() or [""]
    shown = inert(lines[0])
    more = len(lines) > 1
    if len(shown) > limit:
        shown, more = shown[: limit - 1], True
    return shown + ("…" if more else "")


def _table(items: list[tuple[str, Row]]) -> None:
    output.table(
        ["slug", "id", "tool", "what", "justification"],
        keep={0, 1},
        rows=[
            [slug, str(row.id), row.tool, clip(row.what), clip(row.justification)]
            for slug, row in items
        ],
    )


def view() -> None:
    """Full-screen view of every instance's pending proposals.

    Keys: a approve, e edit, r reject.
    """
    try:
        from bottle_cli.view import QueueView
    except ModuleNotFoundError as exc:
        if exc.name != "textual":
            raise
        from bottle.errors import Failed

        raise Failed(
            "bottle view needs textual, which is not installed",
            hint="pip install 'bot-bottle[tui]', or use 'bottle queue --watch'.",
        ) from None
    QueueView(settings()).run()


def approve(
    slug: SlugArg,
    proposal_id: Annotated[int, typer.Argument(help="proposal id (see 'bottle queue')")],
    reason: Annotated[str | None, typer.Option(help="why, for the audit log")] = None,
    edit: Annotated[
        bool, typer.Option("--edit", help="edit the request in $EDITOR before approving it")
    ] = False,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes", "-y", help="build a capability Dockerfile, or let a git push by, unasked"
        ),
    ] = False,
    *,
    offline: Annotated[
        bool, typer.Option("--offline", help="build a capability Dockerfile with no network")
    ] = False,
) -> None:
    """Apply a pending proposal live, then tell the agent.

    A capability-block's Dockerfile is shown and must be confirmed (or --yes, or --edit):
    its RUN steps reach only what the bottle's egress routes allow (or nothing, --offline).
    """
    from bottle.operator import approve as approve_proposal
    from bottle.operator import pending_proposal

    instance = open_instance(slug)
    proposal = pending_proposal(instance, proposal_id)
    edited = None
    if edit:
        edited = edited_payload(proposal, instance.slug)
        if edited is None:
            output.progress(f"proposal {proposal_id} left pending (not saved, or emptied)")
            raise typer.Exit(1)
    elif proposal.tool == "capability-block" and not yes:
        _confirm_build(proposal, instance.slug)
    if proposal.tool == "git-push-allow":
        # Edited or not, the operator sees the gate's findings for the push that will go.
        _confirm_push(proposal, instance, yes=yes, edited=edited)
    decided = approve_proposal(
        instance,
        proposal_id,
        reason=reason,
        edited_payload=edited,
        settings=settings(),
        progress=output.progress,
        offline=offline,
    )
    what = " (as edited)" if decided.decision and decided.decision.edited else ""
    output.progress(f"proposal {decided.id} approved and applied{what}")


def _confirm_push(
    proposal: Proposal, instance: Instance, *, yes: bool, edited: dict[str, Any] | None = None
) -> None:
    """Show what git-gate itself found in the refused push (never the agent's account of
    it), then ask. With no refusal on record the approval refuses, naming why."""
    from pydantic import ValidationError

    from bottle.errors import ApplyError
    from bottle.gate_audit import refused_push
    from bottle.proposals import GitPushAllow
    from bottle.text import inert

    payload = proposal.payload
    if edited is not None:
        try:
            payload = GitPushAllow.model_validate(edited)
        except ValidationError:
            return  # the approval itself refuses the edit, naming the field
    assert isinstance(payload, GitPushAllow)
    refusal = refused_push(instance.state.path, payload.remote, payload.ref, payload.commit)
    if refusal is None:
        return
    found = "\n".join(f"  {inert(f)}" for f in refusal.findings)
    output.err.print(
        f"Proposal {proposal.id} of {instance.slug} asks to push {payload.commit} to "
        f"{payload.remote} {inert(payload.ref)} once, although git-gate's scan found "
        f"(its own record of {inert(refusal.time)}):\n{found}\n"
        f"Justification: {inert(proposal.justification)}",
        markup=False,
    )
    if yes:
        return
    if not sys.stdin.isatty():
        raise ApplyError(
            f"proposal {proposal.id} lets a push git-gate refused through, and there is no "
            "terminal to confirm it",
            hint=f"Review the findings above, then run: bottle approve {instance.slug} "
            f"{proposal.id} --yes",
        )
    if not typer.confirm("Let this push through, once?", err=True):
        output.progress(f"proposal {proposal.id} left pending")
        raise typer.Exit(1)


def build_text(proposal: Proposal, slug: str) -> str:
    """What the operator confirms of a capability-block, here and in ``bottle view``."""
    from bottle.proposals import CapabilityBlock
    from bottle.text import inert, numbered

    assert isinstance(proposal.payload, CapabilityBlock)
    # The exact bytes that will be built, numbered, every control character shown: an
    # escape sequence must not be able to paint a harmless Dockerfile over the real one.
    return (
        f"Proposal {proposal.id} of {inert(slug)} asks to build, on the agent's image:\n"
        f"{numbered(proposal.payload.dockerfile)}\n"
        f"Justification: {inert(proposal.justification)}"
    )


def _confirm_build(proposal: Proposal, slug: str) -> None:
    from bottle.errors import ApplyError

    if not sys.stdin.isatty():
        raise ApplyError(
            f"proposal {proposal.id} builds a Dockerfile, and there is no terminal to confirm it",
            hint=f"Review it (bottle queue --json), then run: bottle approve {slug} "
            f"{proposal.id} --yes",
        )
    output.err.print(build_text(proposal, slug), markup=False)
    if not typer.confirm("Build it and replace the agent container?", err=True):
        output.progress(f"proposal {proposal.id} left pending")
        raise typer.Exit(1)


def edited_payload(proposal: Proposal, slug: str) -> dict[str, Any] | None:
    """The payload after the operator's editor; ``None`` when they did not save or emptied it.

    The editor shows the file to a terminal, so agent text in it must be inert too: the
    justification (a comment) is written escaped; a request field with a control or
    invisible character cannot be, without changing what is approved, so it is refused.
    """
    from bottle.errors import ApplyError
    from bottle.proposals import request_fields
    from bottle.text import inert
    from bottle_cli.editor import edit_text, parse_payload, payload_yaml

    fields = request_fields(proposal.payload)
    if any(inert(text, multiline=True) != text for text in _strings(fields)):
        raise ApplyError(
            f"proposal {proposal.id} contains control or invisible characters (shown "
            "escaped in 'bottle queue'), which an editor would show as something else",
            hint=f"Review it with 'bottle queue --json', then approve it unedited or run: "
            f"bottle reject {slug} {proposal.id} --reason ...",
        )
    header = (
        f"Proposal {proposal.id} of {slug}: {proposal.tool}\n"
        f"Justification: {inert(proposal.justification)}\n"
        "Edit the request below; saving approves what the file says.\n"
        "Quitting without saving, or an empty file, leaves the proposal pending."
    )
    text = payload_yaml(header, fields)
    edited = edit_text(text, extension=".yaml")
    return parse_payload(edited) if edited is not None else None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def reject(
    slug: SlugArg,
    proposal_id: Annotated[int, typer.Argument(help="proposal id")],
    reason: Annotated[str, typer.Option(help="why: the agent reads this")],
) -> None:
    """Refuse a pending proposal; the agent is told the reason."""
    from bottle.operator import reject as reject_proposal

    reject_proposal(open_instance(slug), proposal_id, reason=reason)
    output.progress(f"proposal {proposal_id} rejected")


# -- the audit log ---------------------------------------------------------------------------


@audit_app.command("verify")
def audit_verify(slug: SlugArg) -> None:
    """Check an instance's audit log; exit 1 if it was changed.

    Checks the hash chain, its anchored head (a cut tail shows) and the checkpoint in
    metadata.json (a log deleted or cut together with its anchor shows).
    """
    from bottle.audit import AuditLog
    from bottle.sidecars import import_records

    instance = open_instance(slug)
    unimported = import_records(instance.state.path)
    result = AuditLog.of(instance.state).verify()
    if not result.ok:
        output.error(
            f"audit log broken at line {result.first_bad_line}: {result.problem}",
            "The log was changed after it was written; keep the file for investigation.",
        )
        raise typer.Exit(1)
    if unimported:
        output.error(
            f"what a sidecar logged could not be added to the audit log: {'; '.join(unimported)}",
            f"Keep {instance.state.path / 'logs'} for investigation; the log itself verifies.",
        )
        raise typer.Exit(1)
    # The head hash, kept elsewhere, also catches a log cut short at its end.
    output.progress(f"audit log intact: {result.entries} entries, head {result.head}")
