"""Codex's ChatGPT login: the host's auth.json read for egress, the agent's placeholder file,
the route's auth, and egress putting the real login on the wire to chatgpt.com only."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mitmproxy import http
from mitmproxy.hooks import RunningHook
from mitmproxy.proxy.layers.http import HttpRequestHook, HttpResponseHeadersHook, HttpResponseHook
from mitmproxy.test import taddons
from pydantic import ValidationError

from bottle import chatgpt_login
from bottle.chatgpt_login import PLACEHOLDER_ACCOUNT, placeholder_auth, read_login
from bottle.compose import render
from bottle.errors import Refused
from bottle.instance import compose_env
from bottle.policy import CHATGPT_ACCESS_VAR, CHATGPT_ACCOUNT_VAR, Auth, Routes
from bottle.providers import provider
from bottle.runtime.egress.addon import Egress
from bottle.runtime.egress.scrub import MARKER
from tests.conftest import write
from tests.unit.test_egress_addon import Env, body, make_flow
from tests.unit.test_provider_codex import codex_plan

ACCOUNT = "c0ffee00-1111-4222-8333-444455556666"


def _seg(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def real_jwt(exp: float, **claims: Any) -> str:
    head = _seg({"alg": "RS256", "kid": "k1"})
    return f"{head}.{_seg({'exp': int(exp), **claims})}.c2lnbmF0dXJlLW9mLW9wZW5haQ"


ACCESS = real_jwt(time.time() + 86400, sub="user-real")
ID_TOKEN = real_jwt(
    time.time() + 86400,
    email="someone@example.com",
    **{"https://api.openai.com/auth": {"chatgpt_account_id": ACCOUNT, "chatgpt_plan_type": "pro"}},
)
REFRESH = "rt_real_" + "a1b2c3d4e5" * 3


def login_file(tmp: Path, **tokens: Any) -> Path:
    data = {
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": ID_TOKEN,
            "access_token": ACCESS,
            "refresh_token": REFRESH,
            "account_id": ACCOUNT,
            **tokens,
        },
        "last_refresh": "2026-12-01T00:00:00Z",
    }
    return write(tmp / "host-codex" / "auth.json", json.dumps(data))


def chatgpt_bottle(path: Path) -> str:
    return f"""---
agent: {{provider: codex}}
egress:
  routes:
    - host: chatgpt.com
      methods: [GET, POST]
      paths: [/backend-api/codex/, /backend-api/wham/accounts/check]
      auth: {{scheme: chatgpt, file_ref: "{path}"}}
