"""The Messages API (``POST /v1/messages``, streaming SSE or one JSON), driven by a script.

The script's ``anthropic`` part::

    {"conversations": [{"match": "say hi", "turns": [{"text": "hi"}]},
                       {"match": "RECOVER", "turns": [
                           {"tool": "Bash", "input": {"command": "curl -sS https://x/"}},
                           {"text": "done"}]}],
     "default": "ok"}

A conversation is the first whose ``match`` occurs in the text of the request's first user
message; its turn is the number of assistant messages the request already holds, so a
retried request gets the same answer and a resumed conversation picks up where it was. A
turn is a text, a tool call, or both (text first). Requests without tools (the CLI's side
queries: titles, summaries) and turns past the script's end get ``default``.
"""

from __future__ import annotations

import json
from typing import Any

Reply = tuple[int, str, list[bytes]]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(b.get("text", ""))
            for b in content
            if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def choose(script: dict[str, Any], body: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """(conversation key, turn index, turn) for one request."""
    part = script.get("anthropic") or {}
    default = {"text": str(part.get("default", "ok"))}
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    step = sum(1 for m in messages if m.get("role") == "assistant")
    if not body.get("tools"):
        return "side", step, default
    first = next((_text(m.get("content")) for m in messages if m.get("role") == "user"), "")
    for number, conversation in enumerate(part.get("conversations") or []):
        if str(conversation.get("match", "")) in first:
            turns = conversation.get("turns") or []
            turn = turns[step] if step < len(turns) else default
            return f"c{number}", step, turn
    return "none", step, default


def _blocks(key: str, step: int, turn: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if turn.get("text"):
        blocks.append({"type": "text", "text": str(turn["text"])})
    if turn.get("tool"):
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_fake_{key}_{step}",
                "name": str(turn["tool"]),
                "input": turn.get("input") or {},
            }
        )
    return blocks or [{"type": "text", "text": "ok"}]


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


def messages(script: dict[str, Any], body: Any) -> Reply:
    if not isinstance(body, dict):
        error = {"type": "error", "error": {"type": "invalid_request_error", "message": "json"}}
        return 400, "application/json", [json.dumps(error).encode()]
    key, step, turn = choose(script, body)
    blocks = _blocks(key, step, turn)
    stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    message = {
        "id": f"msg_fake_{key}_{step}",
        "type": "message",
        "role": "assistant",
        "model": body.get("model", "fake"),
        "stop_sequence": None,
    }
    if not body.get("stream"):
        full = {**message, "content": blocks, "stop_reason": stop, "usage": usage}
        return 200, "application/json", [json.dumps(full).encode()]
    events = [
        _event(
            "message_start",
            {"message": {**message, "content": [], "stop_reason": None, "usage": usage}},
        )
    ]
    for index, block in enumerate(blocks):
        start: dict[str, Any]
        delta: dict[str, Any]
        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            start = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        events.append(_event("content_block_start", {"index": index, "content_block": start}))
        events.append(_event("content_block_delta", {"index": index, "delta": delta}))
        events.append(_event("content_block_stop", {"index": index}))
    events.append(
        _event(
            "message_delta",
            {"delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 5}},
        )
    )
    events.append(_event("message_stop", {}))
    return 200, "text/event-stream", events


def count_tokens(script: dict[str, Any], body: Any) -> Reply:
    return 200, "application/json", [json.dumps({"input_tokens": 10}).encode()]


def hello(script: dict[str, Any], body: Any) -> Reply:
    return 200, "application/json", [b'{"message": "hello"}']


ROUTES = {
    ("POST", "/v1/messages"): messages,
    ("POST", "/v1/messages/count_tokens"): count_tokens,
    ("GET", "/api/hello"): hello,
}
