"""Image specs: tags are hashes of every input, contexts hold what the Dockerfiles need."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import bottle.images as images
import bottle.images.base as base
from bottle.engine.images import _stream, base_recipe_ref
from bottle.errors import BottleError
from bottle.images import (
    PROVIDERS,
    ImageSpec,
    agent_image,
    custom_agent_image,
    dockerfile_text,
    sidecar_image,
)
from bottle.images.sources import runtime_sources
from bottle.settings import Settings

BUILTIN = ["sidecar.Dockerfile", *(f"agent-{p}.Dockerfile" for p in PROVIDERS)]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    ca = tmp_path / "system-ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\nSYSTEM\n-----END CERTIFICATE-----\n")
    return Settings(home=tmp_path / "home", system_ca_bundle=ca)


def spec(**changes: object) -> ImageSpec:
    fields: dict[str, object] = {
        "repo": "bottle-test",
        "dockerfile": "ARG BASE\nFROM ${BASE}\n",
        "files": {"a.txt": b"a", "dir/b.sh": b"#!/bin/sh\n"},
        "build_args": {"X": "1", "Y": "2"},
        "base": "python:3.13-slim",
    }
    fields.update(changes)
    return ImageSpec(**fields)  # type: ignore[arg-type]


# --- ImageSpec --------------------------------------------------------------------------


def test_tag_is_12_hex_and_ref_joins_repo_and_tag() -> None:
    s = spec()
    assert re.fullmatch(r"[0-9a-f]{12}", s.tag)
    assert s.ref == f"bottle-test:{s.tag}"


def test_tag_is_stable_and_ignores_mapping_order() -> None:
    a = spec()
    b = spec(
        files={"dir/b.sh": b"#!/bin/sh\n", "a.txt": b"a"},
        build_args={"Y": "2", "X": "1"},
    )
    assert a.tag == b.tag == spec().tag
    assert a == b
    assert hash(a) == hash(b)


@pytest.mark.parametrize(
    "changes",
    [
        {"dockerfile": "ARG BASE\nFROM ${BASE}\nRUN true\n"},
        {"files": {"a.txt": b"A", "dir/b.sh": b"#!/bin/sh\n"}},
        {"files": {"a.txt": b"a", "dir/c.sh": b"#!/bin/sh\n"}},
        {"files": {"a.txt": b"a"}},
        {"build_args": {"X": "1", "Y": "3"}},
        {"build_args": {"X": "1"}},
        {"base": "bottle-base:trixie-000000000000"},
        {"made_base": "bottle-base:trixie-000000000000"},
        {"executable": frozenset({"dir/b.sh"})},
    ],
)
def test_tag_changes_with_every_input(changes: dict[str, object]) -> None:
    assert spec(**changes).tag != spec().tag


def test_tag_does_not_confuse_boundaries_between_inputs() -> None:
    assert spec(files={"ab": b"c"}).tag != spec(files={"a": b"bc"}).tag
    assert spec(build_args={"A": "BC"}).tag != spec(build_args={"AB": "C"}).tag


def test_spec_cannot_change_after_its_tag_was_taken() -> None:
    files = {"a.txt": b"a"}
    s = spec(files=files)
    tag = s.tag
    files["a.txt"] = b"changed"
    assert s.tag == tag
    with pytest.raises(TypeError):
        s.files["a.txt"] = b"x"  # type: ignore[index]


@pytest.mark.parametrize(
    "name", ["/etc/passwd", "../x", "a/../../x", "", "a//b", "./a", "a/", "a/./b", "a/..", ".."]
)
def test_context_paths_must_stay_inside_the_context(name: str) -> None:
    with pytest.raises(ValueError, match="relative POSIX path"):
        spec(files={name: b""})


def test_executable_must_name_context_files() -> None:
    with pytest.raises(ValueError, match="executable"):
        spec(executable=frozenset({"missing"}))


# --- built-in Dockerfiles ---------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_dockerfiles_take_their_base_as_a_build_arg(name: str) -> None:
    lines = [ln for ln in dockerfile_text(name).splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "ARG BASE=python:3.13-slim"
    assert lines[1] in ("FROM ${BASE}", "FROM ${BASE} AS build")


def _instructions(text: str) -> list[str]:
    """Dockerfile instructions, one per entry, continuation lines joined."""
    out: list[str] = []
    current = ""
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            out.append(current.strip())
            current = ""
    return out


def test_sidecar_installs_python_packages_before_copying_bottle_source() -> None:
    steps = _instructions(dockerfile_text("sidecar.Dockerfile"))
    pip = next(i for i, s in enumerate(steps) if "pip install" in s)
    copy = next(i for i, s in enumerate(steps) if s.startswith("COPY bottle "))
    assert pip < copy == len(steps) - 2
    # Then only their bytecode, so no sidecar start compiles them (the root is read-only).
    assert steps[-1].startswith('RUN ["/opt/venv/bin/python", "-m", "compileall"')
    assert '"unchecked-hash", "/opt/bottle"]' in steps[-1]
    # Only the locked requirements, hashes checked: no hand pins left in the Dockerfile.
    assert "--require-hashes" in steps[pip]
    assert "-r /etc/bottle/sidecar-requirements.txt" in steps[pip]
    assert "==" not in dockerfile_text("sidecar.Dockerfile")
    assert "COPY sidecar-requirements.txt /etc/bottle/sidecar-requirements.txt" in steps[:pip]
    env = next(s for s in steps if s.startswith("ENV PATH=/opt/venv/bin"))
    assert "PYTHONPATH=/opt/bottle" in env
    assert "PIP_CERT" not in env  # the host CA is trusted by build steps only
    assert "COPY host-ca.pem /etc/bottle/host-ca.pem" in steps


REPO = Path(__file__).resolve().parents[2]


def _pins(requirements: str) -> dict[str, str]:
    pins = {}
    for line in requirements.splitlines():
        m = re.match(r"^([A-Za-z0-9._-]+)==([^ ;\\]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(2)
    return pins


def test_sidecar_requirements_are_the_locked_sidecar_group() -> None:
    shipped = dockerfile_text("sidecar-requirements.txt")
    # Regenerate with the command in the file's header when uv.lock changes. `uv run` names
    # its own binary in UV: the "uv" on PATH may be a version manager's shim (pyenv's: 0.5 s).
    exported = subprocess.run(
        [
            os.environ.get("UV", "uv"),
            "export",
            "--frozen",
            "--only-group",
            "sidecar",
            "--no-emit-project",
            "--quiet",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    strip = lambda text: [ln for ln in text.splitlines() if not ln.startswith("#")]  # noqa: E731
    assert strip(shipped) == strip(exported)
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    locked: dict[str, list[str]] = {}
    for package in lock["package"]:
        locked.setdefault(package["name"], []).append(package["version"])
    pins = _pins(shipped)
    for name in ("mitmproxy", "mcp", "pydantic", "ruamel-yaml"):
        assert locked[name] == [pins[name]]  # one version in the lock, the one the image gets
    assert pins["mcp"].startswith("1.")  # supervise's FastMCP is mcp 1.x
    entries = re.split(r"\n(?=\S)", "\n".join(strip(shipped)))
    assert len(entries) == len(pins) > 10
    assert all("--hash=sha256:" in entry for entry in entries)  # pip --require-hashes


def test_the_dev_environment_runs_the_versions_the_sidecar_installs() -> None:
    from importlib.metadata import version

    pins = _pins(dockerfile_text("sidecar-requirements.txt"))
    for name in ("mitmproxy", "mcp", "pydantic", "ruamel.yaml"):
        assert version(name) == pins[name.replace(".", "-")], name


@pytest.mark.parametrize("provider", PROVIDERS)
def test_agent_images_trust_only_the_bottle_ca_at_run_time(provider: str) -> None:
    steps = _instructions(dockerfile_text(f"agent-{provider}.Dockerfile"))
    runs = [s for s in steps if s.startswith("RUN ")]
    assert runs[-1] == "RUN ln -sf /run/bottle/ca/ca.pem /etc/ssl/certs/ca-certificates.crt"
    assert steps[-1] == 'CMD ["sleep", "infinity"]'
    assert "ENV HOME=/home/agent" in steps
    assert any("chmod 1777 /home/agent" in s for s in runs)


# --- specs from settings ----------------------------------------------------------------


def test_sidecar_context_holds_host_ca_and_the_runtime_modules(settings: Settings) -> None:
    s = sidecar_image(settings)
    assert s.repo == "bottle-sidecar"
    assert s.base == settings.base_image == "python:3.13-slim"
    assert s.dockerfile == dockerfile_text("sidecar.Dockerfile")
    assert s.files["host-ca.pem"] == settings.host_ca_pem()
    assert (
        s.files["sidecar-requirements.txt"] == dockerfile_text("sidecar-requirements.txt").encode()
    )
    root = Path(images.__file__).parent.parent
    runtime = {
        f"bottle/{p.relative_to(root).as_posix()}"
        for p in (root / "runtime").rglob("*.py")
        if "__pycache__" not in p.parts
    }
    others = {n for n in s.files if n not in {"host-ca.pem", "sidecar-requirements.txt"}}
    assert runtime <= others
    for shared in ("bottle/__init__.py", "bottle/policy.py", "bottle/layout.py"):
        assert s.files[shared] == (root / shared.removeprefix("bottle/")).read_bytes()
    # Host-only code is not in the image, so changing it does not rebuild the image.
    for host_only in (
        "bottle/capability.py",
        "bottle/operator.py",
        "bottle/engine/compose.py",
        "bottle/instance.py",
    ):
        assert host_only not in s.files
    assert all(n.startswith("bottle/") for n in others)
    assert all(n.endswith((".py", "/py.typed")) for n in others)
    assert not any("__pycache__" in n for n in s.files)


def _copy_package(tmp_path: Path) -> Path:
    root = Path(images.__file__).parent.parent
    copy = tmp_path / "src" / "bottle"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


@pytest.fixture(scope="module")
def walked_copy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, bytes]]:
    """A copy of the package and its walk without a cache, made once (a walk parses every
    runtime module): the tests read them, and edit copies of their own."""
    copy = _copy_package(tmp_path_factory.mktemp("walked"))
    return copy, runtime_sources(copy)


def test_sidecar_tag_ignores_host_only_code_and_follows_runtime_code(
    settings: Settings, tmp_path: Path, walked_copy: tuple[Path, dict[str, bytes]]
) -> None:
    copy = _copy_package(tmp_path)
    before = walked_copy[1]  # the walk of the same files, before this copy is edited
    (copy / "capability.py").write_text("# edited on the host\n")
    (copy / "engine" / "compose.py").write_text("# edited on the host\n")
    assert runtime_sources(copy) == before
    for shared in ("policy.py", "runtime/egress/dlp.py", "layout.py"):
        (copy / shared).write_text((copy / shared).read_text() + "\n# edited\n")
        after = runtime_sources(copy)
        assert after[f"bottle/{shared}"] != before[f"bottle/{shared}"]
        assert (
            images.ImageSpec("r", "d", after, {}, "b").tag
            != images.ImageSpec("r", "d", before, {}, "b").tag
        )


def test_sidecar_tag_is_stable_and_follows_settings(settings: Settings, tmp_path: Path) -> None:
    assert sidecar_image(settings).tag == sidecar_image(settings).tag
    extra = tmp_path / "extra.pem"
    extra.write_bytes(b"EXTRA\n")
    with_extra = Settings(
        home=settings.home, system_ca_bundle=settings.system_ca_bundle, extra_ca_certs=extra
    )
    assert sidecar_image(with_extra).files["host-ca.pem"].endswith(b"EXTRA\n")
    assert sidecar_image(with_extra).tag != sidecar_image(settings).tag
    other_base = Settings(
        home=settings.home, system_ca_bundle=settings.system_ca_bundle, base_image="debian:x"
    )
    assert sidecar_image(other_base).tag != sidecar_image(settings).tag


@pytest.mark.parametrize("provider", PROVIDERS)
def test_agent_image_per_provider(settings: Settings, provider: str) -> None:
    s = agent_image(settings, provider)  # type: ignore[arg-type]
    assert s.repo == f"bottle-agent-{provider}"
    assert set(s.files) == {"host-ca.pem"}
    assert s.dockerfile == dockerfile_text(f"agent-{provider}.Dockerfile")
    assert s.build_args == {}


@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_extra_ca_reaches_the_agent_build_but_not_its_tag(
    settings: Settings, tmp_path: Path, provider: str
) -> None:
    extra = tmp_path / "extra.pem"
    extra.write_bytes(b"EXTRA\n")
    with_extra = Settings(
        home=settings.home, system_ca_bundle=settings.system_ca_bundle, extra_ca_certs=extra
    )
    plain, other = agent_image(settings, provider), agent_image(with_extra, provider)  # type: ignore[arg-type]
    assert other.files["host-ca.pem"].endswith(b"EXTRA\n")  # the build trusts it
    assert other.tag == plain.tag  # a new CA rebuilds no agent image
    assert other.dockerfile.rstrip().endswith('CMD ["sleep", "infinity"]')
    # Any other input still makes a new tag.
    assert agent_image(Settings(home=settings.home, base_image="debian:x"), provider).tag != (  # type: ignore[arg-type]
        plain.tag
    )


def test_untagged_files_keep_their_name_in_the_tag() -> None:
    base = images.ImageSpec("r", "d", {"a": b"1"}, {}, "b", untagged=frozenset({"a"}))
    same = images.ImageSpec("r", "d", {"a": b"2"}, {}, "b", untagged=frozenset({"a"}))
    assert base.tag == same.tag
    assert images.ImageSpec("r", "d", {"c": b"1"}, {}, "b", untagged=frozenset({"c"})).tag != (
        base.tag
    )
    assert images.ImageSpec("r", "d", {"a": b"1"}, {}, "b").tag != base.tag
    with pytest.raises(ValueError, match="untagged names files not in the context"):
        images.ImageSpec("r", "d", {}, {}, "b", untagged=frozenset({"x"}))


def test_agent_images_differ_between_providers(settings: Settings) -> None:
    tags = {agent_image(settings, p).tag for p in PROVIDERS}
    assert len(tags) == len(PROVIDERS)


def test_unknown_provider_is_a_bottle_error(settings: Settings) -> None:
    with pytest.raises(BottleError, match="unknown agent provider 'vim'"):
        agent_image(settings, "vim")  # type: ignore[arg-type]


# --- custom agent images ----------------------------------------------------------------

CUSTOM = "ARG BOTTLE_AGENT_IMAGE\nFROM ${BOTTLE_AGENT_IMAGE}\nCOPY run.sh /usr/local/bin/\n"


@pytest.fixture
def custom_dir(tmp_path: Path) -> Path:
    d = tmp_path / "agent"
    (d / "sub").mkdir(parents=True)
    (d / "Dockerfile").write_text(CUSTOM)
    (d / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (d / "run.sh").chmod(0o755)
    (d / "sub" / "data.txt").write_bytes(b"data")
    (d / ".git" / "objects").mkdir(parents=True)
    (d / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    return d


def test_custom_image_builds_on_its_parent(settings: Settings, custom_dir: Path) -> None:
    parent = agent_image(settings, "claude")
    s = custom_agent_image(settings, custom_dir / "Dockerfile", parent)
    assert s.repo == "bottle-agent-custom"
    assert s.dockerfile == CUSTOM
    assert s.build_args == {"BOTTLE_AGENT_IMAGE": parent.ref}
    assert s.base == settings.base_image
    assert set(s.files) == {"Dockerfile", "run.sh", "sub/data.txt"}
    assert s.files["sub/data.txt"] == b"data"
    assert s.executable == {"run.sh"}


def test_custom_tag_follows_parent_and_files(settings: Settings, custom_dir: Path) -> None:
    dockerfile = custom_dir / "Dockerfile"
    claude = custom_agent_image(settings, dockerfile, agent_image(settings, "claude"))
    shell = custom_agent_image(settings, dockerfile, agent_image(settings, "shell"))
    assert claude.tag != shell.tag
    assert custom_agent_image(settings, dockerfile, agent_image(settings, "claude")) == claude
    (custom_dir / "sub" / "data.txt").write_bytes(b"changed")
    assert custom_agent_image(settings, dockerfile, agent_image(settings, "claude")) != claude


def test_custom_dockerfile_must_use_the_agent_base(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM debian:trixie\nRUN true\n")
    with pytest.raises(BottleError, match="BOTTLE_AGENT_IMAGE") as info:
        custom_agent_image(settings, tmp_path / "Dockerfile", agent_image(settings, "shell"))
    assert str(tmp_path / "Dockerfile") in info.value.message
    assert info.value.hint and "ARG BOTTLE_AGENT_IMAGE" in info.value.hint


def test_custom_dockerfile_may_have_a_builder_stage(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "ARG BOTTLE_AGENT_IMAGE\nFROM golang:1 AS build\nRUN true\n"
        "FROM ${BOTTLE_AGENT_IMAGE}\nCOPY --from=build /x /x\n"
    )
    custom_agent_image(settings, tmp_path / "Dockerfile", agent_image(settings, "shell"))


def test_missing_custom_dockerfile_is_a_bottle_error(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(BottleError, match="cannot read the agent's Dockerfile"):
        custom_agent_image(settings, tmp_path / "nope", agent_image(settings, "shell"))


def test_custom_context_size_is_capped(
    settings: Settings, custom_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "CUSTOM_CONTEXT_LIMIT", 1024 * 1024)
    (custom_dir / "big.bin").write_bytes(b"\0" * (1024 * 1024 + 1))
    with pytest.raises(BottleError, match="more than 1 MiB") as info:
        custom_agent_image(settings, custom_dir / "Dockerfile", agent_image(settings, "shell"))
    assert str(custom_dir) in info.value.message
    assert info.value.hint and "directory of its own" in info.value.hint


# --- the engine's pure parts ------------------------------------------------------------


def test_base_ref_is_a_hash_of_the_recipe(settings: Settings) -> None:
    ref = base_recipe_ref(settings)
    assert re.fullmatch(r"bottle-base:trixie-[0-9a-f]{12}", ref)
    assert base_recipe_ref(settings) == ref
    mirror = Settings(home=settings.home, debian_mirror="http://mirror.example/debian")
    assert base_recipe_ref(mirror) != ref


def test_a_new_base_recipe_rebuilds_every_image_built_on_the_base(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Tags once named only the base setting: images made on an older recipe's base were
    # reused forever on a machine that had built them.
    custom_dir = tmp_path / "custom"
    custom_dir.mkdir()
    (custom_dir / "Dockerfile").write_text(CUSTOM)

    def refs() -> list[str]:
        shell = agent_image(settings, "shell")
        custom = custom_agent_image(settings, custom_dir / "Dockerfile", shell)
        return [sidecar_image(settings).ref, shell.ref, custom.ref]

    before = refs()
    monkeypatch.setattr(base, "DPKG_OPTS", (*base.DPKG_OPTS, "path-exclude=/srv/*"))
    after = refs()
    assert all(old != new for old, new in zip(before, after, strict=True))


def test_stream_shows_steps_keeps_every_line_and_remembers_the_last_step() -> None:
    script = (
        "print('Step 1/2 : FROM x'); print('\\x1b[0mhello'); "
        "print('Step 2/2 : RUN false'); raise SystemExit(3)"
    )
    seen: list[str] = []
    code, tail, step = _stream([sys.executable, "-c", script], seen.append)
    assert code == 3
    assert seen == ["Step 1/2 : FROM x", "Step 2/2 : RUN false"]
    assert tail == ["Step 1/2 : FROM x", "hello", "Step 2/2 : RUN false"]
    assert step == "Step 2/2 : RUN false"


def test_stream_keeps_only_the_last_lines() -> None:
    code, tail, step = _stream(
        [sys.executable, "-c", "for i in range(100): print(i)"], lambda _: None
    )
    assert code == 0
    assert tail == [str(i) for i in range(60, 100)]
    assert step is None


def test_custom_dockerfile_gets_the_arg_declared_when_it_lacks_it(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text("# escape=`\nFROM ${BOTTLE_AGENT_IMAGE}\nRUN true\n")
    s = custom_agent_image(settings, tmp_path / "Dockerfile", agent_image(settings, "shell"))
    # after the parser directive, which only counts on the first lines
    assert (
        s.dockerfile == "# escape=`\nARG BOTTLE_AGENT_IMAGE\nFROM ${BOTTLE_AGENT_IMAGE}\nRUN true\n"
    )


def test_a_context_file_with_a_bad_name_is_a_message_not_a_crash(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "Dockerfile").write_text("FROM ${BOTTLE_AGENT_IMAGE}\n")
    (tmp_path / os.fsdecode(b"caf\xe9.txt")).write_text("latin-1 name")
    with pytest.raises(BottleError, match="not UTF-8") as info:
        custom_agent_image(settings, tmp_path / "Dockerfile", agent_image(settings, "shell"))
    assert info.value.hint and "directory of its own" in info.value.hint


def test_the_import_cache_gives_the_walk_of_the_sources(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, walked_copy: tuple[Path, dict[str, bytes]]
) -> None:
    from bottle.images import sources

    copy = _copy_package(tmp_path)
    cache = tmp_path / "home" / "cache" / "imports.json"
    fresh = walked_copy[1]  # the walk of the same files, before this copy is edited
    assert runtime_sources(copy, cache=cache) == fresh  # written on the way
    with monkeypatch.context() as patch:
        patch.setattr(sources, "_imports_in", lambda *_a: pytest.fail("parsed again"))
        assert runtime_sources(copy, cache=cache) == fresh  # and read back, unparsed
    # An edited file is walked again: its new import is followed, through the cache.
    guards = copy / "runtime" / "egress" / "guards.py"
    guards.write_text(guards.read_text() + "\nimport bottle.capability\n")
    assert "bottle/capability.py" in runtime_sources(copy, cache=cache)
    assert runtime_sources(copy, cache=cache) == runtime_sources(copy)


@pytest.mark.parametrize(
    "spoiled",
    [
        "{half",
        '{"version": 2, "imports": {}}',
        '{"version": 1, "imports": []}',
        # An entry that names a module outside bottle spoils the whole file.
        '{"version": 1, "imports": {"bottle.runtime:x": ["os"]}}',
    ],
)
def test_a_spoiled_import_cache_is_ignored(
    tmp_path: Path, spoiled: str, walked_copy: tuple[Path, dict[str, bytes]]
) -> None:
    copy, walked = walked_copy
    cache = tmp_path / "imports.json"
    cache.write_text(spoiled)
    assert runtime_sources(copy, cache=cache) == walked
    assert json.loads(cache.read_text())["version"] == 1  # rewritten whole


def test_an_unwritable_import_cache_only_costs_the_parse(
    tmp_path: Path, walked_copy: tuple[Path, dict[str, bytes]]
) -> None:
    copy, walked = walked_copy
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert runtime_sources(copy, cache=blocker / "imports.json") == walked


def test_imports_are_found_wherever_a_statement_may_stand() -> None:
    from bottle.images import sources

    source = b"""