---
"""


# -- the host's file ---------------------------------------------------------------------------


def test_the_login_egress_needs_is_read_from_the_host_file(tmp_path: Path) -> None:
    login = read_login(str(login_file(tmp_path)))
    assert (login.access_token, login.account_id) == (ACCESS, ACCOUNT)
    assert ACCESS not in repr(login) and ACCOUNT not in repr(login)


def test_the_account_comes_from_the_id_token_when_the_file_has_none(tmp_path: Path) -> None:
    assert read_login(str(login_file(tmp_path, account_id=None))).account_id == ACCOUNT


def test_a_home_relative_path_is_the_host_users(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    login_file(tmp_path)
    assert read_login("~/host-codex/auth.json").account_id == ACCOUNT


@pytest.mark.parametrize(
    ("tokens", "words"),
    [
        ({"access_token": real_jwt(time.time() - 60)}, ["expired", "Run codex once on the host"]),
        ({"access_token": ""}, ["no ChatGPT login", "codex login"]),
        ({"access_token": "a\r\nX-Evil: 1"}, ["not a token"]),
        ({"account_id": "x\ny", "id_token": "not-a-jwt"}, ["names no ChatGPT account"]),
    ],
)
def test_a_login_that_cannot_serve_is_refused_with_a_hint(
    tmp_path: Path, tokens: dict[str, Any], words: list[str]
) -> None:
    with pytest.raises(Refused) as caught:
        read_login(str(login_file(tmp_path, **tokens)))
    text = caught.value.message + " " + (caught.value.hint or "")
    for word in words:
        assert word in text
    assert REFRESH not in text and ACCESS not in text


@pytest.mark.parametrize(
    "content", ['{"auth_mode": "apikey", "OPENAI_API_KEY": "sk-x"}', "not json", "[]"]
)
def test_a_file_that_is_no_chatgpt_login_is_refused(tmp_path: Path, content: str) -> None:
    path = write(tmp_path / "auth.json", content)
    with pytest.raises(Refused, match="no ChatGPT login"):
        read_login(str(path))


def _raw_jwt(payload: str) -> str:
    seg = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()
    return f"{_seg({'alg': 'RS256'})}.{seg}.c2ln"


def test_a_hostile_login_file_is_refused_or_read_never_a_crash(tmp_path: Path) -> None:
    # Nesting past the JSON parser's stack, in the file and in a token's claims.
    deep = "[" * 100_000 + "]" * 100_000
    with pytest.raises(Refused, match="no ChatGPT login"):
        read_login(str(write(tmp_path / "deep.json", deep)))
    nested_id = login_file(tmp_path, account_id="", id_token=_raw_jwt(deep))
    with pytest.raises(Refused, match="names no ChatGPT account"):
        read_login(str(nested_id))
    # An expiry before any date gmtime can show is still an expiry, said in seconds.
    with pytest.raises(Refused, match="expired at -1"):
        read_login(str(login_file(tmp_path, access_token=_raw_jwt('{"exp": -1e300}'))))
    # Past any float, or not finite: no expiry a login could mean, as if it had none.
    for exp in ("1" + "0" * 400, "Infinity", "NaN"):
        login = read_login(str(login_file(tmp_path, access_token=_raw_jwt(f'{{"exp": {exp}}}'))))
        assert login.expires is None, exp


def test_a_missing_file_or_a_relative_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Refused, match="cannot read"):
        read_login(str(tmp_path / "nope.json"))
    with pytest.raises(Refused, match="absolute"):
        read_login("auth.json")


# -- the agent's file --------------------------------------------------------------------------


def _payload(token: str) -> dict[str, Any]:
    """As Codex 0.171.0 decodes it (token_data.rs): three non-empty parts, base64url JSON."""
    head, payload, sig = token.split(".")
    assert head and payload and sig
    data: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return data


def test_the_placeholder_has_the_claims_codex_reads_and_nothing_real() -> None:
    auth = placeholder_auth()
    tokens = auth["tokens"]
    assert auth["auth_mode"] == "chatgpt" and auth["OPENAI_API_KEY"] is None
    claims = _payload(tokens["id_token"])["https://api.openai.com/auth"]
    assert claims["chatgpt_account_id"] == tokens["account_id"] == PLACEHOLDER_ACCOUNT
    assert claims["chatgpt_plan_type"]
    # Codex refreshes when the access token's exp is near: never, for the placeholder.
    assert _payload(tokens["access_token"])["exp"] > time.time() + 50 * 365 * 86400
    assert tokens["refresh_token"] == "bottle-egress-injects-this"


def test_the_placeholder_account_is_what_scrubbing_makes_of_the_real_one() -> None:
    """Codex finds its workspace by its own id in the backend's answer, which egress has
    scrubbed of the real id: the two must be the same text."""
    assert PLACEHOLDER_ACCOUNT.encode() == MARKER


def test_a_chatgpt_codex_bottle_seeds_the_placeholder_and_the_backend(
    home: Path, repo: Path, tmp_path: Path
) -> None:
    plan = codex_plan(home, repo, chatgpt_bottle(login_file(tmp_path)))
    seeds = provider("codex").seed_files(plan)
    assert json.loads(seeds["codex/auth.json"]) == placeholder_auth()
    import tomllib

    config = tomllib.loads(seeds["codex/config.toml"].decode())
    ours = config["model_providers"][config["model_provider"]]
    assert ours["base_url"] == "https://chatgpt.com/backend-api/codex"
    assert ours["supports_websockets"] is False and ours["requires_openai_auth"] is True
    assert config["features"]["plugins"] is False and config["features"]["apps"] is False
    rendered = json.dumps(render(plan)) + str(seeds)
    for secret in (ACCESS, ID_TOKEN, REFRESH, ACCOUNT):
        assert secret not in rendered
    # Egress gets the two values by name; compose's own environment holds them (read now).
    egress_env = render(plan)["services"]["egress"]["environment"]
    assert CHATGPT_ACCESS_VAR in egress_env and CHATGPT_ACCOUNT_VAR in egress_env
    values = compose_env(plan, {}, {})
    assert (values[CHATGPT_ACCESS_VAR], values[CHATGPT_ACCOUNT_VAR]) == (ACCESS, ACCOUNT)
    assert REFRESH not in json.dumps(values) and ID_TOKEN not in json.dumps(values)
    # The agent's environment holds no login variable at all.
    agent_env = render(plan)["services"]["agent"]["environment"]
    assert CHATGPT_ACCESS_VAR not in agent_env and "OPENAI_API_KEY" not in agent_env


def test_an_expired_host_login_refuses_the_start(home: Path, repo: Path, tmp_path: Path) -> None:
    path = login_file(tmp_path, access_token=real_jwt(time.time() - 5))
    plan = codex_plan(home, repo, chatgpt_bottle(path))
    with pytest.raises(Refused, match="expired"):
        plan.require_env({})
    with pytest.raises(Refused, match="expired"):
        chatgpt_login.compose_values(plan)


# -- the route's auth --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("auth", "words"),
    [
        ({"scheme": "chatgpt"}, "takes file_ref"),
        ({"scheme": "chatgpt", "token_ref": "X", "file_ref": "/a"}, "not token_ref"),
        ({"scheme": "bearer", "file_ref": "/a"}, "takes token_ref"),
        ({"scheme": "bearer"}, "takes token_ref"),
        ({"scheme": "chatgpt", "file_ref": " "}, "must be a path"),
    ],
)
def test_auth_takes_one_source_by_scheme(auth: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        Auth.model_validate(auth)


def test_egress_holds_one_chatgpt_login() -> None:
    routes = [
        {"host": "chatgpt.com", "auth": {"scheme": "chatgpt", "file_ref": "/a/auth.json"}},
        {"host": "x.example", "auth": {"scheme": "chatgpt", "file_ref": "/b/auth.json"}},
    ]
    with pytest.raises(ValidationError, match="two ChatGPT logins"):
        Routes.model_validate({"routes": routes})
    routes[1]["auth"]["file_ref"] = "/a/auth.json"
    table = Routes.model_validate({"routes": routes})
    assert table.token_refs == ()
    assert table.secret_vars == (CHATGPT_ACCESS_VAR, CHATGPT_ACCOUNT_VAR)
    assert table.chatgpt_files == ("/a/auth.json",)


# -- egress ------------------------------------------------------------------------------------

ROUTES = """\
routes:
  - host: chatgpt.com
    methods: [GET, POST]
    paths: [/backend-api/codex/, /backend-api/wham/accounts/check]
    auth: {scheme: chatgpt, file_ref: /home/u/.codex/auth.json}
  - host: echo.example
  - host: auth.openai.com
    paths: [/never/]
