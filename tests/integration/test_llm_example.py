"""The worked example of ``provider: command`` (docs/agents.md): examples/bottles/llm.md
with its Dockerfile, built on this machine's base and run headless against the fake API.

The example's files are used as shipped; the only change is ``private: true`` on its route,
because the fake (tests/fakeapi: the Responses API, which llm 0.36 speaks) is a container
on the bottle's egress network under the name ``api.openai.com``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES, write
from tests.integration.conftest import WORKSPACE_OWNER, _leftovers, cli
from tests.integration.fakeapi import FakeAPI

pytestmark = pytest.mark.docker

REAL_KEY = "sk-real-" + "11m3xamp1e" * 3  # only the host and the fake see it
SCRIPT = {
    "openai": {
        "conversations": [{"match": "LLM-EXAMPLE", "turns": [{"text": "hi from the fake"}]}],
        "default": "ok",
    }
}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory, docker_engine: None) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("llm-home")
    shutil.copytree(EXAMPLES / "bottles", home / "bottles")
    shutil.copytree(EXAMPLES / "agents", home / "agents")
    shipped = (home / "bottles" / "llm.md").read_text()
    route = "      auth: {scheme: bearer, token_ref: OPENAI_API_KEY}\n"
    assert route in shipped
    write(home / "bottles" / "llm.md", shipped.replace(route, route + "      private: true\n"))
    yield home
    assert _leftovers(home) is None


def test_the_llm_example_builds_and_answers_headless(
    home: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from bottle.engine.images import ensure_image
    from bottle.images import sidecar_image
    from bottle.settings import Settings

    workdir = tmp_path_factory.mktemp("llm-work")
    if os.getuid() == 0:  # the agent runs as the workspace's owner, never as root
        os.chown(workdir, *WORKSPACE_OWNER)
    settings = Settings.from_env({**os.environ, "BOTTLE_HOME": str(home)})
    image = ensure_image(sidecar_image(settings), settings=settings, progress=lambda _l: None)
    tmp = tmp_path_factory.mktemp("llm-fake")
    with FakeAPI.running(
        home, tmp, image=image, script=SCRIPT, aliases=("api.openai.com",)
    ) as fake:
        env = {
            "BOTTLE_HOME": str(home),
            "OPENAI_API_KEY": REAL_KEY,
            "BOTTLE_EXTRA_CA_CERTS": str(fake.ca_file),
        }
        done = cli("run", "llm", "--prompt", "LLM-EXAMPLE say hi", cwd=workdir, env_extra=env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert done.stdout.strip() == "hi from the fake", done.stdout
        # llm 0.36 speaks the Responses API, the fake's dialect for Codex too.
        (request,) = [
            r
            for r in fake.requests()
            if r["method"] == "POST" and r["path"].split("?")[0] == "/v1/responses"
        ]
        # The real key on the wire, put in by egress; the agent held the placeholder.
        assert request["headers"]["authorization"] == f"Bearer {REAL_KEY}"
        assert "LLM-EXAMPLE say hi" in json.dumps(request["body"])
        # The build pointed the system store at the host's bundle for a while: it is the
        # bottle's CA again, the one thing the agent trusts.
        store = "/etc/ssl/certs/ca-certificates.crt"
        done = cli("run", "llm", "--", "readlink", store, cwd=workdir, env_extra=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert done.stdout.strip() == "/run/bottle/ca/ca.pem"