import bottle.a
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    import bottle.never
    if True:
        import bottle.never_nested
else:
    import bottle.b
def f():
    import bottle.c
    class C:
        import bottle.d
        async def g(self):
            async with x:
                from bottle import e
            async for _ in y:
                import bottle.f
try:
    import bottle.g
except ImportError:
    import bottle.h
else:
    import bottle.i
finally:
    import bottle.j
try:
    pass
except* OSError:
    import bottle.k
while x:
    pass
else:
    import bottle.l
for _ in y:
    with z:
        from . import m
match x:
    case 1:
        import bottle.n
    case _:
        from .o import p
lambda: __import__("bottle.by_name")  # no statement: not an import bottle follows
"""
    found = sources._imports_in("bottle.pkg", source)
    assert found == {
        *(f"bottle.{name}" for name in "abcdfghijkln"),
        "bottle",  # `from bottle import e`, `from . import m` name their package too
        "bottle.e",
        "bottle.pkg",
        "bottle.pkg.m",
        "bottle.pkg.o",
        "bottle.pkg.o.p",
    }


def test_a_runtime_module_that_does_not_parse_is_named(tmp_path: Path) -> None:
    from bottle.images import sources

    copy = tmp_path / "bottle"
    (copy / "runtime").mkdir(parents=True)
    (copy / "__init__.py").write_text("")
    (copy / "runtime" / "__init__.py").write_text("")
    broken = copy / "runtime" / "broken.py"
    broken.write_text("import bottle.x\ndef (:\n")
    with pytest.raises(SyntaxError) as caught:
        sources.runtime_sources(copy)
    assert caught.value.filename == str(broken)
