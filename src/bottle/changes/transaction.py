"""One operator change at a time per instance, audited at its end."""

from __future__ import annotations

import contextlib
import getpass
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bottle.audit import AuditLog
from bottle.errors import ApplyFailed
from bottle.files import locked

if TYPE_CHECKING:
    from bottle.instance import Instance

#: How long an operator change waits for another one on the same instance to finish.
LOCK_WAIT_S = 30.0


def operator_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


@dataclass
class Change:
    """An open transaction: what it will write to the audit log once the change is live."""

    instance: Instance
    audit: AuditLog
    entries: list[dict[str, Any]] = field(default_factory=list)

    def record(self, *, action: str, who: str | None = None, **fields: Any) -> None:
        """Queue one audit entry; it is written when the transaction ends without error."""
        self.entries.append({"who": who or operator_name(), "action": action, **fields})


@contextlib.contextmanager
def transaction(instance: Instance, *, wait_s: float = LOCK_WAIT_S) -> Iterator[Change]:
    """Hold the instance's operator lock from the first check to the audit entry.

    Without it, a rejection during a minutes-long capability build, or two approvals at
    once, would apply a change that is then recorded differently, or not at all. The audit
    log is checked first, so a damaged log stops a change before it is made; the entries
    the body recorded are appended only if the body succeeded.
    """
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(locked(instance.state.path / ".operator.lock", wait_s=wait_s))
        except TimeoutError as exc:
            raise ApplyFailed(
                f"another operator change to {instance.slug} is still being applied",
                hint="A capability build can take minutes; try again when it is done.",
            ) from exc
        audit = AuditLog.of(instance.state)
        audit.check_appendable()
        from bottle.sidecars import import_records

        # What the sidecars logged (git-gate's pushes) comes before this change; a damaged
        # sidecar log must not stop an operator's decision: `audit verify` reports it.
        import_records(instance.state.path)
        change = Change(instance, audit)
        yield change
        for entry in change.entries:
            audit.append(**entry)
