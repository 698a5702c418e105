"""What ``bottle ls`` prints: the table, ``--json`` or slugs alone.

No typer here: ``bottle_cli.quick`` runs a plain ``ls`` through this module without
loading the command line, and ``bottle_cli.app``'s ``ls`` command renders through it too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bottle_cli import output


def show(rows: Sequence[Any], *, json_: bool = False, quiet: bool = False) -> None:
    """``rows`` (``bottle.instances.InstanceInfo``) as ``ls`` shows them."""
    if json_:
        output.print_json([row.model_dump(mode="json") for row in rows])
        return
    if quiet:
        for row in rows:
            output.line(row.slug)
        return
    # The slug is the value users copy, the status what they look for: never cut.
    output.table(
        keep={0, 3},
        headers=["slug", "agent", "bottle", "status", "running", "started", "cwd"],
        rows=[
            [
                r.slug,
                r.agent or "-",
                r.bottle or "-",
                status(r),
                str(r.running),
                r.started_at.strftime("%Y-%m-%d %H:%M") if r.started_at else "-",
                r.cwd or "-",
            ]
            for r in rows
        ],
    )


def status(row: Any) -> str:
    """``degraded (egress: exited)``: which sidecar is not well, and how."""
    from bottle.instance import WELL

    if getattr(row, "down_failed", False):
        return f"{row.status} (down failed)"
    ill = [f"{name}: {state}" for name, state in row.sidecars.items() if state not in WELL]
    return f"{row.status} ({', '.join(ill)})" if ill else str(row.status)