"""


@pytest.fixture
def egress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    routes = write(tmp_path / "live-config" / "egress" / "routes.yaml", ROUTES)
    status, log = tmp_path / "status" / "egress.json", tmp_path / "logs" / "egress.jsonl"
    monkeypatch.setenv("BOTTLE_EGRESS_ROUTES", str(routes))
    monkeypatch.setenv("BOTTLE_EGRESS_STATUS", str(status))
    monkeypatch.setenv("BOTTLE_EGRESS_LOG", str(log))
    monkeypatch.setenv("BOTTLE_DLP_SECRETS", "")
    monkeypatch.setenv(CHATGPT_ACCESS_VAR, ACCESS)
    monkeypatch.setenv(CHATGPT_ACCOUNT_VAR, ACCOUNT)
    addon = Egress()
    with taddons.context(addon) as tctx:
        env = Env(tctx, addon, routes, status, log)
        env.fire(RunningHook())
        yield env


def _agent_headers() -> dict[str, str]:
    tokens = placeholder_auth()["tokens"]
    return {
        "Authorization": f"Bearer {tokens['access_token']}",
        "ChatGPT-Account-ID": tokens["account_id"],
    }


def test_egress_puts_the_real_login_on_tls_to_chatgpt(egress: Env) -> None:
    flow = make_flow(
        "POST", "https://chatgpt.com/backend-api/codex/responses", headers=_agent_headers()
    )
    egress.fire(HttpRequestHook(flow))
    assert flow.response is None, flow.response and flow.response.get_text()
    assert flow.request.headers.get_all("Authorization") == [f"Bearer {ACCESS}"]
    assert flow.request.headers.get_all("ChatGPT-Account-ID") == [ACCOUNT]
    # An upstream that echoes them hands back only what scrubbing makes of them.
    echoed = json.dumps({"accounts": [{"id": ACCOUNT}], "auth": f"Bearer {ACCESS}"}).encode()
    flow.response = http.Response.make(
        200, echoed, {"content-type": "application/json", "x-echo": ACCOUNT}
    )
    egress.fire(HttpResponseHeadersHook(flow))
    egress.fire(HttpResponseHook(flow))
    answer = flow.response.get_text() or ""
    assert ACCESS not in answer and ACCOUNT not in answer
    assert json.loads(answer)["accounts"][0]["id"] == PLACEHOLDER_ACCOUNT
    assert ACCOUNT not in str(flow.response.headers)
    assert ACCESS not in egress.log.read_text() and ACCOUNT not in egress.log.read_text()


@pytest.mark.parametrize(
    "url",
    [
        "http://chatgpt.com/backend-api/codex/responses",
        "https://chatgpt.com:8443/backend-api/codex/responses",
        "http://chatgpt.com:443/backend-api/codex/responses",
    ],
)
def test_the_login_never_goes_over_plain_http_or_another_port(egress: Env, url: str) -> None:
    flow = make_flow("POST", url, headers=_agent_headers())
    egress.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert ACCESS not in str(flow.request.headers) and ACCOUNT not in str(flow.request.headers)


def test_the_placeholder_sent_elsewhere_is_only_a_placeholder(egress: Env) -> None:
    flow = make_flow("POST", "https://echo.example/x", headers=_agent_headers())
    egress.fire(HttpRequestHook(flow))
    assert flow.response is None  # allowed, and carries nothing real
    assert ACCESS not in str(flow.request.headers) and ACCOUNT not in str(flow.request.headers)


def test_a_refresh_with_the_placeholder_is_refused(egress: Env) -> None:
    tokens = placeholder_auth()["tokens"]
    form = f"grant_type=refresh_token&refresh_token={tokens['refresh_token']}".encode()
    flow = make_flow("POST", "https://auth.openai.com/oauth/token", content=form)
    egress.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 403
    assert body(flow)["error"] == "egress_refused"
    assert ACCESS not in str(flow.request.headers)


def test_an_expired_login_is_refused_at_egress_with_the_fix(
    egress: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CHATGPT_ACCESS_VAR, real_jwt(time.time() - 1))
    flow = make_flow(
        "POST", "https://chatgpt.com/backend-api/codex/responses", headers=_agent_headers()
    )
    egress.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 401
    data = body(flow)
    assert data["error"] == "egress_credential_expired"
    assert "has expired" in data["reason"]
    assert "refresh it on the host" in data["how_to_fix"]
    assert flow.request.headers["Authorization"] == _agent_headers()["Authorization"]


def test_a_fifo_is_refused_not_waited_on(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "auth.json"
    os.mkfifo(fifo)
    with pytest.raises(Refused, match="not a regular file"):
        read_login(str(fifo))


def test_a_linked_login_file_is_read(tmp_path: Path) -> None:
    link = tmp_path / "link.json"
    link.symlink_to(login_file(tmp_path))
    assert read_login(str(link)).access_token == ACCESS


def test_a_login_egress_does_not_hold_is_refused_with_the_fix(
    egress: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chatgpt route added while the bottle runs: egress got no login at start."""
    monkeypatch.delenv(CHATGPT_ACCESS_VAR)
    flow = make_flow(
        "POST", "https://chatgpt.com/backend-api/codex/responses", headers=_agent_headers()
    )
    egress.fire(HttpRequestHook(flow))
    assert flow.response is not None and flow.response.status_code == 502
    data = body(flow)
    assert data["error"] == "egress_credential_missing"
    assert "/home/u/.codex/auth.json" in data["reason"]
    assert "restart the bottle" in data["how_to_fix"]


def test_a_chatgpt_login_counts_as_codex_s_credential(
    home: Path, repo: Path, tmp_path: Path
) -> None:
    from bottle.compose import notes

    plan = codex_plan(home, repo, chatgpt_bottle(login_file(tmp_path)))
    login_notes = [n for n in notes(plan) if "log in" in n.problem or "API key" in n.problem]
    assert login_notes == []
    bare = chatgpt_bottle(login_file(tmp_path)).replace("auth: {scheme: chatgpt", "x: {y")
    bare = bare.replace("      x: {y, file_ref:", "      #")
    plan = codex_plan(home, repo, bare)
    assert any("cannot log in" in n.problem for n in notes(plan) if n.service == "agent")
