"""Codex 0.171.0 with a ChatGPT login (``auth: {scheme: chatgpt, file_ref: …}``), the real
CLI against the fake serving ``chatgpt.com`` (tests/fakeapi/chatgpt.py).

The host's auth.json holds JWT-shaped tokens of a made-up login. The agent holds only the
placeholder file (bottle.chatgpt_login). Egress puts the real access token and account id on
TLS to chatgpt.com, and scrubs both from what comes back: the fake lists the real account
in its workspace answer, as the real backend does, and Codex then finds its own
(placeholder) id there. One instance for the module's attacks, plus one ``bottle run``.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bottle.chatgpt_login import PLACEHOLDER, PLACEHOLDER_ACCOUNT, placeholder_auth
from tests.conftest import run_cli, write
from tests.integration.conftest import UPSTREAM_HOST, WORKSPACE_OWNER
from tests.integration.fakeapi import FakeAPI

pytestmark = pytest.mark.docker

ACCOUNT = "b07713e5-0aa1-4c6e-9d2f-5e0c1a7f3b11"


def _seg(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _jwt(exp: float, **claims: Any) -> str:
    return f"{_seg({'alg': 'RS256'})}.{_seg({'exp': int(exp), **claims})}.cmVhbC1zaWduYXR1cmU"


ACCESS = _jwt(time.time() + 2 * 86400, sub="real-user-7c3e9a1f")
ID_TOKEN = _jwt(
    time.time() + 2 * 86400,
    email="real.person@example.com",
    **{"https://api.openai.com/auth": {"chatgpt_account_id": ACCOUNT}},
)
REFRESH = "rt_real_" + "5b4a3c2d1e" * 4
SECRETS = (ACCESS, ID_TOKEN, REFRESH, ACCOUNT, "real.person@example.com")

PATHS = "[/backend-api/codex/, /backend-api/wham/accounts/check, /backend-api/wham/settings/user]"
BOTTLE = """---
agent: {{provider: codex}}
egress:
  routes:
    - host: chatgpt.com
      methods: [GET, POST]
      paths: {paths}
      auth: {{scheme: chatgpt, file_ref: "{file}"}}
      private: true
    # Another host the agent may reach (a second alias of the fake).
    - {{host: upstream.test, private: true}}
