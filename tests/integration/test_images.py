"""Real image builds through bottle.engine.images, against a real Docker engine.

Each test builds under a repository name of its own (``bottle-test-<random>-…``) so the
build really runs, even where bottle's images already exist (the tag, a hash of the inputs,
is the same; Docker's layer cache makes the second build of a layer quick), and removes
its tags afterwards.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from python_on_whales import docker
from python_on_whales.exceptions import DockerException

from bottle.engine.images import ensure_image
from bottle.errors import ImageBuildError
from bottle.images import ImageSpec, agent_image, custom_agent_image, sidecar_image
from bottle.settings import Settings

pytestmark = [pytest.mark.docker, pytest.mark.usefixtures("docker_engine")]

Renamer = Callable[[ImageSpec, str], ImageSpec]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({**os.environ, "BOTTLE_HOME": str(tmp_path / "home")})


@pytest.fixture
def rename() -> Iterator[Renamer]:
    """Gives specs a repository of this test's own; removes those images afterwards."""
    prefix = f"bottle-test-{uuid.uuid4().hex[:8]}"
    made: list[str] = []

    def _rename(spec: ImageSpec, name: str) -> ImageSpec:
        renamed = dataclasses.replace(spec, repo=f"{prefix}-{name}")
        made.append(renamed.ref)
        return renamed

    try:
        yield _rename
    finally:
        for ref in reversed(made):
            with contextlib.suppress(DockerException):
                docker.image.remove(ref)
        left = [
            img for img in docker.image.list() if any(t.startswith(prefix) for t in img.repo_tags)
        ]
        assert not left, f"images left behind: {left}"


def _build(spec: ImageSpec, settings: Settings) -> list[str]:
    lines: list[str] = []
    ref = ensure_image(spec, settings=settings, progress=lines.append)
    assert ref == spec.ref
    return lines


def _run(ref: str, *command: str) -> str:
    out = docker.run(ref, list(command), remove=True)
    assert isinstance(out, str)
    return out


def test_sidecar_image_builds_once_and_has_its_python_packages(
    settings: Settings, rename: Renamer
) -> None:
    spec = rename(sidecar_image(settings), "sidecar")
    lines = _build(spec, settings)
    assert any(line.startswith("Step ") and "pip install" in line for line in lines)

    again: list[str] = []
    assert ensure_image(spec, settings=settings, progress=again.append) == spec.ref
    assert again == []  # an unchanged image is never rebuilt

    labels = docker.image.inspect(spec.ref).config.labels or {}
    assert labels["bottle.image-inputs"] == spec.tag
    assert "bottle.version" in labels

    out = _run(
        spec.ref,
        "python",
        "-c",
        "import mitmproxy, mcp, pydantic, ruamel.yaml, bottle.policy, sys; "
        "print(sys.version_info >= (3, 12))",
    )
    assert out.strip() == "True"
    # Exactly the versions of uv.lock's sidecar group, which the unit tests run against.
    from importlib.metadata import version

    names = ("mitmproxy", "mcp", "pydantic", "ruamel.yaml")
    shipped = _run(
        spec.ref,
        "python",
        "-c",
        f"from importlib.metadata import version; print(*(version(n) for n in {names!r}))",
    )
    assert shipped.split() == [version(n) for n in names]
    assert _run(spec.ref, "git", "--version").startswith("git version")
    assert _run(spec.ref, "sh", "-c", "test -s /etc/bottle/host-ca.pem && echo ok") == "ok"


def test_shell_agent_trusts_only_the_bottle_ca(settings: Settings, rename: Renamer) -> None:
    spec = rename(agent_image(settings, "shell"), "agent-shell")
    assert any(line.startswith("Step ") for line in _build(spec, settings))
    again: list[str] = []
    ensure_image(spec, settings=settings, progress=again.append)
    assert again == []

    link = _run(spec.ref, "readlink", "/etc/ssl/certs/ca-certificates.crt")
    assert link == "/run/bottle/ca/ca.pem"
    # Any uid may use the home (the agent runs as the host user's uid).
    out = docker.run(
        spec.ref, ["sh", "-c", 'touch "$HOME/x" && echo "$HOME"'], user="54321", remove=True
    )
    assert out == "/home/agent"


