"""The capability-block apply flow: a new agent image, and the agent container alone replaced.

What happens, in order: the Dockerfile is checked again against the image the agent runs
now, built on it (``FROM ${BOTTLE_AGENT_IMAGE}``), the transcript is snapshotted, the
Dockerfile is kept in ``capabilities/``, ``docker-compose.yml`` is rewritten to name the new
image, and compose recreates the agent service without touching its dependencies. Sidecars,
networks, routes and state stay. If the new container does not come up, the old compose
file is put back and the old image started again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bottle import safefs
from bottle.dockerfiles import AGENT_IMAGE_ARG, buildable_dockerfile
from bottle.errors import ApplyError, BottleError, ImageBuildError
from bottle.instance import Instance
from bottle.proposals import check_dockerfile
from bottle.settings import Settings
from bottle.state import atomic_write, now

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
    settings: Settings | None = None,
    progress: Progress | None = None,
) -> str:
    """Build ``dockerfile`` on the agent's image and recreate the agent container alone.

    Returns the new image reference. Raises :class:`ApplyError` (the build's last lines in
    its message) when the Dockerfile is refused or the build fails; nothing has changed then.
    """
    from bottle.engine.images import ensure_image
    from bottle.images import ImageSpec

    say = progress or (lambda _line: None)
    settings = settings or Settings.from_env()
    metadata = instance.metadata
    current = metadata.images["agent"]
    try:
        # Filed against the image of its day; the agent may have been replaced since.
        check_dockerfile(dockerfile, base_ref=current)
    except ValueError as exc:
        raise ApplyError(
            f"the Dockerfile does not build on the agent's current image: {exc}",
            hint=f"Edit it to start with FROM ${{{AGENT_IMAGE_ARG}}}.",
        ) from None
    # Read now: after a minutes-long build is a bad time to learn the agent is gone.
    env = _agent_values(instance)
    dockerfile = buildable_dockerfile(dockerfile)
    spec = ImageSpec(
        repo=CAPABILITY_REPO,
        dockerfile=dockerfile,
        files={},
        build_args={AGENT_IMAGE_ARG: current},
        base=current,
    )
    try:
        ref = ensure_image(spec, settings=settings, progress=say)
    except ImageBuildError as exc:
        tail = "\n".join(exc.stderr.splitlines()[-BUILD_TAIL_LINES:])
        raise ApplyError(
            f"{exc.message}; the last lines of the build:\n{tail}",
            hint="Edit the Dockerfile (bottle approve --edit) or reject the proposal.",
        ) from exc

    snapshot = snapshot_transcript(instance, say)
    say(f"transcript saved in {snapshot}")
    old_compose = instance.state.compose_file.read_text()
    _write_agent_image(instance.state.compose_file, old_compose, ref)
    say(f"recreating the agent on {ref}")
    try:
        instance.compose.up_service("agent", env=env, wait_timeout=RECREATE_TIMEOUT)
    except BaseException as exc:
        atomic_write(instance.state.compose_file, old_compose)
        restarted = _restart_old_agent(instance, env)
        if not isinstance(exc, BottleError):
            raise
        now_runs = (
            f"The agent runs its previous image {current} again."
            if restarted
            else "The agent could not be restarted on its previous image either; "
            "see 'bottle logs' and 'bottle ls'."
        )
        raise ApplyError(
            f"the agent did not come up on {ref}: {exc.message}", hint=now_runs
        ) from exc
    atomic_write(instance.state.path / "capabilities" / f"{spec.tag}.Dockerfile", dockerfile)
    instance.state.write_metadata(
        instance.metadata.model_copy(update={"images": {**metadata.images, "agent": ref}})
    )
    return ref


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
        skipped = safefs.copy_tree(instance.state.transcript, target, root=instance.state.path)
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


def _write_agent_image(compose_file: Path, text: str, ref: str) -> None:
    from bottle.compose import dump_yaml

    spec = _load(text)
    spec["services"]["agent"]["image"] = ref
    atomic_write(compose_file, dump_yaml(spec))


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
