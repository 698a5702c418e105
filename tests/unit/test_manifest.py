from __future__ import annotations

from pathlib import Path

import pytest

from bottle.errors import ManifestError
from bottle.manifest import load_manifest
from bottle.trust import trust
from tests.conftest import write


def load(home: Path, repo: Path):
    return load_manifest(home=home, cwd=repo)


def test_builtins_work_with_no_files(home: Path, repo: Path) -> None:
    manifest = load(home, repo)
    assert manifest.agent("shell").origin == "builtin"
    assert manifest.resolve_bottle("default").agent is not None


def test_agent_body_is_system_prompt_and_claude_keys_are_ignored(home: Path, repo: Path) -> None:
    write(
        home / "agents" / "rev.md",
        "---\nname: rev\nmodel: sonnet\ncolor: red\ntools: Read\ndescription: d\n---\nBe kind.\n",
    )
    agent = load(home, repo).agent("rev")
    assert agent.body.strip() == "Be kind."
    assert agent.spec.description == "d"


def test_extends_merges_parent_first_child_routes_first(home: Path, repo: Path) -> None:
    write(
        home / "bottles" / "base.md",
        "---\nenv: {A: '1', B: '2'}\negress:\n  routes: [{host: a.example}]\n---\n",
    )
    write(
        home / "bottles" / "child.md",
        "---\nextends: base\nenv: {B: '3'}\negress:\n  routes: [{host: b.example}]\n---\n",
    )
    spec = load(home, repo).resolve_bottle("child")
    assert spec.env == {"A": "1", "B": "3"}
    assert spec.egress is not None
    assert [r.host for r in spec.egress.routes] == ["b.example", "a.example"]


def test_extends_cycle_shows_chain(home: Path, repo: Path) -> None:
    write(home / "bottles" / "a.md", "---\nextends: b\n---\n")
    write(home / "bottles" / "b.md", "---\nextends: [a]\n---\n")
    with pytest.raises(ManifestError) as err:
        load(home, repo).resolve_bottle("a")
    assert "a -> b -> a" in err.value.message
    assert err.value.field == "extends"


def test_missing_parent_names_chain_and_file(home: Path, repo: Path) -> None:
    path = write(home / "bottles" / "a.md", "---\nextends: nope\n---\n")
    with pytest.raises(ManifestError) as err:
        load(home, repo).resolve_bottle("a")
    assert "a -> nope" in err.value.message
    assert err.value.path == path


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("---\nenv: [1, 2\n---\n", None, "bad YAML"),
        ("---\n- a\n---\n", None, "mapping"),
        ("---\nsupervise: maybe\n---\n", "supervise", "true, false"),
        ("---\nsupervise: {wait: 0}\n---\n", "supervise.wait", "greater than"),
        ("---\nfrobnicate: 1\n---\n", "frobnicate", "unknown key"),
        ("---\negress:\n  routes: [{host: 'http://x.com'}]\n---\n", "egress.routes.0.host", "host"),
        (
            "---\negress:\n  routes: [{host: x.com, paths: ['^(']}]\n---\n",
            "egress.routes.0.paths.0",
            "regex",
        ),
        (
            "---\negress:\n  routes: [{host: x.com, auth: {scheme: magic, token_ref: T}}]\n---\n",
            "egress.routes.0.auth.scheme",
            "scheme",
        ),
        (
            "---\negress:\n  routes: [{host: x.com, methods: [YEET]}]\n---\n",
            "egress.routes.0.methods.0",
            "method",
        ),
        ("---\nenv: {'1BAD': x}\n---\n", "env.1BAD", "variable name"),
        ("---\nenv: {A: '${not valid}'}\n---\n", "env.A", "${NAME}"),
        ("---\nagent: {provider: vim}\n---\n", "agent.provider", "shell"),
        (
            "---\negress:\n  routes: [{host: x.com, passthrough: true, paths: [/a]}]\n---\n",
            "egress.routes.0",
            "passthrough",
        ),
        ("---\nunterminated: 1\n", None, "never ends"),
    ],
)
def test_bad_bottle_files_name_file_field_and_fix(
    home: Path, repo: Path, text: str, field: str | None, words: str
) -> None:
    path = write(home / "bottles" / "bad.md", text)
    with pytest.raises(ManifestError) as err:
        load(home, repo)
    assert err.value.path == path
    assert err.value.field == field
    assert words in str(err.value)
    assert err.value.hint


def test_bad_file_name(home: Path, repo: Path) -> None:
    write(home / "bottles" / "Bad Name.md", "---\n---\n")
    with pytest.raises(ManifestError, match="not a valid name"):
        load(home, repo)


def test_repo_may_not_define_bottles(home: Path, repo: Path) -> None:
    write(repo / ".bottle" / "bottles" / "evil.md", "---\n---\n")
    with pytest.raises(ManifestError, match="never bottles"):
        load(home, repo)


@pytest.mark.parametrize("key", ["egress", "env", "git", "agent"])
def test_repo_agent_cannot_widen(home: Path, repo: Path, key: str) -> None:
    write(repo / ".bottle" / "agents" / "sneaky.md", f"---\n{key}: {{}}\n---\n")
    with pytest.raises(ManifestError) as err:
        load(home, repo)
    assert err.value.field == key


