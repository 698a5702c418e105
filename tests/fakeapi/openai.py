"""The Responses API (``POST /v1/responses``, streaming SSE) as Codex 0.171.0 consumes it.

The script's ``openai`` part::

    {"conversations": [{"match": "say hi", "turns": [{"text": "hi"}]},
                       {"match": "RECOVER", "turns": [
                           {"shell": "curl -sS https://x/"},
                           {"tool": "egress-block", "arguments": {"host": "x"}},
                           {"text": "done"}]}],
     "default": "ok"}

A conversation is the first whose ``match`` occurs in the request's last user message (the
prompt: tool results are not user messages, and a resumed session's new prompt comes
last); its turn is the number of model responses the input holds after that message, so a
retried request gets the same answer. A turn is a text, a shell command (the shell tool the
request offers: ``exec_command``, ``shell_command`` or ``shell``), a call of any offered tool
whose name ends with ``tool`` (MCP tools are ``mcp__<server>__<tool>``; where Codex defers
them behind its code-mode ``exec`` tool, a script calling it there), or text and a call.
Past the script's end, and for requests matching no conversation, the answer is ``default``.

Codex first tries the API over a WebSocket (``GET /v1/responses``); the fake answers that
404, as an API without WebSockets would, and Codex falls back to HTTPS for the session.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

Reply = tuple[int, str, list[bytes]]

#: Items a model response leaves in the next request's input.
_OUTPUTS = frozenset(
    {"message", "function_call", "custom_tool_call", "local_shell_call", "reasoning"}
)
_SHELLS = ("exec_command", "shell_command", "shell")


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in {"input_text", "output_text"}
        )
    return ""


def _is_output(item: dict[str, Any]) -> bool:
    kind = item.get("type", "message")
    if kind == "message":
        return item.get("role") == "assistant"
    return kind in _OUTPUTS


def prompt_and_step(items: list[dict[str, Any]]) -> tuple[str, int]:
    """The last user message's text, and how many responses followed it."""
    last = max(
        (
            i
            for i, item in enumerate(items)
            if item.get("type", "message") == "message" and item.get("role") == "user"
        ),
        default=-1,
    )
    prompt = _text(items[last].get("content")) if last >= 0 else ""
    step, inside = 0, False
    for item in items[last + 1 :]:
        output = _is_output(item)
        step += output and not inside
        inside = output
    return prompt, step


