"""The capability-block apply flow: a new agent image, and the agent container alone replaced.

What happens, in order: the Dockerfile is checked again against the image the agent runs
now, built on it (``FROM ${BOTTLE_AGENT_IMAGE}``) on the bottle's own internal network with
egress as its proxy (so its RUN steps reach only the bottle's routes, and every request is in
the egress log; or on no network at all, ``offline``), the transcript is snapshotted, the
Dockerfile is kept in ``capabilities/``, ``docker-compose.yml`` is rendered again from
``plan.json`` with the new agent image, and compose recreates the agent service without
touching its dependencies. Sidecars, networks, routes and state stay, and so does the
agent's home (``state/<slug>/home/`` is bound at ``/home/agent``). If the new container
does not come up, the old compose file is put back and the old image started again.

The agent's processes die with its container. ``metadata.replacing`` says a replacement is
under way and ``agent_restarts`` counts them, so the session attached to the agent
(:mod:`bottle.session`) waits for the new container and continues the conversation there
with the provider's resume command, telling it what was installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from bottle import layout, safefs
from bottle.dockerfiles import (
    AGENT_IMAGE_ARG,
    BUILD_CA_NAME,
    check_capability_dockerfile,
    with_build_trust,
)
from bottle.errors import ApplyError, ApplyFailed, BottleError, ImageBuildError
from bottle.files import atomic_write, now
from bottle.instance import Instance
from bottle.settings import Settings

Progress = Callable[[str], None]

#: The repository of images built from approved capability Dockerfiles.
CAPABILITY_REPO = "bottle-agent-capability"
#: How long the recreated agent may take to come up.
RECREATE_TIMEOUT = 60
#: How many lines of a failed build's output the operator is shown.
BUILD_TAIL_LINES = 12

_COMPOSE_REF_RE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


def replace_agent_image(
    instance: Instance,
    dockerfile: str,
    *,
    settings: Settings,
    progress: Progress | None = None,
    offline: bool = False,
) -> str:
    """Build ``dockerfile`` on the agent's image and recreate the agent container alone.

    The build's RUN steps go out through the bottle's egress (see :func:`build_network`);
    ``offline`` builds with no network at all instead. Returns the new image reference.
    Raises :class:`ApplyError` (the build's last lines in its message) when the Dockerfile
    is refused or the build fails; nothing has changed then.
    """
    from bottle.compose import dump_yaml, render
    from bottle.images import ImageSpec

    say = progress or (lambda _line: None)
    metadata = instance.metadata
    current = metadata.images["agent"]
    try:
        # Filed against the image of its day; the agent may have been replaced since.
        check_capability_dockerfile(dockerfile, base_ref=current)
    except ValueError as exc:
        raise ApplyError(
            f"the Dockerfile is refused against the agent's current image: {exc}",
            hint=f"Edit it (bottle approve --edit; FROM ${{{AGENT_IMAGE_ARG}}} always names "
            "the current image) or reject the proposal.",
        ) from None
    # Read now: after a minutes-long build is a bad time to learn the agent is gone.
    env = _agent_values(instance)
    plan = instance.state.read_plan()
    dockerfile = with_build_trust(dockerfile)
    spec = ImageSpec(
        repo=CAPABILITY_REPO,
        dockerfile=dockerfile,
        files={BUILD_CA_NAME: _bottle_ca(instance)},
        build_args={AGENT_IMAGE_ARG: current},
        base=current,
    )
    network, proxy = ("none", {}) if offline else build_network(instance)
    say(f"building on network {network}" + (" through egress" if proxy else " (offline)"))
    try:
        ref = instance.engine.ensure_image(
            spec, settings=settings, progress=say, network=network, proxy_args=proxy
        )
    except ImageBuildError as exc:
        tail = "\n".join(exc.stderr.splitlines()[-BUILD_TAIL_LINES:])
        raise ApplyError(
            f"{exc.message}; the last lines of the build:\n{tail}",
            hint="Edit the Dockerfile (bottle approve --edit) or reject the proposal.",
        ) from exc

    snapshot = snapshot_transcript(instance, say)
    say(f"transcript saved in {snapshot}")
    old_compose = instance.state.compose_file.read_text()
    plan = replace(plan, images=replace(plan.images, agent=ref))
    atomic_write(instance.state.compose_file, dump_yaml(render(plan)))
    say(f"recreating the agent on {ref}")
    # Before its processes die: the session attached to it waits for the new container
    # instead of ending, then continues the conversation there (bottle.session).
    _mark(instance, replacing=ref)
    try:
        instance.compose.up_service("agent", env=env, wait_timeout=RECREATE_TIMEOUT)
    except BaseException as exc:
        atomic_write(instance.state.compose_file, old_compose)
        restarted = _restart_old_agent(instance, env)
        _mark(instance, replacing=None, restarted=restarted)
        if not isinstance(exc, BottleError):
            raise
        now_runs = (
            f"The agent runs its previous image {current} again."
            if restarted
            else "The agent could not be restarted on its previous image either; "
            "see 'bottle logs' and 'bottle ls'."
        )
        raise ApplyFailed(
            f"the agent did not come up on {ref}: {exc.message}", hint=now_runs
        ) from exc
    atomic_write(instance.state.path / "capabilities" / f"{spec.tag}.Dockerfile", dockerfile)
    instance.state.write_plan(plan)
    _mark(instance, replacing=None, restarted=True, images={**metadata.images, "agent": ref})
    # supervise reads it at each request: its checks and answers name the image in force.
    atomic_write(instance.state.proposals / layout.AGENT_IMAGE_FILE, ref + "\n")
    return ref


def _mark(
    instance: Instance,
    *,
    replacing: str | None,
    restarted: bool = False,
    images: Mapping[str, str] | None = None,
) -> None:
    """Say in the metadata that the agent is being replaced, or was (``agent_restarts``)."""
    current = instance.metadata
    update: dict[str, Any] = {"replacing": replacing}
    if restarted:
        update["agent_restarts"] = current.agent_restarts + 1
    if images is not None:
        update["images"] = dict(images)
    instance.state.write_metadata(current.model_copy(update=update))


def build_network(instance: Instance) -> tuple[str, dict[str, str]]:
    """The network a capability build joins, and the proxy build args that send it to egress.

    The bottle's ``internal`` network has no route out but egress, so a RUN step reaches
    what the bottle's routes allow and nothing else directly. Only the classic builder can
    join a named network (BuildKit takes default, host or none), which is why the engine
    builds with ``DOCKER_BUILDKIT=0``. Docker passes the predefined proxy args to RUN steps
    without keeping them in the image.
    """
    from bottle.sidecars.egress import EGRESS

    # By address, not by name: a build step resolving ``egress`` through Docker's embedded
    # DNS timed out now and then on a loaded engine, failing the build for no reason of its own.
    address = instance.compose.address(EGRESS.name, "internal")
    proxy = f"http://{address}:{layout.EGRESS_PORT}"
    args = {name: proxy for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    args |= {"NO_PROXY": "localhost,127.0.0.1", "no_proxy": "localhost,127.0.0.1"}
    return f"{instance.metadata.compose_project}_internal", args


def _bottle_ca(instance: Instance) -> bytes:
    """The instance's CA certificate: what egress signs intercepted TLS with."""
    path = instance.state.path / "ca" / layout.CA_CERT
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ApplyError(
            f"cannot read the bottle CA {path}: {exc.strerror}",
            hint="Egress writes it at start; is the instance running? See 'bottle ls'.",
        ) from None


#: The most a transcript snapshot copies: the agent writes that directory, and a sparse
#: file costs it nothing while the host would write it out whole at every approval.
SNAPSHOT_MAX_BYTES = 512 << 20


def snapshot_transcript(instance: Instance, say: Progress) -> Path:
    """Copy ``transcript/`` to ``snapshots/transcript-<time>/`` before the agent is replaced.

    The agent writes that directory, so it may hold what cannot be copied (a FIFO, a file
    it made unreadable): those are skipped and named, and the replacement goes on, since
    the transcript itself stays in place either way.
    """
    stamp = now().strftime("%Y%m%dT%H%M%S.%fZ")
    target = instance.state.path / "snapshots" / f"transcript-{stamp}"
    target.parent.mkdir(exist_ok=True)
    skipped: list[str] = []
    try:
        # Links are copied as links and never followed; only regular files are opened.
        skipped = safefs.copy_tree(
            instance.state.transcript,
            target,
            root=instance.state.path,
            max_bytes=SNAPSHOT_MAX_BYTES,
        )
    except OSError as exc:
        say(f"snapshot incomplete: {exc}")
    if skipped:
        say(f"snapshot incomplete: {len(skipped)} file(s) not copied: {', '.join(skipped[:5])}")
    return target


def _agent_values(instance: Instance) -> dict[str, str]:
    """The values compose interpolated into the agent at start, read back from its container.

    Host variables and ``?question`` answers reach compose only through its process
    environment and are never written down; recreating the agent needs them again.
    """
    spec = _load(instance.state.compose_file.read_text())
    declared: Mapping[str, Any] = spec["services"]["agent"].get("environment") or {}
    running = instance.compose.service_env("agent")
    values = {}
    for name, value in declared.items():
        match = _COMPOSE_REF_RE.match(str(value))
        if match and name in running:
            values[match.group(1)] = running[name]
    return values


def _restart_old_agent(instance: Instance, env: Mapping[str, str]) -> bool:
    """Bring the agent back on the image the restored compose file names; did it work?"""
    try:
        instance.compose.up_service("agent", env=env, wait_timeout=RECREATE_TIMEOUT)
    except BottleError:
        return False
    return True


def _load(text: str) -> dict[str, Any]:
    from ruamel.yaml import YAML

    data: dict[str, Any] = YAML(typ="safe", pure=True).load(text)
    return data
