"""The decision log's one record type: what egress decided about one request, tunnel or message.

Egress writes one :class:`LogRecord` per decision as a JSON line of ``logs/egress.jsonl``; the
host (``bottle egress log``) reads each line back with :meth:`LogRecord.model_validate_json`.
Only pydantic here, so both sides import it. A record holds no headers, no query string and
no secret: hosts and paths are redacted before they get here.

The log lies on the host's disk and the agent decides how many requests it makes, so it is
bounded: past :data:`MAX_FILE_BYTES` the file becomes ``egress.jsonl.1`` (``.1`` becomes
``.2``, …, up to :data:`KEEP`; the oldest is dropped) and a new one starts; when records were
dropped its first line is a ``note`` saying so. :func:`log_files` lists them oldest first.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, field_validator

Decision = Literal["allow", "refuse", "dlp-block", "dlp-warn", "note"]
#: One file of the log grows to this much before it is rotated.
MAX_FILE_BYTES = 16 << 20
#: Rotated files kept beside the one being written (``egress.jsonl.1`` … ``.KEEP``).
KEEP = 3


class LogRecord(BaseModel):
    """One line of the decision log. Unknown fields (a newer egress) are ignored on read."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    time: str = ""  # ISO 8601, milliseconds, set when written
    generation: int = 0  # the route table in force
    method: str = ""  # an HTTP method, or CONNECT, WEBSOCKET, TCP, UDP
    host: str = ""
    path: str = ""  # no query string
    route: int | None = None  # index into the route table in force
    decision: Decision
    reason: str = ""
    findings: tuple[str, ...] | None = None  # DLP: "kind in where", never the matched text
    scrubbed: tuple[str, ...] | None = None  # "secret:NAME in where", removed from the response
    request_bytes: int | None = None
    response_bytes: int | None = None
    status: int | None = None  # the HTTP status sent back, when there was one

    @field_validator("method", "host", "path", "reason")
    @classmethod
    def _text(cls, value: str) -> str:
        # Undecodable request bytes reach us as lone surrogates, which are not JSON text.
        return value.encode("utf-8", "backslashreplace").decode("utf-8")

    def to_line(self) -> str:
        return self.model_dump_json() + "\n"


def log_files(path: Path, keep: int = KEEP) -> list[Path]:
    """The log's files, oldest first (``.KEEP`` … ``.1``, then ``path``), present or not."""
    return [path.with_name(f"{path.name}.{n}") for n in range(keep, 0, -1)] + [path]


def rotate(path: Path, keep: int = KEEP) -> bool:
    """``path`` becomes ``.1``, each ``.n`` becomes ``.n+1``, the oldest is dropped; True
    when one was (records were lost). Only the writer calls it, in a directory of its own."""
    files = log_files(path, keep)
    dropped = files[0].exists()
    for older, newer in itertools.pairwise(files):
        if newer.exists():
            newer.replace(older)
    return dropped