def offered_tools(body: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(namespace, name) of every function tool the request offers, nested ones included."""

    def walk(tools: Any, namespace: str) -> Iterator[tuple[str, str]]:
        for tool in tools if isinstance(tools, list) else []:
            if not isinstance(tool, dict):
                continue
            if tool.get("type") == "namespace":
                yield from walk(tool.get("tools"), str(tool.get("name", "")))
            elif tool.get("name"):
                yield namespace, str(tool["name"])

    yield from walk(body.get("tools"), "")
    for item in body.get("input") or []:
        if isinstance(item, dict) and item.get("type") == "additional_tools":
            yield from walk(item.get("tools"), "")


def choose(script: dict[str, Any], body: dict[str, Any]) -> tuple[str, int, dict[str, Any]]:
    """(conversation key, turn index, turn) for one request."""
    part = script.get("openai") or {}
    default = {"text": str(part.get("default", "ok"))}
    items = [i for i in body.get("input") or [] if isinstance(i, dict)]
    prompt, step = prompt_and_step(items)
    for number, conversation in enumerate(part.get("conversations") or []):
        if str(conversation.get("match", "")) in prompt:
            turns = conversation.get("turns") or []
            return f"c{number}", step, turns[step] if step < len(turns) else default
    return "none", step, default


def _call(body: dict[str, Any], turn: dict[str, Any], call_id: str) -> dict[str, Any] | None:
    tools = list(offered_tools(body))
    if "shell" in turn:
        command = str(turn["shell"])
        for shell in _SHELLS:
            found = [(ns, name) for ns, name in tools if name == shell]
            if found:
                arguments: Any = {
                    "exec_command": {"cmd": command},
                    "shell_command": {"command": command},
                    "shell": {"command": ["bash", "-lc", command]},
                }[shell]
                return _function_call(found[0], arguments, call_id)
        # In code mode Codex lists exec_command only inside its ``exec`` tool, and still
        # runs a direct call of it.
        return _function_call(("", "exec_command"), {"cmd": command}, call_id)
    if "tool" in turn:
        wanted = str(turn["tool"])
        arguments = turn.get("arguments") or {}
        for namespace, name in tools:
            if name == wanted or name.endswith(("__" + wanted, "__" + wanted.replace("-", "_"))):
                return _function_call((namespace, name), arguments, call_id)
        if any(name == "exec" for _, name in tools):
            return _code_mode_call(wanted, arguments, call_id)
        raise LookupError(f"no tool {wanted!r} offered among {tools}")
    return None


def _code_mode_call(wanted: str, arguments: Any, call_id: str) -> dict[str, Any]:
    """A call of a tool Codex keeps behind its code-mode ``exec`` tool (MCP tools are
    deferred there: listed by namespace only), the way a model makes it: a script that
    finds the tool in ``ALL_TOOLS`` and returns its result as text."""
    script = (
        f"const want = {json.dumps(wanted.replace('-', '_'))};\n"
        "const norm = (n) => n.replace(/[^A-Za-z0-9_$]/g, '_');\n"
        "const hit = ALL_TOOLS.find((t) => norm(t.name).endsWith('__' + want));\n"
        "if (!hit) { text('no tool ' + want + ' among ' + ALL_TOOLS.map((t) => t.name)); }\n"
        "else {\n"
        "  const call = tools[norm(hit.name)] || tools[hit.name];\n"
        f"  const result = await call({json.dumps(arguments)});\n"
        "  text(typeof result === 'string' ? result : JSON.stringify(result));\n"
        "}\n"
    )
    return {
        "type": "custom_tool_call",
        "id": f"ctc_{call_id}",
        "call_id": call_id,
        "name": "exec",
        "input": script,
        "status": "completed",
    }


def _function_call(tool: tuple[str, str], arguments: Any, call_id: str) -> dict[str, Any]:
    namespace, name = tool
    item = {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": json.dumps(arguments),
        "status": "completed",
    }
    if namespace and namespace != "functions":
        item["namespace"] = namespace
    return item


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()


def responses(script: dict[str, Any], body: Any) -> Reply:
    if not isinstance(body, dict):
        error = {"error": {"type": "invalid_request_error", "message": "a JSON body"}}
        return 400, "application/json", [json.dumps(error).encode()]
    key, step, turn = choose(script, body)
    rid = f"resp_fake_{key}_{step}"
    try:
        call = _call(body, turn, f"call_fake_{key}_{step}")
    except LookupError as exc:
        error = {"error": {"type": "invalid_request_error", "message": str(exc)}}
        return 400, "application/json", [json.dumps(error).encode()]
    text = str(turn.get("text", "")) if call is not None else str(turn.get("text") or "ok")
    response = {
        "id": rid,
        "object": "response",
        "status": "in_progress",
        "model": body.get("model"),
    }
    events = [_event("response.created", {"response": response})]
    index = 0
    if text:
        mid = f"msg_fake_{key}_{step}"
        empty = {
            "type": "message",
            "id": mid,
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        done = {
            **empty,
            "status": "completed",
            "content": [{"type": "output_text", "text": text, "annotations": []}],
        }
        events += [
            _event("response.output_item.added", {"output_index": index, "item": empty}),
            _event(
                "response.output_text.delta",
                {"item_id": mid, "output_index": index, "content_index": 0, "delta": text},
            ),
            _event("response.output_item.done", {"output_index": index, "item": done}),
        ]
        index += 1
    if call is not None:
        events += [
            _event("response.output_item.added", {"output_index": index, "item": call}),
            _event("response.output_item.done", {"output_index": index, "item": call}),
        ]
    usage = {
        "input_tokens": 10,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": 5,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": 15,
    }
    completed = {**response, "status": "completed", "usage": usage}
    events.append(_event("response.completed", {"response": completed}))
    return 200, "text/event-stream", events


ROUTES = {
    ("POST", "/v1/responses"): responses,
}
