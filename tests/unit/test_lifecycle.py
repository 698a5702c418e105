"""Recoverable states, checked slugs, bounded bottle files and sidecar health."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from bottle import Bottle
from bottle.engine.compose import ServiceState
from bottle.errors import ManifestError, PlanError, SlugError, StateError
from bottle.files import now
from bottle.instance import Instance
from bottle.instances import CleanupPlan, resolve, run_cleanup
from bottle.manifest import load_manifest
from bottle.settings import Settings
from bottle.state import InstanceStatus, Metadata, StateDir, check_slug
from tests.conftest import CliResult, run_cli_here, user_owned, write
from tests.fakes import FakeEngine


@pytest.fixture
def bottle(monkeypatch: pytest.MonkeyPatch) -> Callable[..., CliResult]:
    def run(*args: str, home: Path, cwd: Path) -> CliResult:
        return run_cli_here(*args, cwd=cwd, env={"BOTTLE_HOME": str(home)}, monkeypatch=monkeypatch)

    return run


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def make_state(
    home: Path, slug: str, status: InstanceStatus, *, pid: int | None = None, at: Path | None = None
) -> StateDir:
    state = StateDir(at or home / "state" / slug)
    state.create()
    state.write_metadata(
        Metadata(
            slug=slug,
            agent="shell",
            bottle="default",
            provider="shell",
            cwd=str(home),
            compose_project=f"bottle-{slug}",
            images={},
            services=["agent", "egress", "supervise"],
            status=status,
            started_at=now(),
            updated_at=now(),
            pid=pid,
        )
    )
    return state


# -- slugs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("slug", ["shell-k3x9q", "it", "a", "my_agent-0abcd", "x" * 46])
def test_a_slug_or_prefix_of_one_is_accepted(slug: str) -> None:
    assert check_slug(slug) == slug


@pytest.mark.parametrize(
    "slug", ["", "../../x", "..", "a/b", "/etc", "Shell-abcde", "-x", ".hidden", "x" * 47, "a\n"]
)
def test_anything_else_is_refused_with_exit_2(slug: str) -> None:
    with pytest.raises(SlugError) as caught:
        check_slug(slug)
    assert caught.value.exit_code == 2 and "bottle ls" in (caught.value.hint or "")


def test_library_lookups_refuse_a_path_before_touching_it(home: Path, tmp_path: Path) -> None:
    outside = tmp_path / "x"  # what home/state/../../x names: a "state dir" outside the home
    make_state(home, "x", InstanceStatus.RUNNING, at=outside)
    settings = Settings(home=home)
    for lookup in (
        lambda: Instance.open("../../x", settings=settings),
        lambda: resolve("../../x", settings),
        lambda: resolve("../", settings),  # prefix matching too
        lambda: StateDir.lookup(settings.state_root, "../x"),
    ):
        with pytest.raises(SlugError):
            lookup()
    assert (outside / "metadata.json").is_file()


@pytest.mark.parametrize("command", ["logs", "attach", "stop", "routes", "audit"])
def test_every_slug_argument_is_checked(
    command: str, bottle: Callable[..., CliResult], home: Path, repo: Path
) -> None:
    argv = {"routes": ["routes", "show"], "audit": ["audit", "verify"]}.get(command, [command])
    for slug in ("../../x", "a" * 5000):
        done = bottle(*argv, slug, home=home, cwd=repo)
        assert done.returncode == 2, (argv, done.stderr)
        assert "is not an instance slug" in done.stderr and "hint:" in done.stderr
        assert "internal error" not in done.stderr and "Traceback" not in done.stderr


# -- recoverable states ---------------------------------------------------------------------


def test_a_dead_owners_start_can_be_stopped_and_ends_failed(home: Path) -> None:
    state = make_state(home, "shell-aaaaa", InstanceStatus.STARTING, pid=dead_pid())
    engine = FakeEngine()
    Instance(state, engine=engine).stop()
    meta = state.read_metadata()
    assert meta.status == InstanceStatus.FAILED and "cut short" in (meta.error or "")
    assert "down" in engine.calls and meta.pid is None


def test_a_start_without_an_owner_is_recoverable(home: Path) -> None:
    # Written by an older bottle, whose detached starts recorded no pid.
    state = make_state(home, "shell-aaaad", InstanceStatus.STARTING)
    assert state.transition(InstanceStatus.STOPPING).status == InstanceStatus.STOPPING


def test_a_dead_owners_stopping_state_can_fail(home: Path) -> None:
    state = make_state(home, "shell-aaaab", InstanceStatus.STOPPING, pid=dead_pid())
    assert state.transition(InstanceStatus.FAILED).status == InstanceStatus.FAILED


def test_a_live_start_is_not_taken_from_its_owner(home: Path) -> None:
    state = make_state(home, "shell-aaaac", InstanceStatus.STARTING, pid=os.getpid())
    engine = FakeEngine()
    with pytest.raises(StateError, match="cannot become stopping") as caught:
        Instance(state, engine=engine).stop()
    assert f"Process {os.getpid()} is still starting it" in (caught.value.hint or "")
    assert engine.calls == [] and state.read_metadata().status == InstanceStatus.STARTING


def test_a_detached_start_is_owned_while_it_starts(home: Path, repo: Path) -> None:
    seen: list[int | None] = []

    class Watching(FakeEngine):
        def project(self, **kwargs):  # type: ignore[no-untyped-def]
            project = super().project(**kwargs)
            meta = StateDir(kwargs["compose_file"].parent).read_metadata
            original = project.up

            def up(**up_kwargs):  # type: ignore[no-untyped-def]
                seen.append(meta().pid)
                original(**up_kwargs)

            project.up = up  # type: ignore[method-assign]
            return project

    cwd = user_owned(repo)
    bottle = Bottle("shell", cwd=cwd, settings=Settings(home=home), environ={}, engine=Watching())
    instance = bottle.start()
    # every container in one up; a kill -9 now is recoverable: the owner is known
    assert seen == [os.getpid()]
    assert instance.metadata.pid is None  # detached: nobody owns it once it runs


def test_cleanup_goes_on_past_a_failure_and_reports_each(home: Path) -> None:
    make_state(home, "shell-live1", InstanceStatus.STARTING, pid=os.getpid())
    make_state(home, "shell-done1", InstanceStatus.FINISHED)
    plan = CleanupPlan(take_down=["shell-live1", "../../etc"], remove_state=["shell-done1"])
    steps = run_cleanup(plan, Settings(home=home))
    assert [(s.action, s.target, s.ok) for s in steps] == [
        ("take down", "shell-live1", False),
        ("take down", "../../etc", False),
        ("remove dir", "shell-done1", True),
    ]
    assert isinstance(steps[0].error, StateError) and isinstance(steps[1].error, SlugError)
    assert not (home / "state" / "shell-done1").exists()
    assert (home / "state" / "shell-live1").is_dir()


def test_cli_cleanup_prints_each_failure_and_exits_1(
    bottle: Callable[..., CliResult], home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle import instances

    make_state(home, "shell-live2", InstanceStatus.STARTING, pid=os.getpid())
    make_state(home, "shell-done2", InstanceStatus.FINISHED)
    plan = CleanupPlan(take_down=["shell-live2"], remove_state=["shell-done2"])
    # The plan is docker's to compute (tests/integration); what is done with it is not.
    monkeypatch.setattr(instances, "plan_cleanup", lambda _settings, **_: plan)
    done = bottle("cleanup", "--yes", home=home, cwd=repo)
    assert done.returncode == 1
    assert "take down shell-live2: instance shell-live2 is starting" in done.stderr
    assert "done   remove dir shell-done2" in done.stderr and "1 failed" in done.stderr
    assert not (home / "state" / "shell-done2").exists()


def test_ls_shows_a_live_start_as_starting_and_a_dead_one_as_preserved() -> None:
    from bottle.instances import _effective

    assert _effective(InstanceStatus.STARTING, 0, owner_ok=True) == InstanceStatus.STARTING
    assert _effective(InstanceStatus.STARTING, 2, owner_ok=False) == InstanceStatus.PRESERVED
    assert _effective(InstanceStatus.RUNNING, 0, owner_ok=True) == InstanceStatus.PRESERVED
    assert _effective(InstanceStatus.RUNNING, 2, owner_ok=True) == InstanceStatus.RUNNING


# -- sidecar health -------------------------------------------------------------------------


def test_health_names_each_service_and_the_missing_ones(home: Path) -> None:
    state = make_state(home, "shell-hhhhh", InstanceStatus.RUNNING)
    engine = FakeEngine(
        states=[
            ServiceState("agent", "c1", "running", None, None),
            ServiceState("egress", "c2", "exited", None, 137),
            ServiceState("capability", "c3", "running", "unhealthy", None),
        ]
    )
    assert Instance(state, engine=engine).health() == {
        "agent": "running",
        "egress": "exited",
        "supervise": "missing",
        "capability": "unhealthy",
    }


def test_ls_shows_which_sidecar_is_not_well() -> None:
    from types import SimpleNamespace

    from bottle_cli.listing import status as _status

    row = SimpleNamespace(status="degraded", sidecars={"egress": "exited", "supervise": "healthy"})
    assert _status(row) == "degraded (egress: exited)"
    assert _status(SimpleNamespace(status="running", sidecars={"egress": "healthy"})) == "running"


# -- bounded bottle files ------------------------------------------------------------------


def _front(body: str) -> str:
    return f"---\n{body}---\n"


def test_a_huge_bottle_file_is_refused_without_reading_it(home: Path, repo: Path) -> None:
    path = home / "bottles" / "big.md"
    path.parent.mkdir(parents=True)
    with path.open("wb") as handle:
        handle.write(b"---\ndescription: big\n---\n")
        handle.truncate(200 * 1024 * 1024)  # sparse: 200 MB that cost no disk
    tracemalloc.start()
    try:
        with pytest.raises(ManifestError, match="larger than 1 MiB") as caught:
            load_manifest(home=home, cwd=repo)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.path == path
    # Refused on its size: at most the bound was read, never the 200 MB.
    assert peak < 16 * 1024 * 1024, peak


def test_a_fifo_where_a_bottle_file_was_does_not_hang(
    home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bottle.manifest import loader

    fifo = home / "bottles" / "pipe.md"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    # Listing skips what is not a file; the read itself must refuse one swapped in after.
    monkeypatch.setattr(loader, "_md_files", lambda d: [fifo] if d == fifo.parent else [])
    with pytest.raises(ManifestError, match="not a regular file"):
        load_manifest(home=home, cwd=repo)


def test_a_symlinked_home_bottle_is_still_read(home: Path, repo: Path, tmp_path: Path) -> None:
    real = write(tmp_path / "dotfiles" / "mine.md", _front("description: from dotfiles\n"))
    (home / "bottles").mkdir()
    (home / "bottles" / "mine.md").symlink_to(real)
    manifest = load_manifest(home=home, cwd=repo)
    assert manifest.bottles["mine"].spec.description == "from dotfiles"


def test_deep_nesting_through_the_cli_is_a_refusal_not_an_internal_error(
    bottle: Callable[..., CliResult], home: Path, repo: Path
) -> None:
    write(home / "bottles" / "deep.md", _front("egress: " + "[" * 20_000 + "]" * 20_000 + "\n"))
    done = bottle("render", "shell", "--bottle", "deep", home=home, cwd=repo)
    assert done.returncode == 2 and "nests deeper than" in done.stderr
    assert "internal error" not in done.stderr


def _as_user(uid: int, do: Callable[[], None]) -> None:
    """``do()`` as ``uid`` (a forked child when the tests run as root): modes bind it."""
    if os.getuid() != 0:
        do()
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            do()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_cleanup_removes_what_the_agent_locked_in_its_home() -> None:
    # The agent runs as the user and owns what it makes in home/ and transcript/: a
    # directory it chmods 000 (or 500) made every 'bottle cleanup' fail with "cannot remove".
    import shutil
    import tempfile

    uid = os.getuid() or 1000
    top = Path(tempfile.mkdtemp(prefix="bottle-lock-"))
    home = top / "home"
    state = make_state(home, "shell-lock1", InstanceStatus.FINISHED).path
    locked = state / "home" / "a" / "b"
    locked.mkdir(parents=True)
    (locked / "f").write_text("x")
    (state / "transcript" / "ro").mkdir(parents=True)
    (state / "transcript" / "ro" / "g").write_text("x")
    outside = top / "outside"
    outside.mkdir()
    (state / "home" / "link").symlink_to(outside)
    for path in (top, *top.rglob("*")):
        os.chown(path, uid, uid, follow_symlinks=False)
    os.chmod(outside, 0o500)
    os.chmod(state / "transcript" / "ro", 0o500)
    os.chmod(locked, 0)
    os.chmod(state / "home" / "a", 0)

    def clean() -> None:
        steps = run_cleanup(CleanupPlan(remove_state=["shell-lock1"]), Settings(home=home))
        assert [(s.action, s.ok) for s in steps] == [("remove dir", True)], steps[0].error

    try:
        _as_user(uid, clean)
        assert not state.exists()
        assert outside.stat().st_mode & 0o777 == 0o500  # a link is never followed
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_cleanup_keeps_a_dir_resumed_since_it_was_planned(home: Path) -> None:
    # 'bottle cleanup' shows its plan and asks first: a 'bottle resume' meanwhile must not
    # lose its state dir (audit log, proposals, the running agent's home) under it.
    from bottle.files import locked

    state = make_state(home, "shell-back1", InstanceStatus.FINISHED)
    plan = CleanupPlan(remove_state=["shell-back1"])
    state.transition(InstanceStatus.STARTING, pid=os.getpid())
    (step,) = run_cleanup(plan, Settings(home=home))
    assert not step.ok and isinstance(step.error, StateError)
    assert "starting" in step.error.message
    assert state.path.is_dir()

    make_state(home, "shell-back2", InstanceStatus.FINISHED)
    lock = home / "state" / "shell-back2" / ".operator.lock"
    with locked(lock):  # a resume (or an approval) is under way
        (step,) = run_cleanup(CleanupPlan(remove_state=["shell-back2"]), Settings(home=home))
    assert not step.ok and (home / "state" / "shell-back2").is_dir()


def test_cleanup_does_not_stop_an_instance_resumed_since_it_was_planned(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = make_state(home, "shell-back3", InstanceStatus.PRESERVED)
    plan = CleanupPlan(take_down=["shell-back3"])
    state.transition(InstanceStatus.STARTING, pid=os.getpid())
    state.transition(InstanceStatus.RUNNING, pid=None)  # a detached resume finished
    monkeypatch.setattr(Instance, "health", lambda self: {"agent": "running"})
    monkeypatch.setattr(Instance, "stop", lambda self, **kw: pytest.fail("stopped"))
    (step,) = run_cleanup(plan, Settings(home=home))
    assert not step.ok and isinstance(step.error, StateError)
    assert "running again" in step.error.message
    from bottle.files import locked

    with locked(state.path / ".operator.lock"):  # a resume is under way
        (step,) = run_cleanup(plan, Settings(home=home))
    assert not step.ok and step.error is not None and "being changed" in step.error.message


@pytest.mark.parametrize("where", [".", "home", "home/bottles", "home/state/x"])
def test_a_workspace_holding_or_inside_bottles_home_is_refused(
    home: Path, tmp_path: Path, where: str
) -> None:
    # The agent writes its workspace: with BOTTLE_HOME in it (cd ~ && bottle start), it
    # could rewrite its own routes.yaml, plan.json (what a resume mounts and runs) and the
    # bottles' definitions.
    cwd = tmp_path / where
    cwd.mkdir(parents=True, exist_ok=True)
    engine = FakeEngine()
    bottle = Bottle(
        "shell", cwd=user_owned(cwd), settings=Settings(home=home), environ={}, engine=engine
    )
    with pytest.raises(PlanError) as caught:
        bottle.start()
    assert "which the agent must never write" in caught.value.message and caught.value.hint
    assert engine.calls == []
    assert not (home / "state").exists() or [p.name for p in (home / "state").iterdir()] == ["x"]


def test_a_workspace_of_its_own_inside_bottles_home_is_fine(home: Path) -> None:
    (home / "work").mkdir()
    cwd = user_owned(home / "work")  # what the benchmarks use: a sibling of state/
    engine = FakeEngine()
    Bottle("shell", cwd=cwd, settings=Settings(home=home), environ={}, engine=engine).start()
