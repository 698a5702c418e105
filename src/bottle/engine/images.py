"""Building and finding bottle's images, and making the base image when none can be pulled.

:func:`ensure_image` turns an :class:`~bottle.images.ImageSpec` into a local image whose tag is
the hash of its inputs: an image that exists is used as it is, never rebuilt. Builds use the
legacy builder (``docker build``, which prints ``Step N/M : …`` lines) and stream them to a
``progress`` callback; one that is a :class:`~bottle.engine.progress.BuildProgress` follows
every step and line with the time spent.

:func:`ensure_base` picks the image every Dockerfile starts from: ``Settings.base_image`` when
it is local or can be pulled, else ``bottle-base:trixie-<hash>`` made with ``mmdebstrap`` from
a Debian mirror and ``docker import`` (machines without a registry).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from bottle.dockerfiles import declares_arg
from bottle.engine.errors import docker_cli, docker_errors, failure, raise_if_no_daemon
from bottle.engine.progress import STEP, BuildProgress, BuildTracker
from bottle.errors import Failed, ImageBuildError
from bottle.images import ImageSpec
from bottle.images.base import (
    BASE_CHANGES,
    BASE_REPO,
    DPKG_OPTS,
    INCLUDE,
    SUITE,
    VARIANT,
    made_base_ref,
)
from bottle.settings import Settings, package_version

__all__ = [
    "BASE_REPO",
    "Progress",
    "base_recipe_ref",
    "ensure_base",
    "ensure_image",
    "image_exists",
]

Progress = Callable[[str], None]

#: Base images whose pull failed in this process: not tried again for the next image.
_UNPULLABLE: set[str] = set()

#: Lines of build output an ImageBuildError keeps.
_TAIL = 40
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def image_exists(ref: str) -> bool:
    """Whether an image ``ref`` is in the local image store (never pulls).

    One ``docker image inspect``, as python-on-whales' ``exists`` runs it: every start asks
    this of each image, and importing python-on-whales first cost more than the call.
    """
    argv = [docker_cli(), "image", "inspect", "--format", "{{.Id}}", ref]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return True
    if "no such image" in done.stderr.lower():
        return False
    raise failure(argv, done.stderr, done.returncode, f"looking for image {ref}")


def ensure_image(
    spec: ImageSpec,
    *,
    settings: Settings,
    progress: Progress,
    network: str | None = None,
    proxy_args: Mapping[str, str] | None = None,
) -> str:
    """The local ref of ``spec``'s image, built first if it does not exist yet.

    An existing image is returned at once (``progress`` is not called). Otherwise the base is
    made sure of (:func:`ensure_base`) and ``docker build`` runs, each output line going to
    ``progress``. ``network`` is the network its RUN steps join (``none``, or a named one:
    the legacy builder can, BuildKit cannot); ``proxy_args`` are Docker's predefined proxy
    build args (``HTTP_PROXY``...), which reach RUN steps but are neither kept in the image
    nor part of its tag. Raises :class:`ImageBuildError` naming the failing step, with the
    last lines of output in ``.stderr``, or :class:`DockerUnavailable`.
    """
    if image_exists(spec.ref):
        return spec.ref
    # Only the built-in Dockerfiles take BASE; an image built on another (a custom agent, a
    # capability) must not wait for a pull of a base it does not use.
    base = ensure_base(settings, progress) if declares_arg(spec.dockerfile, "BASE") else None
    progress(f"building image {spec.ref}")
    with tempfile.TemporaryDirectory(prefix="bottle-build-") as tmp:
        context = Path(tmp) / "context"
        _write_context(spec, context)
        dockerfile = Path(tmp) / "Dockerfile"
        dockerfile.write_text(spec.dockerfile, encoding="utf-8")
        argv = [docker_cli(), "build", "--rm", "--force-rm", "-f", str(dockerfile), "-t", spec.ref]
        argv += ["--label", f"bottle.version={package_version()}"]
        argv += ["--label", f"bottle.image-inputs={spec.tag}"]
        if base is not None:
            argv += ["--build-arg", f"BASE={base}"]
        for key in sorted(spec.build_args):
            argv += ["--build-arg", f"{key}={spec.build_args[key]}"]
        if network is not None:
            argv += ["--network", network]
        for key, value in sorted((proxy_args or {}).items()):
            argv += ["--build-arg", f"{key}={value}"]
        argv.append(str(context))
        # python-on-whales' legacy_build captures the output and returns only at the end, so
        # the build runs here, through the docker CLI, to stream its lines as they come.
        # DOCKER_BUILDKIT=0 keeps the legacy builder (and its Step lines) on newer CLIs.
        code, tail, step = _stream(argv, progress, image=spec.ref, env={"DOCKER_BUILDKIT": "0"})
    if code != 0:
        raise_if_no_daemon(tail)
        where = f" at {step}" if step else ""
        raise ImageBuildError(
            f"building image {spec.ref} failed{where}",
            step=step,
            argv=argv,
            stderr="\n".join(tail),
            hint="The last lines of the build output are in the error's stderr (--debug "
            "shows them). A step that downloads over HTTPS needs the proxy's CA: put it in "
            "BOTTLE_EXTRA_CA_CERTS.",
        )
    return spec.ref


def _write_context(spec: ImageSpec, context: Path) -> None:
    context.mkdir()
    for name, data in spec.files.items():
        path = context / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o755 if name in spec.executable else 0o644)


def _stream(
    argv: Sequence[str],
    progress: Progress,
    *,
    image: str = "",
    env: dict[str, str] | None = None,
    first_step: str = "",
) -> tuple[int, list[str], str | None]:
    """Run ``argv`` (the making of ``image``), passing each ``Step N/M`` line to ``progress``.

    A :class:`BuildProgress` gets every line as a ``BuildUpdate`` instead (``first_step``
    names the work when the output has no steps); a plain callback sees the other lines
    (apt, pip, npm chatter) nowhere but in the tail an error carries.

    Returns the exit code, the last output lines and the last ``Step N/M : …`` line seen.
    Ctrl-C (or any error in ``progress``) stops the child before it propagates.
    """
    tail: deque[str] = deque(maxlen=_TAIL)
    step: str | None = None
    tracker = (
        BuildTracker(image, progress.build, first_step=first_step)
        if isinstance(progress, BuildProgress)
        else None
    )
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        text=True,
        encoding="utf-8",
        errors="replace",
        bufsize=1,
    )
    with _reaped(proc):
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = _ANSI.sub("", raw.rstrip("\r\n"))
            tail.append(line)
            if STEP.match(line):
                step = line
                if tracker is None:
                    progress(line)
            if tracker is not None:
                tracker.feed(line)
        code = proc.wait()
    if tracker is not None:
        tracker.end(ok=code == 0)
    return code, list(tail), step


@contextlib.contextmanager
def _reaped(proc: subprocess.Popen[str]) -> Iterator[None]:
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def base_recipe_ref(settings: Settings) -> str:
    """The ref of the base made from ``settings.debian_mirror``: a hash of the whole recipe."""
    return made_base_ref(settings.debian_mirror)


def ensure_base(settings: Settings, progress: Progress) -> str:
    """The ref of the image to pass as ``BASE`` to the built-in Dockerfiles.

    ``settings.base_image`` if it is local or ``docker pull`` gets it (unless
    ``settings.offline_base``); otherwise a Debian base made with mmdebstrap, reused once made.
    """
    if not settings.offline_base:
        if image_exists(settings.base_image):
            return settings.base_image
        if settings.base_image not in _UNPULLABLE:
            if _pull(settings.base_image, progress):
                return settings.base_image
            _UNPULLABLE.add(settings.base_image)
    ref = base_recipe_ref(settings)
    if image_exists(ref):
        return ref
    _make_base(settings, ref, progress)
    return ref


def _pull(ref: str, progress: Progress) -> bool:
    from python_on_whales import docker
    from python_on_whales.exceptions import DockerException

    progress(f"pulling base image {ref}")
    try:
        docker.image.pull(ref, quiet=True)
    except DockerException as exc:
        raise_if_no_daemon([exc.stderr or ""])
        reason = (exc.stderr or "").strip().splitlines()
        progress(
            f"cannot pull {ref} ({reason[-1] if reason else 'failed'}); "
            "using a Debian base made locally instead"
        )
        return False
    return True


def _make_base(settings: Settings, ref: str, progress: Progress) -> None:
    mmdebstrap = shutil.which("mmdebstrap")
    if mmdebstrap is None:
        raise Failed(
            f"cannot get the base image {settings.base_image}, and mmdebstrap, which makes "
            "one from a Debian mirror, is not installed",
            hint="Install mmdebstrap (Debian/Ubuntu: apt-get install mmdebstrap), or set "
            "BOTTLE_BASE_IMAGE to an image you have ('docker images' lists them) with "
            "Python 3.12 or newer and apt.",
        )
    progress(f"making base image {ref} from {settings.debian_mirror} with mmdebstrap")
    with tempfile.TemporaryDirectory(prefix="bottle-base-") as tmp:
        tar = Path(tmp) / "rootfs.tar"
        argv = [
            mmdebstrap,
            f"--variant={VARIANT}",
            f"--include={','.join(INCLUDE)}",
            *(f"--dpkgopt={opt}" for opt in DPKG_OPTS),
            SUITE,
            str(tar),
            settings.debian_mirror,
        ]
        code, tail, _ = _stream(argv, progress, image=ref, first_step=f"mmdebstrap {SUITE}")
        if code != 0:
            raise ImageBuildError(
                f"making base image {ref} with mmdebstrap failed (exit code {code})",
                argv=argv,
                stderr="\n".join(tail),
                hint="Check that the Debian mirror (BOTTLE_DEBIAN_MIRROR) is reachable and that "
                "mmdebstrap can run (as root, or with user namespaces); or set "
                "BOTTLE_BASE_IMAGE to an image you have.",
            )
        progress(f"importing {tar.name} as {ref}")
        changes = [*BASE_CHANGES, f"LABEL bottle.version={package_version()}"]
        from python_on_whales import docker

        with docker_errors(f"importing base image {ref}"):
            docker.image.import_(tar, tag=ref, changes=changes)
