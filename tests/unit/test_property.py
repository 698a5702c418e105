"""Random manifests: every one is accepted or rejected with a ManifestError, none crashes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from bottle.errors import BottleError, ManifestError
from bottle.manifest import load_manifest
from bottle.plan import PlanOptions, load_plan, plan_json, resolve_plan
from bottle.settings import Settings

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=12),
    st.sampled_from(["GET", "*.x.com", "x.com", "/v1/", "^/a$", "bearer", "${HOME}", "?q", "a"]),
)
keys = st.sampled_from(
    [
        "extends",
        "agent",
        "env",
        "egress",
        "routes",
        "host",
        "paths",
        "methods",
        "auth",
        "scheme",
        "token_ref",
        "git",
        "remotes",
        "name",
        "url",
        "supervise",
        "provider",
        "dlp",
        "passthrough",
        "bogus",
        "description",
        "headers",
        "dlp_secrets",
        "dockerfile",
        "args",
    ]
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)
front = st.dictionaries(keys, values, max_size=5)


def _dump(data: object) -> str:
    import io

    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, out)
    return out.getvalue()


# How many examples comes from the hypothesis profile (tests/conftest.py): few by default,
# many with --hypothesis-profile=thorough.
@settings(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bottle=front, agent=front, raw=st.text(max_size=40))
def test_random_manifests_never_crash(tmp_path: Path, bottle: dict, agent: dict, raw: str) -> None:
    home = tmp_path / "h"
    for sub in ("bottles", "agents"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    (home / "bottles" / "rnd.md").write_text("---\n" + _dump(bottle) + "---\n")
    (home / "agents" / "rnd.md").write_text("---\n" + _dump(agent) + "---\n")
    (home / "agents" / "raw.md").write_text("---\n" + raw + "\n---\n")
    try:
        manifest = load_manifest(home=home, cwd=tmp_path)
        plan = resolve_plan(
            manifest,
            PlanOptions(agent="rnd", cwd=tmp_path, suffix="abcde"),
            settings=Settings.from_env({"BOTTLE_HOME": str(home)}),
            environ={},
        )
        # Whatever the plan, plan.json gives it back.
        (tmp_path / "plan.json").write_text(plan_json(plan))
        bare = replace(plan, images=replace(plan.images, specs=()))
        assert load_plan(tmp_path / "plan.json") == bare
    except ManifestError as exc:
        assert exc.message and exc.hint
    except BottleError as exc:  # PlanError: e.g. a Dockerfile path that does not exist
        assert exc.message
