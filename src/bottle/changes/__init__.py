"""Live changes to a running instance: lock → validate → apply → decide → audit, as one.

::

    transaction(instance)        the operator lock + a check that the audit log can take
                                 the entry, held from the first read to the audit line
    RoutesControl (routes.py)    ``instance.routes``: the routes in force, apply, allow, reload
    ProposalsControl             ``instance.proposals``: list, approve, reject (decisions.py)
    (decisions.py)

Nothing here is recorded before it is applied, and nothing applied goes unrecorded: the
audit entry is the last step inside the lock, after the live change and the decision.
"""

from __future__ import annotations

from bottle.changes.decisions import ProposalsControl, pending_proposals
from bottle.changes.routes import RoutesControl
from bottle.changes.transaction import LOCK_WAIT_S, Change, operator_name, transaction
from bottle.pending import Pending

__all__ = [
    "LOCK_WAIT_S",
    "Change",
    "Pending",
    "ProposalsControl",
    "RoutesControl",
    "operator_name",
    "pending_proposals",
    "transaction",
]
