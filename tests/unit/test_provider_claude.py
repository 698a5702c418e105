"""The claude provider: its environment, pre-seeded first start, and commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bottle.manifest import load_manifest
from bottle.plan import BottlePlan, PlanOptions, resolve_plan
from bottle.policy import PLACEHOLDER
from bottle.providers import provider, seed_transcript
from bottle.providers.claude import CONFIG_DIR
from bottle.settings import Settings
from tests.conftest import write

BOTTLE = """---
agent: {provider: claude}
egress:
  routes:
    - {host: api.anthropic.com, auth: {scheme: "header:x-api-key", token_ref: ANTHROPIC_API_KEY}}
---
"""


@pytest.fixture
def plan(tmp_path: Path) -> BottlePlan:
    home, repo = tmp_path / "home", tmp_path / "repo"
    write(home / "bottles" / "cc.md", BOTTLE)
    write(home / "agents" / "cc.md", "---\nbottle: cc\n---\nYou review.\n")
    repo.mkdir()
    if os.getuid() == 0:  # the agent runs as the workspace's owner
        os.chown(repo, 1000, 1000)
    return resolve_plan(
        load_manifest(home=home, cwd=repo),
        PlanOptions(agent="cc", cwd=repo, suffix="abcde"),
        settings=Settings.from_env({"BOTTLE_HOME": str(home)}),
        environ={"ANTHROPIC_API_KEY": "sk-real"},
    )


def test_env_satisfies_the_sandbox_check_and_turns_nonessential_traffic_off(
    plan: BottlePlan,
) -> None:
    env = provider("claude").env(plan)
    assert env["CLAUDE_CONFIG_DIR"] == str(CONFIG_DIR)
    assert env["IS_SANDBOX"] == "1"
    for name in ("DISABLE_TELEMETRY", "DISABLE_ERROR_REPORTING", "DISABLE_AUTOUPDATER"):
        assert env[name] == "1"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"


def test_seed_is_a_finished_first_start(plan: BottlePlan, tmp_path: Path) -> None:
    transcript = tmp_path / "transcript"
    transcript.mkdir()
    written = seed_transcript(plan, transcript)
    assert written == ["claude/.claude.json", "claude/settings.json", "claude/skills/"]
    config = json.loads((transcript / "claude" / ".claude.json").read_text())
    assert config["hasCompletedOnboarding"] is True
    assert config["projects"]["/workspace"]["hasTrustDialogAccepted"] is True
    assert config["bypassPermissionsModeAccepted"] is True
    # The "Make auto mode your default permission mode?" offer, answered.
    assert config["hasSeenAutoDefaultNudge"] is True
    # Claude Code keeps the last 20 characters of an approved key: the placeholder's.
    assert config["customApiKeyResponses"]["approved"] == [PLACEHOLDER[-20:]]
    settings = json.loads((transcript / "claude" / "settings.json").read_text())
    assert settings["permissions"]["defaultMode"] == "bypassPermissions"
    assert settings["skipDangerousModePermissionPrompt"] is True
    assert (transcript / "claude" / "skills").is_dir()


def test_seed_keeps_what_is_there_and_follows_no_link(plan: BottlePlan, tmp_path: Path) -> None:
    transcript = tmp_path / "transcript"
    write(transcript / "claude" / ".claude.json", '{"numStartups": 7}')
    outside = tmp_path / "outside"
    outside.mkdir()
    (transcript / "claude" / "settings.json").symlink_to(outside / "settings.json")
    written = seed_transcript(plan, transcript)
    assert written == ["claude/skills/"]
    assert (transcript / "claude" / ".claude.json").read_text() == '{"numStartups": 7}'
    assert not (outside / "settings.json").exists()


@pytest.mark.skipif(os.getuid() != 0, reason="hands files to another uid: needs root")
def test_seed_belongs_to_the_agent_uid_when_bottle_is_root(
    plan: BottlePlan, tmp_path: Path
) -> None:
    transcript = tmp_path / "transcript"
    transcript.mkdir()
    seed_transcript(plan, transcript)
    uid = int(plan.user.split(":")[0])
    assert uid == 1000
    for rel in ("claude", "claude/.claude.json", "claude/skills"):
        assert (transcript / rel).stat().st_uid == uid


def test_headless_command_takes_the_bottle_wiring_and_the_output_form() -> None:
    claude = provider("claude")
    argv = claude.headless_command("say hi", output="json")
    assert argv[:2] == ["sh", "-c"]
    assert "--mcp-config" in argv[2] and "--append-system-prompt" in argv[2]
    assert argv[-5:] == ["--output-format", "json", "-p", "--", "say hi"]
    assert "--continue" in claude.headless_command("go on", resume=True)
    assert "--verbose" in claude.headless_command("x", output="stream-json")


def test_a_prompt_that_looks_like_an_option_stays_the_prompt() -> None:
    # claude's -p is a flag, the prompt a positional: without "--", a task such as "--help"
    # printed claude's help (rc 0) and "--model=x ..." chose the model.
    for prompt in ("--help", "-x", "--model=opus do it", "- fix the bug"):
        argv = provider("claude").headless_command(prompt, resume=True)
        assert argv[-2:] == ["--", prompt]
        assert argv.index("--") > argv.index("-p") > argv.index("--continue")


def test_user_command_wires_only_the_program_itself() -> None:
    claude = provider("claude")
    wired = claude.user_command(["claude", "-p", "hi"])
    assert wired[:2] == ["sh", "-c"] and wired[-2:] == ["-p", "hi"]
    assert claude.user_command(["pytest", "-x"]) == ["pytest", "-x"]
    assert provider("shell").user_command(["claude", "-p"]) == ["claude", "-p"]
