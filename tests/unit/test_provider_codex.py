"""The codex provider: its seeded CODEX_HOME, and its commands."""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path

import pytest

from bottle.compose import render
from bottle.manifest import load_manifest
from bottle.plan import BottlePlan, PlanOptions, resolve_plan
from bottle.providers import provider, seed_transcript
from bottle.providers.codex import config_toml
from bottle.settings import Settings
from tests.conftest import write

BOTTLE = """---
agent: {provider: codex}
egress:
  routes:
    - {host: api.openai.com, paths: [/v1/], auth: {scheme: bearer, token_ref: OPENAI_API_KEY}}
---
"""
AGENT = """---
bottle: cx
---
You review code.
Say "why", with a \\ backslash.
"""


def codex_plan(home: Path, repo: Path, bottle: str = BOTTLE) -> BottlePlan:
    write(home / "bottles" / "cx.md", bottle)
    write(home / "agents" / "cx.md", AGENT)
    settings = Settings.from_env({"BOTTLE_HOME": str(home)})
    return resolve_plan(
        load_manifest(home=home, cwd=repo),
        PlanOptions(agent="cx", bottle=None, cwd=repo, suffix="abcde"),
        settings=settings,
        environ={"OPENAI_API_KEY": "sk-real"},
    )


def test_codex_home_is_seeded_with_a_config_codex_accepts(home: Path, repo: Path) -> None:
    plan = codex_plan(home, repo)
    seeds = provider("codex").seed_files(plan)
    assert set(seeds) == {"codex/config.toml", "codex/AGENTS.md", "codex/auth.json"}
    config = tomllib.loads(seeds["codex/config.toml"].decode())
    assert config["approval_policy"] == "never"
    assert config["sandbox_mode"] == "danger-full-access"
    assert config["check_for_update_on_startup"] is False
    assert config["analytics"] == {"enabled": False}
    assert config["projects"] == {"/workspace": {"trust_level": "trusted"}}
    # supervise is reached the way every agent reaches it: its streamable HTTP url.
    assert config["mcp_servers"] == {"supervise": {"url": "http://supervise:8765/mcp"}}
    assert seeds["codex/AGENTS.md"].decode() == plan.system_prompt + "\n"
    assert "You review code." in plan.system_prompt


def test_the_agent_holds_a_placeholder_key_only(home: Path, repo: Path) -> None:
    plan = codex_plan(home, repo)
    auth = json.loads(provider("codex").seed_files(plan)["codex/auth.json"])
    assert auth == {"auth_mode": "apikey", "OPENAI_API_KEY": "bottle-egress-injects-this"}
    env = render(plan)["services"]["agent"]["environment"]
    assert env["CODEX_HOME"] == "/run/bottle/transcript/codex"
    assert "sk-real" not in json.dumps(render(plan)) + str(provider("codex").seed_files(plan))


def test_the_responses_api_goes_over_https_without_a_websocket_first() -> None:
    # The built-in provider first retries a WebSocket for ~7 s where it is not served.
    config = tomllib.loads(config_toml({}))
    chosen = config["model_providers"][config["model_provider"]]
    assert config["model_provider"] != "openai"  # built-ins cannot be changed in config
    assert chosen == {
        "name": "OpenAI",
        "base_url": "https://api.openai.com/v1",
        "wire_api": "responses",
        "requires_openai_auth": True,
        "supports_websockets": False,
    }


def test_no_auth_file_without_a_route_that_injects_the_key(home: Path, repo: Path) -> None:
    plan = codex_plan(home, repo, "---\nagent: {provider: codex}\nsupervise: false\n---\n")
    seeds = provider("codex").seed_files(plan)
    assert "codex/auth.json" not in seeds
    assert "mcp_servers" not in tomllib.loads(seeds["codex/config.toml"].decode())


@pytest.mark.parametrize(
    "name", ["plain", "with space", 'q"uote', "back\\slash", "dél\x7f", "nl\nx", "é.t"]
)
def test_any_server_name_and_value_round_trip_through_toml(name: str) -> None:
    servers = {name: {"command": "run", "args": [name, "-x"], "env": {name: "v\t1"}}}
    parsed = tomllib.loads(config_toml(servers))
    assert parsed["mcp_servers"] == {
        name: {"command": "run", "args": [name, "-x"], "env": {name: "v\t1"}}
    }


def test_seeds_land_in_the_transcript(home: Path, repo: Path, tmp_path: Path) -> None:
    plan = codex_plan(home, repo)
    transcript = tmp_path / "transcript"
    transcript.mkdir()
    written = seed_transcript(plan, transcript)
    assert "codex/config.toml" in written
    config = tomllib.loads((transcript / "codex/config.toml").read_text())
    assert config["sandbox_mode"] == "danger-full-access"
    if os.getuid() == 0:  # handed to the agent, who must write CODEX_HOME
        assert (transcript / "codex").stat().st_uid == int(plan.user.split(":")[0])


def test_commands() -> None:
    codex = provider("codex")
    assert codex.headless_command("-say hi") == [
        *("codex", "exec", "--dangerously-bypass-approvals-and-sandbox"),
        *("--skip-git-repo-check", "--", "-say hi"),
    ]
    resumed = codex.headless_command("go on", output="json", resume=True)
    assert resumed[:4] == ["codex", "exec", "resume", "--last"]
    assert resumed[-3:] == ["--json", "--", "go on"]
    assert codex.interactive_command([], resume=True)[:4] == [
        *("codex", "resume", "--last", "--include-non-interactive"),
    ]
    assert codex.skills_target(None).as_posix() == "/home/agent/.agents/skills"  # type: ignore[arg-type]
