"""Proposals: what the agent asks the operator for, one JSON file each.

Shared by both sides of the boundary. Inside the bottle, the ``supervise`` sidecar validates
what the agent sends and files it with :meth:`ProposalQueue.create`; on the host, the operator
(the ``bottle`` CLI, or a test through the library) reads the same directory and records a
decision with :meth:`ProposalQueue.decide`. The directory is the only channel between them:
``state/<slug>/proposals/`` on the host, ``layout.PROPOSALS`` in the sidecar.

A proposal file is ``<id>.json`` (ids 1, 2, 3, ...)::

    {"id": 3, "tool": "egress-block", "created_at": "2025-01-01T12:00:00Z",
     "status": "pending", "justification": "pip needs the index",
     "payload": {"tool": "egress-block", "host": "pypi.org", "paths": ["/simple/"],
                 "methods": ["GET"]},
     "decision": null}

and once decided, ``status`` is ``approved`` or ``rejected`` and ``decision`` is
``{"by", "at", "reason", "applied", "error", "edited", "original_payload"}``. Every write
goes to a temporary file in the same directory and is renamed over the target, so a reader
sees the old file or the new one, never half of one. ``pending/<id>`` (an empty file per
pending proposal, :mod:`~bottle.proposals.index`) lets the operator list the pending ones
without reading the decided ones, which stay on disk.

The package: :mod:`~bottle.proposals.payloads` (what each tool may ask, and its checks),
:mod:`~bottle.proposals.models` (a proposal file's content and the agent-facing summary),
:mod:`~bottle.proposals.queue` (the directory of files), :mod:`~bottle.proposals.limits`
(how many, how fast), and the pure :mod:`~bottle.proposals.index` and
:mod:`~bottle.proposals.rows` (the fast listing). Keep it free of Docker, YAML and
CLI imports: it runs inside the sidecar too.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bottle.dockerfiles import check_capability_dockerfile as check_dockerfile
    from bottle.proposals.models import (
        MAX_JUSTIFICATION_CHARS,
        MAX_REASON_CHARS,
        Decision,
        Proposal,
        Status,
        check_justification,
        describe,
    )
    from bottle.proposals.payloads import (
        MAX_PAYLOAD_BYTES,
        TOOLS,
        CapabilityBlock,
        EgressBlock,
        GitPushAllow,
        Payload,
        PipelockBlock,
        ToolName,
        host_of_url,
        request_fields,
        validate_payload,
    )
    from bottle.proposals.queue import Listing, ProposalQueue

# Imported on first use: ``bottle queue`` reads the index and the files without the
# models (pydantic alone is a third of its time), through the pure submodules.
_WHERE = {
    "check_dockerfile": ("bottle.dockerfiles", "check_capability_dockerfile"),
    **{
        name: ("bottle.proposals.models", name)
        for name in (
            "MAX_JUSTIFICATION_CHARS",
            "MAX_REASON_CHARS",
            "Decision",
            "Proposal",
            "Status",
            "check_justification",
            "describe",
        )
    },
    **{
        name: ("bottle.proposals.payloads", name)
        for name in (
            "MAX_PAYLOAD_BYTES",
            "TOOLS",
            "CapabilityBlock",
            "EgressBlock",
            "GitPushAllow",
            "Payload",
            "PipelockBlock",
            "ToolName",
            "host_of_url",
            "request_fields",
            "validate_payload",
        )
    },
    "Listing": ("bottle.proposals.queue", "Listing"),
    "ProposalQueue": ("bottle.proposals.queue", "ProposalQueue"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attribute = _WHERE[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


__all__ = [
    "MAX_JUSTIFICATION_CHARS",
    "MAX_PAYLOAD_BYTES",
    "MAX_REASON_CHARS",
    "TOOLS",
    "CapabilityBlock",
    "Decision",
    "EgressBlock",
    "GitPushAllow",
    "Listing",
    "Payload",
    "PipelockBlock",
    "Proposal",
    "ProposalQueue",
    "Status",
    "ToolName",
    "check_dockerfile",
    "check_justification",
    "describe",
    "host_of_url",
    "request_fields",
    "validate_payload",
]
