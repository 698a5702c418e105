"""``bottle view``: a full-screen list of pending proposals across every running instance.

A textual app over the same library calls as ``bottle queue/approve/reject``: the list
refreshes every second in a worker thread, and a decision (a capability build can take
minutes) runs in a worker too, its progress in the status line. Needs ``bot-bottle[tui]``.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rich.text import Text
from textual import work
from textual.app import App, ComposeResult, SuspendNotSupported
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Footer, Header, Input, Label, Static

from bottle.errors import BottleError
from bottle.operator import Pending, pending_proposals
from bottle.settings import Settings
from bottle.text import inert
from bottle_cli.decisions import build_text, clip

#: Seconds between two reads of the queue.
REFRESH_S = 1.0


class ReasonScreen(ModalScreen[str | None]):
    """Ask why a proposal is rejected; the agent reads the answer."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, title: str) -> None:
        super().__init__()
        self.title_text = title

    def compose(self) -> ComposeResult:
        with Vertical(id="reason"):
            yield Label(self.title_text)
            yield Input(placeholder="why (the agent reads this); Enter rejects, Esc cancels")

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip() or None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class ConfirmScreen(ModalScreen[bool]):
    """What an approval lets through, shown before it is given: y gives it, n or Esc not."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No, leave it pending"),
    ]

    def __init__(self, text: str, question: str) -> None:
        super().__init__()
        self.text = text
        self.question = question

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm"):
            yield Static(self.text, markup=False)
            yield Static(f"{self.question} [y/N]", markup=False)

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


def push_allow_text(item: Pending, fields: dict[str, Any], settings: Settings) -> str | None:
    """What ``bottle approve`` shows of a git-push-allow: git-gate's own findings in the
    push it refused (``gate_audit.refused_push``), never the agent's account of them; None
    when the gate refused no such push (the approval itself then refuses, saying why)."""
    from bottle.gate_audit import refused_push
    from bottle.instance import Instance

    remote, ref, commit = (str(fields.get(k, "")) for k in ("remote", "ref", "commit"))
    state = Instance.open(item.slug, settings=settings).state.path
    refusal = refused_push(state, remote, ref, commit)
    if refusal is None:
        return None
    found = "\n".join(f"  {inert(f)}" for f in refusal.findings)
    return (
        f"Proposal {item.proposal.id} of {item.slug} asks to push {inert(commit)} to "
        f"{inert(remote)} {inert(ref)} once, although git-gate's scan found (its own record "
        f"of {inert(refusal.time)}):\n{found}\n"
        f"Justification: {inert(item.proposal.justification)}"
    )


class QueueView(App[None]):
    """Pending proposals; a approves, e edits then approves, r rejects, q quits."""

    TITLE = "bottle: pending proposals"
    CSS = """
    DataTable { height: 1fr; }
    #detail { height: auto; max-height: 50%; border-top: solid $accent; padding: 0 1; }
    #status { height: 1; padding: 0 1; color: $text-muted; }
    #reason { width: 80%; height: auto; border: solid $accent; padding: 1 2; }
    #confirm { width: 90%; height: auto; max-height: 90%; border: solid $warning; padding: 1 2; }
    ReasonScreen, ConfirmScreen { align: center middle; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "approve", "Approve"),
        Binding("e", "edit", "Edit, then approve"),
        Binding("r", "reject", "Reject"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__()
        # Read here, on the main thread: the workers that use them run in threads.
        self.settings = Settings.default() if settings is None else settings
        self.items: dict[str, Pending] = {}
        self.busy = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(cursor_type="row", zebra_stripes=True)
        # Agents write justifications and Dockerfiles: never read them as markup.
        yield Static(id="detail", markup=False)
        yield Static("reading the queue…", id="status", markup=False)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("instance", "id", "tool", "what", "justification")
        self.refresh_queue()
        self.set_interval(REFRESH_S, self.refresh_while_running)

    def refresh_while_running(self) -> None:
        # The quit cancels every worker first: a read started after it (the timer's next
        # tick, a decision that ended just then) fails on the closed executor, and textual
        # makes that a fatal error, its traceback rendered (a quarter of a second) for no one.
        if self.is_running:
            self.refresh_queue()

    # -- reading ---------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="refresh")
    def refresh_queue(self) -> None:
        try:
            found, problems = pending_proposals(self.settings)
        except BottleError as exc:
            self.call_from_thread(self.set_status, f"cannot read the queue: {exc.message}")
            return
        self.call_from_thread(self.show, found, problems)

    def show(self, found: list[Pending], problems: list[str]) -> None:
        if not self.is_running:
            return  # a read that ended after the quit: the widgets are being taken down
        table = self.query_one(DataTable)
        selected = self.selected_key()
        fresh = {f"{item.slug}/{item.proposal.id}": item for item in found}
        if list(fresh) != list(self.items):
            table.clear()
            for key, item in fresh.items():
                proposal = item.proposal
                table.add_row(
                    Text(item.slug),
                    Text(str(proposal.id)),
                    Text(proposal.tool),
                    Text(clip(proposal.payload.summary(), 80)),
                    Text(clip(proposal.justification, 80)),
                    key=key,
                )
            self.items = fresh
            if selected in fresh:
                table.move_cursor(row=table.get_row_index(selected))
        self.show_detail()
        if not self.busy:
            counted = f"{len(fresh)} pending"
            self.set_status(f"{counted}; {problems[0]}" if problems else counted)

    def selected_key(self) -> str | None:
        table = self.query_one(DataTable)
        if not self.items or table.cursor_row < 0 or table.cursor_row >= table.row_count:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return str(key) if key is not None else None

    def selected(self) -> Pending | None:
        key = self.selected_key()
        return self.items.get(key) if key else None

    def on_data_table_row_highlighted(self, _event: DataTable.RowHighlighted) -> None:
        self.show_detail()

    def show_detail(self) -> None:
        from bottle.proposals import request_fields
        from bottle_cli.editor import payload_yaml

        item = self.selected()
        detail = self.query_one("#detail", Static)
        if item is None:
            detail.update("No pending proposal. Agents file them through supervise.")
            return
        proposal = item.proposal
        # Inert before it is cut into comment lines: a carriage return (or any other line
        # boundary splitlines knows) in the justification must not start a line of its own.
        why = inert(proposal.justification, multiline=True)
        header = f"{item.slug} #{proposal.id} {proposal.tool}\n{why}"
        detail.update(inert(payload_yaml(header, request_fields(proposal.payload)), multiline=True))

    def set_status(self, text: str) -> None:
        if not self.is_running:
            return  # a worker's line after the quit: the widgets are being taken down
        # Problems name files and what was wrong in them: agent text, made inert.
        self.query_one("#status", Static).update(inert(text))

    # -- deciding --------------------------------------------------------------------------

    def action_approve(self) -> None:
        if (item := self.selected()) is not None and not self.busy:
            self.approve(item)

    def approve(self, item: Pending, edited: dict[str, Any] | None = None) -> None:
        """Approve, after the confirmation ``bottle approve`` asks: a git-push-allow's
        findings, a capability-block's exact Dockerfile (unless the operator wrote it in
        their editor, as ``bottle approve --edit``)."""
        text: str | None = None
        if item.proposal.tool == "git-push-allow":
            from bottle.proposals import request_fields

            fields = edited if edited is not None else request_fields(item.proposal.payload)
            try:
                text = push_allow_text(item, fields, self.settings)
            except BottleError as exc:
                self.notify(inert(exc.message), severity="error", timeout=10, markup=False)
                return
            question = "Let this push through, once?"
        elif item.proposal.tool == "capability-block" and edited is None:
            text = build_text(item.proposal, item.slug)
            question = "Build it and replace the agent container?"
        if text is not None:

            def answered(yes: bool | None) -> None:
                if yes and not self.busy:
                    self.busy = True
                    self.decide(item, approved=True, edited=edited)
                elif not yes:
                    self.set_status(f"{item.slug} #{item.proposal.id} left pending")

            self.push_screen(ConfirmScreen(text, question), answered)
            return
        self.busy = True  # before the worker starts: a second key press must not apply twice
        self.decide(item, approved=True, edited=edited)

    def action_edit(self) -> None:
        from bottle_cli.decisions import edited_payload

        item = self.selected()
        if item is None or self.busy:
            return
        try:
            with self.suspend():
                edited = edited_payload(item.proposal, item.slug)
        except BottleError as exc:
            self.notify(inert(exc.message), severity="error", timeout=10, markup=False)
            return
        except SuspendNotSupported:
            self.notify("cannot open an editor here (no terminal)", severity="error")
            return
        if edited is None:
            self.notify("not saved, or emptied: the proposal stays pending")
            return
        self.approve(item, edited)

    def action_reject(self) -> None:
        item = self.selected()
        if item is None or self.busy:
            return

        def done(reason: str | None) -> None:
            if reason and not self.busy:
                self.busy = True
                self.decide(item, approved=False, reason=reason)

        title = f"Reject {item.slug} #{item.proposal.id} ({inert(item.proposal.payload.summary())})"
        self.push_screen(ReasonScreen(title), done)

    @work(thread=True, group="decide")
    def decide(
        self,
        item: Pending,
        *,
        approved: bool,
        reason: str | None = None,
        edited: dict[str, Any] | None = None,
    ) -> None:
        from bottle.instance import Instance
        from bottle.operator import approve, reject

        label = f"{item.slug} #{item.proposal.id}"
        try:
            instance = Instance.open(item.slug, settings=self.settings)
            if approved:
                self.call_from_thread(self.set_status, f"applying {label}…")
                approve(
                    instance,
                    item.proposal.id,
                    edited_payload=edited,
                    settings=self.settings,
                    progress=lambda line: self.call_from_thread(self.set_status, line),
                )
                message = f"{label} approved and applied"
            else:
                reject(instance, item.proposal.id, reason=reason or "")
                message = f"{label} rejected"
        except Exception as exc:  # shown, never a crash of the whole view
            text = exc.message if isinstance(exc, BottleError) else f"internal error: {exc!r}"
            self.call_from_thread(
                self.notify, inert(text, multiline=True), severity="error", timeout=15, markup=False
            )
            self.call_from_thread(self.set_status, f"{label}: not applied")
            return
        finally:
            self.busy = False
        self.call_from_thread(self.notify, inert(message), markup=False)
        self.call_from_thread(self.set_status, message)
        self.call_from_thread(self.refresh_while_running)
