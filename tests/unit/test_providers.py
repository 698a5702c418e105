"""Providers: every kind has a module, and ``provider: command`` runs any CLI agent.

The command provider's templates are validated strictly in the bottle file, carried by
the plan, written to the agent config dir, and filled in by the launcher in the
container; here the launcher runs on the host against a copy of the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import get_args

import pytest

from bottle.compose import agent_files, render
from bottle.errors import ManifestError
from bottle.manifest import load_manifest
from bottle.manifest.models import ProviderKind
from bottle.plan import PlanOptions, load_plan, plan_json, resolve_plan
from bottle.providers import command as command_provider
from bottle.providers import provider
from bottle.settings import Settings
from tests.conftest import user_owned, write

DOCKERFILE = "FROM ${BOTTLE_AGENT_IMAGE}\nCOPY agent.py /usr/local/bin/agent.py\n"
COMMAND_BOTTLE = """---
agent:
  provider: command
  dockerfile: agent/Dockerfile
  command:
    interactive: [agent.py, --chat]
    headless: [agent.py, --task, "{prompt}"]
    headless_resume: [agent.py, --continue, "--task={prompt}", "{{literal}}"]
---
"""


def _home(home: Path, bottle_text: str = COMMAND_BOTTLE) -> Path:
    write(home / "bottles" / "cmd.md", bottle_text)
    write(home / "bottles" / "agent" / "Dockerfile", DOCKERFILE)
    write(home / "bottles" / "agent" / "agent.py", "print('hi')\n")
    write(home / "agents" / "cmd.md", "---\nbottle: cmd\n---\nYou are a command agent.\n")
    return home


def _plan(home: Path, repo: Path, agent: str = "cmd"):
    settings = Settings(home=home)
    manifest = load_manifest(home=home, cwd=repo)
    options = PlanOptions(agent=agent, cwd=user_owned(repo))
    return resolve_plan(manifest, options, settings=settings, environ={})


def test_every_provider_kind_has_a_module_of_that_kind() -> None:
    for kind in get_args(ProviderKind):
        assert provider(kind).kind == kind


def test_every_provider_has_every_member_of_the_protocol() -> None:
    from bottle.providers.base import Provider

    members = [
        name
        for name in vars(Provider)
        if not name.startswith("_") and callable(getattr(Provider, name))
    ]
    assert {"env", "seed_files", "headless_command", "user_command"} <= set(members)
    for kind in get_args(ProviderKind):
        found = provider(kind)
        missing = [name for name in members if not callable(getattr(found, name, None))]
        assert missing == [], f"provider {kind} lacks {missing}"


def test_a_command_bottle_plans_on_the_shell_image_with_its_templates(
    home: Path, repo: Path
) -> None:
    plan = _plan(_home(home), repo)
    assert plan.provider == "command"
    assert plan.agent_command is not None
    assert plan.agent_command.headless == ("agent.py", "--task", "{prompt}")
    # The user's Dockerfile builds on the shell agent's image.
    assert plan.images.specs[1].repo == "bottle-agent-shell"
    assert plan.images.agent.startswith("bottle-agent-custom:")
    # plan.json carries the templates: a resume or a capability re-render needs them.
    path = home / "plan.json"
    path.write_text(plan_json(plan))
    assert load_plan(path).agent_command == plan.agent_command
    files = json.loads(agent_files(plan)["command.json"])
    assert files == {
        "interactive": ["agent.py", "--chat"],
        "resume": ["agent.py", "--chat"],  # no resume template: the plain command
        "headless": ["agent.py", "--task", "{prompt}"],
        "headless_resume": ["agent.py", "--continue", "--task={prompt}", "{{literal}}"],
    }
    assert render(plan)["services"]["agent"]["image"] == plan.images.agent


def test_other_providers_get_no_command_file(home: Path, repo: Path) -> None:
    write(home / "bottles" / "plain.md", "---\nagent: {provider: shell}\n---\n")
    write(home / "agents" / "plain.md", "---\nbottle: plain\n---\n")
    assert "command.json" not in agent_files(_plan(home, repo, "plain"))


@pytest.mark.parametrize(
    ("agent", "words"),
    [
        (
            "{provider: command, dockerfile: agent/Dockerfile}",
            "provider 'command' needs a command",
        ),
        (
            "{provider: command, command: {interactive: [a], headless: [a, '{prompt}']}}",
            "needs a dockerfile",
        ),
        (
            "{provider: shell, command: {interactive: [a], headless: [a, '{prompt}']}}",
            "for provider 'command' only",
        ),
        (
            "{provider: command, dockerfile: agent/Dockerfile, "
            "command: {interactive: [a], headless: [a, task]}}",
            "must pass the task",
        ),
        (
            "{provider: command, dockerfile: agent/Dockerfile, "
            "command: {interactive: [a, '{prompt}'], headless: [a, '{prompt}']}}",
            "gets no task",
        ),
        (
            "{provider: command, dockerfile: agent/Dockerfile, "
            "command: {interactive: [a], headless: [a, '{prompt}', '{home}']}}",
            "only {prompt} may be filled in, not {home}",
        ),
        (
            "{provider: command, dockerfile: agent/Dockerfile, "
            "command: {interactive: [a], headless: [a, '{prompt.upper}']}}",
            "only {prompt} may be filled in",
        ),
        (
            "{provider: command, dockerfile: agent/Dockerfile, "
            "command: {interactive: [a], headless: [a, '{prompt']}}",
            "literal brace",
        ),
        (
            "{provider: command, dockerfile: agent/Dockerfile, "
            "command: {interactive: [], headless: [a, '{prompt}']}}",
            "give the program and its arguments",
        ),
        (
            "{provider: command, dockerfile: agent/Dockerfile, "
            "command: {interactive: a, headless: [a, '{prompt}']}}",
            "tuple",
        ),
        (
            "{provider: command, dockerfile: agent/Dockerfile, "
            "command: {interactive: [a], headless: [a, '{prompt}'], shell: 'a | b'}}",
            "shell",
        ),
    ],
)
def test_a_bad_command_section_names_the_file_field_and_fix(
    home: Path, repo: Path, agent: str, words: str
) -> None:
    _home(home, f"---\nagent: {agent}\n---\n")
    with pytest.raises(ManifestError) as err:
        _plan(home, repo)
    assert err.value.path == home / "bottles" / "cmd.md"
    assert words in str(err.value)
    assert err.value.hint


def test_an_agent_cannot_switch_to_command_without_a_command(home: Path, repo: Path) -> None:
    write(
        home / "bottles" / "open.md",
        "---\nagent: {provider: shell, overridable: [provider, args]}\n---\n",
    )
    write(home / "agents" / "sw.md", "---\nbottle: open\nprovider: command\n---\n")
    with pytest.raises(ManifestError, match="says no command to run") as err:
        _plan(home, repo, "sw")
    assert err.value.field == "provider.provider"


def test_the_launcher_passes_the_task_as_one_argument_never_through_a_shell(
    tmp_path: Path,
) -> None:
    file = tmp_path / "command.json"
    echo = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]
    from bottle.manifest.models import AgentCommand

    spec = AgentCommand(
        interactive=(*echo, "chat"),
        headless=(*echo, "--task={prompt}", "{{x}}"),
        headless_resume=(*echo, "again", "{prompt}"),
    )
    file.write_bytes(command_provider.command_file(spec))
    cmd = command_provider.PROVIDER

    def run(argv: list[str]) -> list[str]:
        assert argv[:2] == ["python3", "-c"]
        launcher = argv[2].replace("/run/bottle/agent/command.json", str(file))
        out = subprocess.run(
            [sys.executable, "-c", launcher, *argv[3:]], capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout)

    task = "fix it; rm -rf / $(id) {prompt} 'q'"
    assert run(cmd.headless_command(task)) == [f"--task={task}", "{x}"]
    assert run(cmd.headless_command("go on", resume=True)) == ["again", "go on"]
    assert run(cmd.interactive_command(["--model", "m"])) == ["chat", "--model", "m"]
    assert run(cmd.interactive_command([], resume=True)) == ["chat"]  # falls back


def test_the_shipped_command_example_plans(examples_home: Path, repo: Path) -> None:
    """examples/bottles/llm.md, the worked example of docs/agents.md, stays valid."""
    plan = _plan(examples_home, repo, "llm")
    assert plan.provider == "command" and plan.agent_command is not None
    assert plan.agent_command.headless_resume == ("llm", "--continue", "{prompt}")
    assert plan.images.agent.startswith("bottle-agent-custom:")
    assert "OPENAI_API_KEY" in plan.missing_env  # a token_ref: held by egress alone


def test_docs_agents_md_shows_the_shipped_example() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "agents.md").read_text()
    example = (Path(__file__).parents[2] / "examples" / "bottles" / "llm.md").read_text()
    front = example.split("---\n")[1]
    assert "## Any CLI agent" in docs and front in docs