def test_home_agent_wins_over_repo_agent_with_warning(home: Path, repo: Path) -> None:
    mine = write(home / "agents" / "dev.md", "---\n---\nmine\n")
    write(repo / ".bottle" / "agents" / "dev.md", "---\n---\ntheirs\n")
    manifest = load(home, repo)
    assert manifest.agent("dev").path == mine
    assert any("your home wins" in w for w in manifest.warnings)


def test_repo_agent_may_name_a_home_bottle(home: Path, repo: Path) -> None:
    write(home / "bottles" / "web.md", "---\negress: {routes: [{host: x.com}]}\n---\n")
    path = write(repo / ".bottle" / "agents" / "helper.md", "---\nbottle: web\n---\nhi\n")
    with pytest.raises(ManifestError, match="not trusted"):
        load(home, repo).agent("helper")
    trust(home, path)
    agent = load(home, repo).agent("helper")
    assert agent.origin == "repo"
    assert agent.spec.bottle == "web"


def test_agent_naming_missing_bottle(home: Path, repo: Path) -> None:
    path = write(home / "agents" / "a.md", "---\nbottle: ghost\n---\n")
    with pytest.raises(ManifestError) as err:
        load(home, repo)
    assert err.value.path == path and err.value.field == "bottle"


def test_unknown_agent_lists_known(home: Path, repo: Path) -> None:
    with pytest.raises(ManifestError) as err:
        load(home, repo).agent("nobody")
    assert "shell" in (err.value.hint or "")


def test_conflicting_auth_for_one_host(home: Path, repo: Path) -> None:
    from bottle.plan import PlanOptions, resolve_plan
    from bottle.settings import Settings

    path = write(
        home / "bottles" / "b.md",
        "---\negress:\n  routes:\n"
        "    - {host: x.com, auth: {scheme: bearer, token_ref: A}}\n"
        "    - {host: x.com, auth: {scheme: bearer, token_ref: B}}\n---\n",
    )
    manifest = load(home, repo)
    with pytest.raises(ManifestError) as err:
        resolve_plan(
            manifest,
            PlanOptions(agent="shell", bottle="b", cwd=repo),
            settings=Settings.from_env({"BOTTLE_HOME": str(home)}),
            environ={},
        )
    assert err.value.path == path and err.value.field == "egress.routes"


def test_the_examples_in_docs_manifest_md_load(home: Path, repo: Path) -> None:
    """docs/manifest.md shows every field; its two examples must stay valid files."""
    import re

    doc = (Path(__file__).parents[2] / "docs" / "manifest.md").read_text()
    bottle_text, agent_text = re.findall(r"```yaml\n(.*?)```", doc, flags=re.DOTALL)
    write(home / "bottles" / "base.md", "---\ndescription: parent\n---\n")
    write(home / "bottles" / "github.md", bottle_text)
    write(home / "bottles" / "agent.Dockerfile", "FROM ${BOTTLE_AGENT_IMAGE}\n")
    write(home / "agents" / "reviewer.md", agent_text)
    write(home / "skills" / "review" / "SKILL.md", "# review\n")
    manifest = load_manifest(home=home, cwd=repo)
    spec = manifest.resolve_bottle("github")
    assert spec.egress is not None and len(spec.egress.routes) == 2
    assert spec.git is not None and spec.git.remotes[0].push
    assert spec.supervise is not None and spec.supervise.enabled
    assert manifest.agent("reviewer").spec.bottle == "github"
    # and the documented custom Dockerfile is one the plan accepts
    from bottle.plan import PlanOptions, resolve_plan
    from bottle.settings import Settings

    plan = resolve_plan(
        manifest,
        PlanOptions(agent="reviewer", bottle=None, cwd=repo),
        settings=Settings.from_env({"BOTTLE_HOME": str(home)}),
        environ={"GITHUB_TOKEN": "t", "OTHER_SECRET": "s", "DEPLOY_KEY": "k", "HOST_VAR": "h"},
    )
    assert plan.agent_dockerfile == home / "bottles" / "agent.Dockerfile"


def test_extends_merges_each_sidecar_section_its_own_way(home: Path, repo: Path) -> None:
    write(
        home / "bottles" / "base.md",
        "---\nsupervise: {wait: 4}\ngit:\n  remotes:\n"
        "    - {name: a, url: 'https://x/a.git'}\n    - {name: b, url: 'https://x/b.git'}\n---\n",
    )
    write(
        home / "bottles" / "child.md",
        "---\nextends: base\nsupervise: false\ngit:\n  remotes:\n"
        "    - {name: b, url: 'https://y/b.git', push: false}\n---\n",
    )
    spec = load(home, repo).resolve_bottle("child")
    remotes = {r.name: r for r in spec.section("git").remotes}
    assert remotes["a"].url == "https://x/a.git"
    assert remotes["b"].url == "https://y/b.git" and not remotes["b"].push
    assert spec.section("supervise").enabled is False and spec.section("supervise").wait == 4


@pytest.mark.parametrize("key", ["egress", "git", "supervise"])
def test_a_repository_agent_may_not_carry_any_sidecar_section(
    home: Path, repo: Path, key: str
) -> None:
    path = write(repo / ".bottle" / "agents" / "x.md", f"---\n{key}: {{}}\n---\n")
    with pytest.raises(ManifestError) as err:
        load(home, repo)
    assert err.value.path == path and err.value.field == key
