"""ChatGPT's Codex backend (``chatgpt.com/backend-api``) as Codex 0.171.0 uses it with a
ChatGPT login: the Responses API at ``/backend-api/codex/responses`` (the same stream as
``/v1/responses``) and the workspace discovery ``GET /backend-api/wham/accounts/check``.

The script's ``chatgpt`` part gives the account the real backend would list for the real
access token: ``{"account_id": "…"}``. The answer names that account, as the real one
does; egress scrubs it (it holds the id as a secret), which is how the agent's placeholder
id finds its workspace. Codex refuses to work without the entry (``selected workspace missing
from routing discovery``), and ``NO_CONSTRAINT`` keeps its requests on chatgpt.com.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakeapi import openai

Reply = tuple[int, str, list[bytes]]


def accounts_check(script: dict[str, Any], body: Any) -> Reply:
    account = str((script.get("chatgpt") or {}).get("account_id", ""))
    entry = {
        "id": account,
        "workspace_backend_origin": "NO_CONSTRAINT",
        "account_routing_override": "NO_CONSTRAINT",
    }
    payload = {"accounts": [entry], "account_ordering": [account]}
    return 200, "application/json", [json.dumps(payload).encode()]


def responses(script: dict[str, Any], body: Any) -> Reply:
    """The Responses stream; ``{"chatgpt": {"unauthorized": true}}``: the 401 of a login the
    backend no longer takes (expired, revoked)."""
    if (script.get("chatgpt") or {}).get("unauthorized"):
        error = {"error": {"message": "Your session has expired.", "code": "token_expired"}}
        return 401, "application/json", [json.dumps(error).encode()]
    return openai.responses(script, body)


ROUTES = {
    ("POST", "/backend-api/codex/responses"): responses,
    ("GET", "/backend-api/wham/accounts/check"): accounts_check,
}