def test_shell_agent_runs_what_its_user_expects(settings: Settings) -> None:
    spec = agent_image(settings, "shell")
    ensure_image(spec, settings=settings, progress=lambda _: None)
    script = (
        "set -e; cd /tmp; git init -q src; "
        "git -C src -c user.name=t -c user.email=t@t commit -q --allow-empty -m first; "
        "git clone -q src dst; git -C dst log --format=%s; "
        "python3 -c 'import ssl, json, sqlite3, venv, zoneinfo; print(\"python ok\")'; "
        "curl --version | head -1 | cut -d' ' -f1; ssh -V 2>&1 | cut -c1-7; "
        "less --version | head -1 | cut -d' ' -f1; ps -o comm= -p $$; "
        "ip -br link show lo | cut -d' ' -f1; "
        "ss -V | cut -d' ' -f1; perl -e 'use POSIX (); print \"perl ok\\n\"'; "
        "printf 'caf\\351' | iconv -f latin1 -t utf-8; echo"
    )
    # As root: ssh refuses a uid without a passwd entry (the image's users are its own).
    out = _run(spec.ref, "sh", "-c", script)
    assert out.splitlines() == [
        "first",
        "python ok",
        "curl",
        "OpenSSH",
        "less",
        "sh",
        "lo",
        "ss",
        "perl ok",
        "caf\u00e9",
    ]


def test_custom_agent_gets_back_what_the_shell_image_leaves_out(
    settings: Settings, rename: Renamer, tmp_path: Path
) -> None:
    parent = agent_image(settings, "shell")
    ensure_image(parent, settings=settings, progress=lambda _: None)
    d = tmp_path / "agent"
    d.mkdir()
    # The recipe docs/agents.md gives for a custom agent that needs the whole of perl.
    (d / "Dockerfile").write_text(
        "ARG BOTTLE_AGENT_IMAGE\nFROM ${BOTTLE_AGENT_IMAGE}\n"
        "RUN rm /etc/dpkg/dpkg.cfg.d/bottle-agent-shell && apt-get update && "
        "DEBIAN_FRONTEND=noninteractive apt-get install -y --reinstall "
        "perl-modules-5.40 libperl5.40\n"
    )
    check = "use Pod::Usage (); use Encode::JP (); print qq(full perl\n)"
    assert "full perl" not in _try(parent.ref, "perl", "-e", check)
    spec = rename(custom_agent_image(settings, d / "Dockerfile", parent), "custom-perl")
    _build(spec, settings)
    assert _run(spec.ref, "perl", "-e", check) == "full perl"


def _try(ref: str, *command: str) -> str:
    try:
        return _run(ref, *command)
    except DockerException as exc:
        return exc.stderr or ""


def test_custom_agent_builds_on_its_parent(
    settings: Settings, rename: Renamer, tmp_path: Path
) -> None:
    parent = agent_image(settings, "shell")
    ensure_image(parent, settings=settings, progress=lambda _: None)
    d = tmp_path / "agent"
    d.mkdir()
    (d / "Dockerfile").write_text(
        "ARG BOTTLE_AGENT_IMAGE\nFROM ${BOTTLE_AGENT_IMAGE}\nCOPY hello.sh /usr/local/bin/hello\n"
    )
    (d / "hello.sh").write_text("#!/bin/sh\necho hello from custom\n")
    (d / "hello.sh").chmod(0o755)
    spec = rename(custom_agent_image(settings, d / "Dockerfile", parent), "custom")
    _build(spec, settings)
    assert _run(spec.ref, "hello") == "hello from custom"
    assert _run(spec.ref, "readlink", "/etc/ssl/certs/ca-certificates.crt") == (
        "/run/bottle/ca/ca.pem"
    )


def test_failed_build_names_image_and_step(settings: Settings, rename: Renamer) -> None:
    broken = ImageSpec(
        repo="broken",
        dockerfile="ARG BASE=python:3.13-slim\nFROM ${BASE}\nRUN echo boom-output && exit 7\n",
        files={"unused.txt": uuid.uuid4().hex.encode()},
        build_args={},
        base=settings.base_image,
    )
    spec = rename(broken, "broken")
    with pytest.raises(ImageBuildError) as info:
        ensure_image(spec, settings=settings, progress=lambda _: None)
    err = info.value
    assert spec.ref in err.message
    assert err.step is not None
    assert err.step.startswith("Step 3/")
    assert "RUN echo boom-output && exit 7" in err.step
    assert err.step in err.message
    assert "boom-output" in err.stderr
    assert len(err.stderr.splitlines()) <= 40
    assert not docker.image.exists(spec.ref)
