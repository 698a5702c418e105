"""What goes into bottle's images: Dockerfiles and build contexts, as plain data.

Nothing here runs Docker; :mod:`bottle.engine.images` builds an :class:`ImageSpec`.

An image's tag is a hash of everything that goes into it (Dockerfile text, context files,
build arguments, base setting), so an unchanged image is never rebuilt and a changed input
always gets a new tag.

Every built-in Dockerfile starts with ``ARG BASE=python:3.13-slim`` / ``FROM ${BASE}``; the
builder passes the base it chose (a pulled image, or one made locally from a Debian mirror).
A custom agent Dockerfile starts from the provider image instead, named by the same
build argument a capability Dockerfile uses (``ARG BOTTLE_AGENT_IMAGE`` is added when the
file does not declare it)::

    FROM ${BOTTLE_AGENT_IMAGE}
    RUN apt-get update && apt-get install -y --no-install-recommends ripgrep

Build steps that fetch over HTTPS can trust the host's CA bundle, which every agent image
keeps at ``/etc/bottle/host-ca.pem`` (``NODE_EXTRA_CA_CERTS=/etc/bottle/host-ca.pem npm …``);
at run time the agent's system store holds only its bottle's CA.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import get_args

import bottle
from bottle.dockerfiles import (
    AGENT_IMAGE_ARG,
    buildable_dockerfile,
    check_custom_agent_dockerfile,
)
from bottle.errors import Refused
from bottle.images.base import made_base_ref
from bottle.images.sources import runtime_sources
from bottle.manifest.models import ProviderKind
from bottle.settings import Settings

__all__ = [
    "CUSTOM_CONTEXT_LIMIT",
    "PROVIDERS",
    "ImageSpec",
    "Provider",
    "agent_image",
    "custom_agent_image",
    "dockerfile_text",
    "plan_images",
    "sidecar_image",
]

Provider = ProviderKind
#: The providers with an image of their own; ``command`` builds on ``shell``'s.
PROVIDERS: tuple[Provider, ...] = tuple(p for p in get_args(ProviderKind) if p != "command")

#: The most a custom agent Dockerfile's directory may hold (the build context).
CUSTOM_CONTEXT_LIMIT = 64 * 1024 * 1024

_HOST_CA = "host-ca.pem"
#: Under BOTTLE_HOME: what each sidecar source imports, by digest (bottle.images.sources).
SOURCES_CACHE = "cache/sidecar-imports.json"
#: Exported from uv.lock (``uv export --frozen --only-group sidecar --no-emit-project``).
_REQUIREMENTS = "sidecar-requirements.txt"


@dataclass(frozen=True)
class ImageSpec:
    """One image to build: its Dockerfile, its context, its arguments and its base setting.

    ``files`` maps relative POSIX paths of the build context to their bytes; paths listed in
    ``executable`` are written with mode 0755 (the rest 0644). ``base`` is the base *setting*
    (``Settings.base_image``); the builder may substitute a locally made base for it.
    ``untagged`` names files whose bytes the tag leaves out (their names stay in): the CA
    bundle an agent image's build steps trust to reach their registries, which decides how
    the build fetches, not what it installs, and which nothing in the agent reads at run time.
    """

    repo: str
    dockerfile: str
    files: Mapping[str, bytes]
    build_args: Mapping[str, str]
    base: str
    executable: frozenset[str] = field(default_factory=frozenset)
    untagged: frozenset[str] = field(default_factory=frozenset)
    #: The ref of the base bottle would make for ``base`` (``bottle.images.base``), in the tag
    #: whether or not the base gets made: a changed recipe then rebuilds what was built on the
    #: old one, at the cost of one rebuild where the base is pulled instead.
    made_base: str = ""

    def __post_init__(self) -> None:
        for name in self.files:
            _check_context_path(name)
        for what, names in (("executable", self.executable), ("untagged", self.untagged)):
            unknown = names - set(self.files)
            if unknown:
                raise ValueError(f"{what} names files not in the context: {sorted(unknown)}")
        # Read-only views, so a spec cannot change after its tag was taken.
        object.__setattr__(self, "files", MappingProxyType(dict(self.files)))
        object.__setattr__(self, "build_args", MappingProxyType(dict(self.build_args)))

    def __hash__(self) -> int:
        return hash(self.ref)

    @functools.cached_property
    def tag(self) -> str:
        """First 12 hex digits of a sha256 over every input of the image.

        Taken once: a spec cannot change (frozen, read-only views), and its ref (hence this
        hash of the whole build context) is asked for many times a plan, by ``hash()`` too.
        """
        h = hashlib.sha256()

        def put(data: bytes | str) -> None:
            raw = data.encode() if isinstance(data, str) else data
            h.update(len(raw).to_bytes(8, "big"))
            h.update(raw)

        put("bottle-image-v1")
        put(self.dockerfile)
        put(str(len(self.files)))
        for name in sorted(self.files):
            put(name)
            put(b"untagged" if name in self.untagged else self.files[name])
            put(("x" if name in self.executable else "-") + ("u" if name in self.untagged else ""))
        put(str(len(self.build_args)))
        for key in sorted(self.build_args):
            put(key)
            put(self.build_args[key])
        put(self.base)
        put(self.made_base)
        return h.hexdigest()[:12]

    @property
    def ref(self) -> str:
        return f"{self.repo}:{self.tag}"


_NOT_NAMES = frozenset({"", ".", ".."})


def _check_context_path(name: str) -> None:
    if name and all(part not in _NOT_NAMES for part in name.split("/")):
        # Nothing PurePosixPath would change or refuse (nearly every name: sixty of them
        # each time a plan builds the sidecar's spec); a path object judges the others.
        return
    p = PurePosixPath(name)
    if not name or p.is_absolute() or ".." in p.parts or name != p.as_posix():
        raise ValueError(f"not a relative POSIX path inside a build context: {name!r}")


@functools.cache
def dockerfile_text(name: str) -> str:
    """The text of a built-in Dockerfile shipped beside this module (``sidecar.Dockerfile``).

    Read once a process: it is part of the installed package, as the code that reads it is,
    and every plan asks for two or three of them.
    """
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8")


def sidecar_image(settings: Settings) -> ImageSpec:
    """The one image every sidecar runs: mitmproxy, MCP, git, and the ``bottle`` modules of
    :func:`~bottle.images.sources.runtime_sources`, with the Python packages of ``uv.lock``'s
    ``sidecar`` group at their locked versions (``sidecar-requirements.txt``, hashes checked)."""
    files = {
        _HOST_CA: settings.host_ca_pem(),
        _REQUIREMENTS: dockerfile_text(_REQUIREMENTS).encode(),
        **runtime_sources(Path(bottle.__file__).parent, cache=settings.home / SOURCES_CACHE),
    }
    return ImageSpec(
        repo="bottle-sidecar",
        dockerfile=dockerfile_text("sidecar.Dockerfile"),
        files=files,
        build_args={},
        base=settings.base_image,
        made_base=made_base_ref(settings.debian_mirror),
    )


def agent_image(settings: Settings, provider: Provider) -> ImageSpec:
    """The agent image of a built-in provider (``shell``, ``claude`` or ``codex``)."""
    if provider not in PROVIDERS:
        raise Refused(
            f"unknown agent provider {provider!r}",
            hint=f"Use one of: {', '.join(PROVIDERS)}.",
        )
    # The host's CA bundle (BOTTLE_EXTRA_CA_CERTS included) lets npm reach its registry;
    # out of the tag, so a new extra CA (a test's, a proxy's) does not rebuild minutes of
    # npm. At run time the agent trusts only its bottle's CA (the Dockerfile's last step).
    return ImageSpec(
        repo=f"bottle-agent-{provider}",
        dockerfile=dockerfile_text(f"agent-{provider}.Dockerfile"),
        files={_HOST_CA: settings.host_ca_pem()},
        build_args={},
        base=settings.base_image,
        made_base=made_base_ref(settings.debian_mirror),
        untagged=frozenset({_HOST_CA}),
    )


def custom_agent_image(settings: Settings, dockerfile_path: Path, parent: ImageSpec) -> ImageSpec:
    """An agent image built by the user's Dockerfile on top of ``parent`` (a provider image).

    The context is the Dockerfile's directory (``.git`` skipped), at most
    :data:`CUSTOM_CONTEXT_LIMIT` bytes; the build gets ``BOTTLE_AGENT_IMAGE=<parent.ref>``,
    declared for the Dockerfile when it does not declare it itself.
    """
    path = Path(dockerfile_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise Refused(
            f"{path}: cannot read the agent's Dockerfile: {reason}",
            hint="Point the agent's dockerfile field at a readable Dockerfile.",
        ) from exc
    try:
        check_custom_agent_dockerfile(text)
    except ValueError as exc:
        raise Refused(
            f"{path}: a custom agent Dockerfile must build on the provider image, but {exc}",
            hint=f"Start the Dockerfile (or its last stage) with 'FROM ${{{AGENT_IMAGE_ARG}}}' "
            f"('ARG {AGENT_IMAGE_ARG}' before it is added when missing).",
        ) from None
    files, executable = _read_context(path.parent)
    return ImageSpec(
        repo="bottle-agent-custom",
        dockerfile=buildable_dockerfile(text),
        files=files,
        build_args={AGENT_IMAGE_ARG: parent.ref},
        base=settings.base_image,
        made_base=made_base_ref(settings.debian_mirror),
        executable=frozenset(executable),
    )


def _read_context(directory: Path) -> tuple[dict[str, bytes], set[str]]:
    files: dict[str, bytes] = {}
    executable: set[str] = set()
    total = 0
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames[:] = sorted(d for d in dirnames if d != ".git")
        for fname in sorted(filenames):
            path = Path(dirpath) / fname
            if not path.is_file():  # sockets, fifos, dangling links
                continue
            total += path.stat().st_size
            if total > CUSTOM_CONTEXT_LIMIT:
                raise Refused(
                    f"{directory}: the custom agent Dockerfile's directory holds more than "
                    f"{CUSTOM_CONTEXT_LIMIT // (1024 * 1024)} MiB, too much for a build context",
                    hint="Move the Dockerfile into a directory of its own that holds only "
                    "the files the image needs.",
                )
            rel = path.relative_to(directory).as_posix()
            try:
                rel.encode("utf-8")
                files[rel] = path.read_bytes()
            except UnicodeEncodeError:
                raise _context_error(directory, f"the file name {rel!r} is not UTF-8") from None
            except OSError as exc:
                raise _context_error(directory, f"{rel}: {exc.strerror}") from exc
            if os.access(path, os.X_OK):
                executable.add(rel)
    return files, executable


def _context_error(directory: Path, problem: str) -> Refused:
    return Refused(
        f"{directory}: cannot use the custom agent Dockerfile's directory as a build context: "
        f"{problem}",
        hint="Move the Dockerfile into a directory of its own that holds only readable files "
        "the image needs.",
    )


def plan_images(
    settings: Settings, provider: Provider, dockerfile: Path | None = None
) -> list[ImageSpec]:
    """The images one bottle runs, parents first: sidecar, provider agent, custom agent.

    The last one is the agent's image.
    """
    parent = agent_image(settings, "shell" if provider == "command" else provider)
    specs = [sidecar_image(settings), parent]
    if dockerfile is not None:
        specs.append(custom_agent_image(settings, dockerfile, parent))
    return specs
