"""Transcripts: an instance's conversation, read back from its state dir, readably.

A provider's reader (one module per provider, ``_READERS``) turns the CLI's own files in
``transcript/`` into :class:`Event` s; :func:`events` interleaves them, by time, with what
the sidecars recorded: egress refusals (the decision log) and proposals. Everything here is
agent-written or agent-influenced: files are read with ``bottle.safefs`` (no link followed,
bounded) and every string an event carries is shown through ``bottle.text.inert``.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from bottle import safefs
from bottle.state import StateDir

Kind = Literal["user", "assistant", "tool_call", "tool_result", "egress", "proposal", "note"]

#: The most of one file read (a transcript JSONL, the decision log): a bound, not a goal.
MAX_FILE_BYTES = 64 << 20
#: The most of one event's text kept: a tool's whole output is in the CLI's own file.
MAX_TEXT_CHARS = 4000
#: The most events read from a CLI's files: each file is bounded, but hundreds of files of
#: tiny lines would be hundreds of millions of events in the host's memory.
MAX_EVENTS = 200_000


@dataclass(frozen=True)
class Event:
    time: str  # ISO 8601 as the writer wrote it; "" when it gave none
    kind: Kind
    text: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


#: (transcript dir, state dir) -> the conversation's events, in the file's order.
Reader = Callable[[Path, Path], list[Event]]

_READERS: dict[str, str] = {
    "claude": "bottle.transcripts.claude",
    "codex": "bottle.transcripts.codex",
}


def reader(kind: str) -> Reader | None:
    """The reader of provider ``kind``'s transcript, or None when it has none."""
    module = _READERS.get(kind)
    if module is None:
        return None
    found: Reader = importlib.import_module(module).read
    return found


def clip(text: str) -> str:
    return text if len(text) <= MAX_TEXT_CHARS else text[:MAX_TEXT_CHARS] + " [...]"


def jsonl(path: Path, root: Path, problems: list[str] | None = None) -> Iterator[dict[str, object]]:
    """The JSON objects of a JSONL file; lines that are not one are skipped. The agent
    writes these files: one that is not a regular file is skipped, one past
    :data:`MAX_FILE_BYTES` is read that far; each is said in ``problems``."""
    try:
        with safefs.open_read_regular(path, root=root) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return
    except OSError as exc:
        if problems is not None:
            problems.append(f"{path.name} was not read: {exc.strerror or exc}")
        return
    if len(data) > MAX_FILE_BYTES:
        data = data[: data.rfind(b"\n", 0, MAX_FILE_BYTES) + 1]  # whole lines only
        if problems is not None:
            problems.append(f"only the first {MAX_FILE_BYTES:,} bytes of {path.name} are shown")
    for line in data.decode("utf-8", "replace").splitlines():
        try:
            value = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested past the parser
            continue
        if isinstance(value, dict):
            yield value


def subdirs(directory: Path, root: Path) -> list[str]:
    """The names of the directories directly in ``directory``, sorted; none when it is not
    a directory reached without following a link."""
    try:
        fd = safefs.open_dir(root, list(directory.relative_to(root).parts))
    except (OSError, ValueError):
        return []
    try:
        with os.scandir(fd) as entries:
            return sorted(e.name for e in entries if e.is_dir(follow_symlinks=False))
    finally:
        os.close(fd)


def read_files(
    paths: Iterable[Path], root: Path, parse: Callable[[dict[str, object]], list[Event]]
) -> list[Event]:
    """The events ``parse`` makes of each JSONL object of ``paths``, in order, at most
    :data:`MAX_EVENTS` (then a ``note`` saying the rest was left out)."""
    out: list[Event] = []
    for path in paths:
        problems: list[str] = []
        for record in jsonl(path, root, problems):
            try:
                out += parse(record)
            except RecursionError:  # a value nested too deep to show
                continue
            if len(out) >= MAX_EVENTS:
                note = f"only the first {MAX_EVENTS} events are shown; the rest is in {path.parent}"
                return [*out[:MAX_EVENTS], Event(out[MAX_EVENTS - 1].time, "note", note)]
        out += [Event(out[-1].time if out else "", "note", text) for text in problems]
    return out


def events(state: StateDir, kind: str) -> list[Event]:
    """The conversation of provider ``kind`` with egress refusals and proposals, by time."""
    read = reader(kind)
    found = read(state.transcript, state.path) if read is not None else []
    found += _refusals(state) + _proposals(state)
    # A stable sort: events of one file that share a stamp keep their order.
    return sorted(found, key=lambda e: _stamp(e.time))


def _stamp(value: str) -> str:
    # Claude writes "...Z", egress "+00:00": one form, so text order is time order.
    return value.replace("+00:00", "Z")


def _refusals(state: StateDir) -> list[Event]:
    from bottle.runtime.egress.records import log_files

    out = []
    problems: list[str] = []
    records = (r for path in log_files(state.egress_log) for r in jsonl(path, state.path, problems))
    for record in records:
        decision = str(record.get("decision", ""))
        if decision in ("", "allow"):
            continue
        if decision == "note":  # egress's own: records it no longer keeps
            out.append(
                Event(
                    str(record.get("time", "")), "note", clip(f"egress: {record.get('reason', '')}")
                )
            )
            continue
        where = f"{record.get('method', '')} {record.get('host', '')}{record.get('path', '')}"
        reason = str(record.get("reason", ""))
        out.append(
            Event(
                str(record.get("time", "")), "egress", clip(f"egress {decision}d {where}: {reason}")
            )
        )
    return out + [Event("", "note", f"egress log: {text}") for text in problems]


def _proposals(state: StateDir) -> list[Event]:
    out: list[Event] = []
    try:
        names = list(safefs.iter_regular(state.proposals, root=state.path))
    except OSError:
        return out
    for name in names:
        if not name.endswith(".json") or not name[:-5].isdigit():
            continue
        try:
            data = json.loads(safefs.read_regular(state.proposals / name, root=state.path))
        except (OSError, ValueError, RecursionError):
            continue
        if not isinstance(data, dict):
            continue
        ident, tool = data.get("id"), data.get("tool")
        payload = json.dumps(data.get("payload"), sort_keys=True)
        justification = data.get("justification")
        out.append(
            Event(
                str(data.get("created_at", "")),
                "proposal",
                clip(f"proposal {ident} filed: {tool} {payload} ({justification})"),
            )
        )
        decision = data.get("decision")
        if isinstance(decision, dict):
            out.append(
                Event(
                    str(decision.get("at", "")),
                    "proposal",
                    clip(f"proposal {ident} {data.get('status')} by {decision.get('by')}"),
                )
            )
    return out