---
"""
AGENT = """---
bottle: cg
---
You are the ChatGPT-login test agent. CHATGPT-PROMPT-MARKER.
"""
SCRIPT = {
    "openai": {
        "conversations": [{"match": "say hi", "turns": [{"text": "hi over chatgpt"}]}],
        "default": "ok",
    },
    "chatgpt": {"account_id": ACCOUNT},
}
ALIASES = ("chatgpt.com", "auth.openai.com", UPSTREAM_HOST)


def host_login(directory: Path, access: str = ACCESS) -> Path:
    data = {
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": ID_TOKEN,
            "access_token": access,
            "refresh_token": REFRESH,
            "account_id": ACCOUNT,
        },
        "last_refresh": "2026-12-01T00:00:00Z",
    }
    path = write(directory / "auth.json", json.dumps(data))
    path.chmod(0o600)
    return path


@dataclass
class World:
    home: Path
    workdir: Path
    fake: FakeAPI
    env: dict[str, str]
    instance: Any = None

    def sh(self, script: str) -> Any:
        return self.instance.exec(["sh", "-c", script], capture=True)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[World]:
    from bottle import Bottle
    from bottle.engine.images import ensure_image
    from bottle.images import sidecar_image
    from bottle.settings import Settings

    home = tmp_path_factory.mktemp("cg-home")
    workdir = tmp_path_factory.mktemp("cg-work")
    if os.getuid() == 0:  # the agent runs as the workspace's owner, never as root
        os.chown(workdir, *WORKSPACE_OWNER)
    login = host_login(tmp_path_factory.mktemp("cg-host-codex"))
    write(home / "bottles" / "cg.md", BOTTLE.format(paths=PATHS, file=login))
    write(home / "agents" / "cg.md", AGENT)
    settings = Settings.from_env({**os.environ, "BOTTLE_HOME": str(home)})
    image = ensure_image(sidecar_image(settings), settings=settings, progress=lambda _: None)
    tmp = tmp_path_factory.mktemp("cg-fake")
    with (
        FakeAPI.running(home, tmp, image=image, script=SCRIPT, aliases=ALIASES) as fake,
        pytest.MonkeyPatch.context() as mp,
    ):
        env = {"BOTTLE_HOME": str(home), "BOTTLE_EXTRA_CA_CERTS": str(fake.ca_file)}
        for name, value in env.items():
            mp.setenv(name, value)
        mp.delenv("OPENAI_API_KEY", raising=False)
        world = World(home, workdir, fake, env)
        with Bottle("cg", cwd=workdir).start() as instance:
            world.instance = instance
            yield world


def _state_bytes(state: Path) -> bytes:
    return b"".join(
        p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file() and not p.is_symlink()
    )


def test_bottle_run_works_with_the_host_login_injected(world: World) -> None:
    before = {p.name for p in (world.home / "state").iterdir()}
    done = run_cli("run", "cg", "--prompt", "say hi", cwd=world.workdir, env=world.env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().endswith("hi over chatgpt"), done.stdout
    requests = world.fake.requests()
    (turn, *_) = [
        r
        for r in requests
        if r["path"] == "/backend-api/codex/responses" and "say hi" in json.dumps(r["body"])
    ]
    # The fake saw the host's login, put in by egress; Codex sent placeholders.
    assert turn["host"] == "chatgpt.com"
    assert turn["headers"]["authorization"] == f"Bearer {ACCESS}"
    assert turn["headers"]["chatgpt-account-id"] == ACCOUNT
    assert "CHATGPT-PROMPT-MARKER" in json.dumps(turn["body"])
    # Codex's workspace discovery went through (it refuses to work without it).
    checks = [r for r in requests if r["path"] == "/backend-api/wham/accounts/check"]
    assert checks and {c["headers"]["chatgpt-account-id"] for c in checks} == {ACCOUNT}
    # Never a refresh, and nothing at auth.openai.com.
    assert not [r for r in requests if r["host"] == "auth.openai.com"]
    (slug,) = {p.name for p in (world.home / "state").iterdir()} - before
    state = world.home / "state" / slug
    # Nothing of the real login in the state dir (compose file, plan, logs, transcript).
    blob = _state_bytes(state)
    for secret in SECRETS:
        assert secret.encode() not in blob, secret[:12]
    auth = json.loads((state / "transcript" / "codex" / "auth.json").read_text())
    assert auth["tokens"]["account_id"] == PLACEHOLDER_ACCOUNT
    assert auth["tokens"]["refresh_token"] == PLACEHOLDER
    # A fresh bottle's decision log shows no surprise refusal.
    log = [json.loads(line) for line in (state / "logs" / "egress.jsonl").read_text().splitlines()]
    assert [e for e in log if e["decision"] != "allow"] == []


def test_the_agent_holds_placeholders_only(world: World) -> None:
    done = world.sh(
        'env; cat "$CODEX_HOME/auth.json"; cat /proc/[0-9]*/environ /proc/[0-9]*/cmdline '
        "2>/dev/null | tr '\\0' '\\n'; ls -la /run/bottle 2>&1; cat /run/bottle/agent/* 2>&1"
    )
    assert done.exit_code == 0, done.stderr
    for secret in SECRETS:
        assert secret not in done.stdout, secret[:12]
    files = json.loads(world.sh('cat "$CODEX_HOME/auth.json"').stdout)
    assert files == placeholder_auth()
    assert "BOTTLE_CHATGPT" not in done.stdout and "OPENAI_API_KEY=" not in done.stdout


def _curl(world: World, *args: str) -> tuple[str, str]:
    """curl in the agent with the placeholder login, as Codex sends it: (status, body)."""
    tokens = placeholder_auth()["tokens"]
    headers = (
        f"-H 'Authorization: Bearer {tokens['access_token']}' "
        f"-H 'ChatGPT-Account-ID: {tokens['account_id']}'"
    )
    done = world.sh(
        f"curl -sS -o /tmp/out -w '%{{http_code}}' {headers} {' '.join(args)}; echo; cat /tmp/out"
    )
    status, _, body = done.stdout.partition("\n")
    return status.strip(), body


def test_an_echoing_chatgpt_gives_back_only_scrubbed_values(world: World) -> None:
    status, body = _curl(world, "https://chatgpt.com/backend-api/codex/echo")
    assert status == "200", body
    echoed = json.loads(body)
    # The fake got the real values; what the agent got back holds neither.
    assert echoed["headers"]["chatgpt-account-id"] == PLACEHOLDER_ACCOUNT  # scrubbed
    assert echoed["headers"]["authorization"] == f"Bearer {PLACEHOLDER_ACCOUNT}"
    for secret in SECRETS:
        assert secret not in body
    (seen,) = [r for r in world.fake.requests() if r["path"] == "/backend-api/codex/echo"]
    assert seen["headers"]["authorization"] == f"Bearer {ACCESS}"


def test_the_placeholder_sent_to_another_host_stays_a_placeholder(world: World) -> None:
    status, _ = _curl(world, f"https://{UPSTREAM_HOST}/login-echo")
    assert status == "200"
    (seen,) = [r for r in world.fake.requests() if r["path"] == "/login-echo"]
    assert seen["headers"]["authorization"] == (
        f"Bearer {placeholder_auth()['tokens']['access_token']}"
    )
    assert seen["headers"]["chatgpt-account-id"] == PLACEHOLDER_ACCOUNT


@pytest.mark.parametrize(
    "url",
    [
        "http://chatgpt.com/backend-api/codex/responses",
        "https://chatgpt.com:8443/backend-api/codex/responses",
        "http://chatgpt.com:443/backend-api/codex/responses",
        # ChatGPT's own API with the user's login: not on the route, whatever the spelling.
        "https://chatgpt.com/backend-api/conversation",
        "--path-as-is https://chatgpt.com/backend-api/codex/../conversation",
        "https://chatgpt.com/backend-api/codex/%2e%2e/conversation",
    ],
)
def test_plain_http_another_port_or_path_gets_no_login(world: World, url: str) -> None:
    count = len(world.fake.requests())
    status, body = _curl(world, "-X POST -d '{}'", url)
    assert status == "403", body
    assert "credential" in body or "egress" in body
    assert world.fake.requests()[count:] == []


def test_a_refresh_with_the_placeholder_is_refused(world: World) -> None:
    count = len(world.fake.requests())
    status, body = _curl(
        world,
        "-X POST -d grant_type=refresh_token -d refresh_token=bottle-egress-injects-this",
        "https://auth.openai.com/oauth/token",
    )
    assert status == "403", body
    assert json.loads(body)["error"] == "egress_refused"
    for secret in SECRETS:
        assert secret not in body
    assert world.fake.requests()[count:] == []  # it never left


def test_an_expired_host_login_refuses_the_run(world: World, tmp_path: Path) -> None:
    login = host_login(tmp_path, access=_jwt(time.time() - 60))
    write(world.home / "bottles" / "cgx.md", BOTTLE.format(paths=PATHS, file=login))
    write(world.home / "agents" / "cgx.md", AGENT.replace("bottle: cg", "bottle: cgx"))
    before = {p.name for p in (world.home / "state").iterdir()}
    done = run_cli("run", "cgx", "--prompt", "say hi", cwd=world.workdir, env=world.env)
    assert done.returncode == 2, done.stderr
    assert "expired" in done.stderr and "Traceback" not in done.stderr
    assert "codex" in done.stderr  # the hint: refresh it on the host
    for secret in SECRETS:
        assert secret not in done.stderr + done.stdout
    assert {p.name for p in (world.home / "state").iterdir()} == before


def test_a_login_the_backend_rejects_ends_the_turn_clearly(world: World) -> None:
    """The backend says 401 (the login expired or was revoked upstream): Codex tries to
    refresh, egress refuses that, and the run ends with an error, not a hang."""
    from bottle.providers import provider

    world.fake.set_script({**SCRIPT, "chatgpt": {**SCRIPT["chatgpt"], "unauthorized": True}})
    try:
        argv = provider("codex").headless_command("say hi after expiry")
        done = world.instance.exec(["timeout", "120", *argv], capture=True)
    finally:
        world.fake.set_script(SCRIPT)
    assert done.exit_code not in (0, 124), done.stderr[-3000:]  # failed, and not by timeout
    out = done.stdout + done.stderr
    for secret in SECRETS:
        assert secret not in out
    log = world.instance.state.path / "logs" / "egress.jsonl"
    refused = [
        json.loads(line) for line in log.read_text().splitlines() if '"auth.openai.com"' in line
    ]
    assert "Failed to refresh token" in done.stderr, done.stderr[-1500:]
    assert refused and {e["decision"] for e in refused} == {"refuse"}
