"""Claude Code's transcript: the project JSONL files under ``claude/projects/``.

Each line is one entry (``type`` user/assistant/..., ``timestamp``, ``message`` with the
Messages API's ``role`` and ``content``): text, tool calls (``tool_use``) and their results
(``tool_result``) become events in the file's order, sessions oldest first. Lines of other
types (summaries, snapshots, system notes) are not the conversation and are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bottle import safefs
from bottle.transcripts import Event, clip, read_files, subdirs

#: The most session files read from one project directory.
MAX_SESSIONS = 200


def read(transcript: Path, root: Path) -> list[Event]:
    return read_files(_sessions(transcript / "claude" / "projects", root), root, _entry)


def _sessions(projects: Path, root: Path) -> list[Path]:
    found: list[tuple[float, Path]] = []
    for name in subdirs(projects, root):
        try:
            files = [
                f for f in safefs.iter_regular(projects / name, root=root) if f.endswith(".jsonl")
            ]
        except OSError:
            continue
        for file in files:
            path = projects / name / file
            try:
                found.append((path.lstat().st_mtime, path))
            except OSError:
                continue
    return [path for _mtime, path in sorted(found)[:MAX_SESSIONS]]


def _entry(entry: dict[str, Any]) -> list[Event]:
    kind = entry.get("type")
    message = entry.get("message")
    if kind not in ("user", "assistant") or not isinstance(message, dict):
        return []
    time = str(entry.get("timestamp", ""))
    content = message.get("content")
    if isinstance(content, str):
        return [Event(time, kind, clip(content))]
    if not isinstance(content, list):
        return []
    out = []
    for block in content:
        if not isinstance(block, dict):
            continue
        btype = block.get("type")
        if btype == "text" and block.get("text"):
            out.append(Event(time, kind, clip(str(block["text"]))))
        elif btype == "tool_use":
            call = f"{block.get('name')} {json.dumps(block.get('input'), sort_keys=True)}"
            out.append(Event(time, "tool_call", clip(call)))
        elif btype == "tool_result":
            out.append(Event(time, "tool_result", clip(_result_text(block.get("content")))))
    return out


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return json.dumps(content)
