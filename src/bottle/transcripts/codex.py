"""Codex's transcript: its rollouts, ``codex/sessions/YYYY/MM/DD/rollout-*.jsonl``.

Each line is one record (``timestamp``, ``type``, ``payload``); the ``response_item`` ones
are the conversation in the Responses API's own items: messages, function calls and their
outputs become events in the file's order, sessions oldest first (their names start with
the time). Codex's own context (environment, AGENTS.md) and every other record type are
skipped. Read through :mod:`bottle.safefs` (no link followed, bounded).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bottle import safefs
from bottle.transcripts import Event, clip, read_files, subdirs

#: The most session files read.
MAX_SESSIONS = 200
#: Directories below ``sessions/``: year, month, day.
_DEPTH = 3
_HARNESS = ("<environment_context>", "# AGENTS.md instructions")


def read(transcript: Path, root: Path) -> list[Event]:
    return read_files(_rollouts(transcript / "codex" / "sessions", root), root, _record)


def _record(record: dict[str, Any]) -> list[Event]:
    payload = record.get("payload")
    if record.get("type") == "response_item" and isinstance(payload, dict):
        return _item(str(record.get("timestamp", "")), payload)
    return []


def _rollouts(sessions: Path, root: Path) -> list[Path]:
    found: list[Path] = []
    level = [sessions]
    for _ in range(_DEPTH):
        level = [d / name for d in level for name in subdirs(d, root)]
    for directory in level:
        try:
            names = list(safefs.iter_regular(directory, root=root))
        except OSError:
            continue
        found += [directory / n for n in names if n.startswith("rollout-") and n.endswith(".jsonl")]
    return sorted(found, key=lambda p: p.name)[:MAX_SESSIONS]


def _item(time: str, item: dict[str, Any]) -> list[Event]:
    kind = item.get("type")
    if kind == "message" and item.get("role") in {"user", "assistant"}:
        text = _text(item.get("content"))
        if not text or text.startswith(_HARNESS):
            return []
        return [Event(time, "user" if item["role"] == "user" else "assistant", clip(text))]
    if kind in {"function_call", "custom_tool_call"}:
        args = item.get("arguments", item.get("input", ""))
        return [Event(time, "tool_call", clip(f"{item.get('name', '?')} {args}"))]
    if kind in {"function_call_output", "custom_tool_call_output"}:
        output = item.get("output", "")
        return [
            Event(
                time, "tool_result", clip(output if isinstance(output, str) else json.dumps(output))
            )
        ]
    return []


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content.strip()
    if not isinstance(content, list):
        return ""
    parts = [p.get("text") for p in content if isinstance(p, dict)]
    return "\n".join(t for t in parts if isinstance(t, str)).strip()
