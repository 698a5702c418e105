"""``Instance.resume`` and the sessions that continue a conversation, on a fake engine.

What Docker does with a resumed project is tested in tests/integration/test_resume.py;
here: which statuses resume, what is refused, the rollback, images, the audit entry, and
the session loop that follows a replaced agent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bottle import session
from bottle.audit import AuditLog
from bottle.bottle import Bottle, resume
from bottle.engine.compose import ServiceState
from bottle.errors import EngineError, PlanError, Refused, StartTimeout, StateError
from bottle.instance import Instance
from bottle.settings import Settings
from bottle.state import InstanceStatus
from tests.conftest import FakeClock, user_owned, write
from tests.fakes import FakeEngine

UP = [ServiceState("agent", "c1", "running", None, None)]


def _started(home: Path, repo: Path, engine: FakeEngine, **env: str) -> Instance:
    cwd = user_owned(repo)
    return Bottle(
        "shell", cwd=cwd, settings=Settings(home=home), environ=env, engine=engine
    ).start()


def _finished(home: Path, repo: Path, engine: FakeEngine) -> Instance:
    instance = _started(home, repo, engine)
    instance.stop(status=InstanceStatus.FINISHED, exit_code=0)
    engine.calls.clear()
    return instance


def _resume(instance: Instance, home: Path, **kw: object) -> Instance:
    return instance.resume(settings=Settings(home=home), environ={}, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("ended", [InstanceStatus.FINISHED, InstanceStatus.STOPPED])
def test_an_ended_instance_comes_up_again_in_the_same_state_dir(
    home: Path, repo: Path, ended: InstanceStatus
) -> None:
    engine = FakeEngine()
    instance = _started(home, repo, engine)
    instance.stop(status=ended)
    (instance.state.transcript / "notes").write_text("kept")
    engine.calls.clear()

    resumed = _resume(instance, home, owner_pid=os.getpid())

    assert resumed is instance
    assert instance.status == InstanceStatus.RUNNING
    assert instance.metadata.pid == os.getpid() and instance.metadata.error is None
    # Every container in one compose call, then the wait for the sidecars (bottle.readiness);
    # the last run's status files are there, so ps tells whether their sidecars still run;
    # a last ps, that every container still runs.
    assert engine.calls == ["check", "image_exists", "image_exists", "ps", "up", "ps"]
    assert (instance.state.transcript / "notes").read_text() == "kept"
    assert "BOTTLE_HOST_ADDRESSES" in engine.env_at_up
    (entry,) = AuditLog(instance.state.audit_log).entries()
    assert entry.action == "resume" and entry.reason == f"it was {ended.value}"


def test_a_stopped_sidecars_old_status_never_counts_as_ready(
    home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last run's status file must not let the agent start before egress listens."""
    from bottle import readiness

    monkeypatch.setattr(readiness, "time", FakeClock())  # the wait runs out at once
    engine = FakeEngine()
    instance = _finished(home, repo, engine)
    stale = instance.state.status_file("egress")
    stale.write_text('{"ready": true, "generation": 1}')
    engine.serving = False  # the new egress never gets to write its own
    engine.ups.clear()
    with pytest.raises(StartTimeout):
        _resume(instance, home, wait_timeout=1)
    assert not stale.exists() and "up" in engine.calls
    # One up starts every container; the agent's program was never executed.
    assert engine.ups == [["egress", "supervise", "agent"]] and engine.execs == []


def test_the_library_door_opens_by_slug(home: Path, repo: Path) -> None:
    engine = FakeEngine()
    instance = _finished(home, repo, engine)
    found = resume(instance.slug, settings=Settings(home=home), environ={}, engine=engine)
    assert found.slug == instance.slug and found.status == InstanceStatus.RUNNING


def test_the_compose_file_is_rendered_again_with_the_home_bind(home: Path, repo: Path) -> None:
    engine = FakeEngine()
    instance = _finished(home, repo, engine)
    instance.state.compose_file.write_text("stale: true\n")
    _resume(instance, home)
    text = instance.state.compose_file.read_text()
    assert "target: /home/agent" in text and str(instance.state.home) in text
    assert oct(instance.state.home.stat().st_mode & 0o777) == oct(0o777)


def test_a_running_instance_is_refused_with_attach_as_the_hint(home: Path, repo: Path) -> None:
    engine = FakeEngine(states=UP)
    instance = _started(home, repo, engine)
    with pytest.raises(Refused, match="is running") as info:
        _resume(instance, home)
    assert f"bottle attach {instance.slug}" in (info.value.hint or "")
    assert instance.status == InstanceStatus.RUNNING


def test_a_running_instance_whose_containers_stopped_resumes_as_preserved(
    home: Path, repo: Path
) -> None:
    engine = FakeEngine()
    instance = _started(home, repo, engine)
    engine.states = [ServiceState("agent", "c1", "exited", None, 137)]
    _resume(instance, home)
    assert instance.status == InstanceStatus.RUNNING
    (entry,) = AuditLog(instance.state.audit_log).entries()
    assert entry.reason == "it was preserved"


def test_a_failed_start_is_not_resumed(home: Path, repo: Path) -> None:
    engine = FakeEngine(fail={"up": EngineError("boom")})
    with pytest.raises(EngineError):
        _started(home, repo, engine)
    (state,) = (home / "state").iterdir()
    instance = Instance.open(state.name, settings=Settings(home=home))
    instance.engine = engine
    with pytest.raises(Refused, match="is failed; it cannot resume") as info:
        _resume(instance, home)
    assert "start a new one" in (info.value.hint or "")


def test_an_unknown_slug_is_not_found(home: Path) -> None:
    from bottle.errors import InstanceNotFound

    with pytest.raises(InstanceNotFound):
        resume("shell-zzzzz", settings=Settings(home=home), environ={}, engine=FakeEngine())


def test_a_failed_resume_takes_down_and_keeps_the_status_it_had(home: Path, repo: Path) -> None:
    engine = FakeEngine()
    instance = _finished(home, repo, engine)
    engine.fail["up"] = EngineError("port in use")
    with pytest.raises(EngineError):
        _resume(instance, home)
    assert "down" in engine.calls
    meta = instance.metadata
    assert meta.status == InstanceStatus.FINISHED and meta.pid is None
    assert meta.error == "resume failed: port in use"
    assert AuditLog(instance.state.audit_log).entries() == []
    engine.calls.clear()
    _resume(instance, home)  # and it can be tried again
    assert instance.status == InstanceStatus.RUNNING


def test_a_host_variable_gone_from_the_host_is_refused_before_docker(
    home: Path, repo: Path
) -> None:
    write(
        home / "bottles" / "withvar.md",
        "---\nagent: {provider: shell}\nenv:\n  TOKEN: '${IT_TOKEN}'\n---\n",
    )
    write(home / "agents" / "withvar.md", "---\nbottle: withvar\n---\n")
    engine = FakeEngine()
    bottle = Bottle(
        "withvar",
        cwd=user_owned(repo),
        settings=Settings(home=home),
        environ={"IT_TOKEN": "x"},
        engine=engine,
    )
    instance = bottle.start()
    instance.stop()
    engine.calls.clear()
    with pytest.raises(PlanError, match="IT_TOKEN"):
        _resume(instance, home)
    assert engine.calls == []
    instance.resume(settings=Settings(home=home), environ={"IT_TOKEN": "y"})
    assert engine.env_at_up["IT_TOKEN"] == "y"


def test_a_missing_image_is_rebuilt_when_this_bottle_makes_the_same(home: Path, repo: Path) -> None:
    engine = FakeEngine()
    instance = _finished(home, repo, engine)
    engine.missing_images = {instance.metadata.images["sidecar"]}
    _resume(instance, home)
    assert engine.calls.count("ensure_image") == 2  # sidecar and agent, parents first


def test_a_missing_capability_image_is_refused_with_where_its_dockerfile_is(
    home: Path, repo: Path
) -> None:
    engine = FakeEngine()
    instance = _finished(home, repo, engine)
    plan = json.loads(instance.state.plan_file.read_text())
    plan["images"]["agent"] = "bottle-agent-capability:0123456789ab"
    instance.state.plan_file.write_text(json.dumps(plan))
    (instance.state.path / "capabilities").mkdir()
    engine.missing_images = {"bottle-agent-capability:0123456789ab"}
    with pytest.raises(Refused, match="is gone") as info:
        _resume(instance, home)
    assert "capabilities" in (info.value.hint or "")
    assert instance.status == InstanceStatus.FINISHED and "up" not in engine.calls


def test_a_resumed_attended_session_uses_the_resume_command_and_finishes(
    home: Path, repo: Path
) -> None:
    engine = FakeEngine(states=UP)
    instance = _finished(home, repo, engine)
    lines: list[str] = []
    code = session.resumed_session(instance, progress=lines.append)
    assert code == 0 and instance.status == InstanceStatus.FINISHED
    assert engine.execs == [["bash", "-l"]]


def test_a_resumed_headless_run_continues_on_the_prompt(home: Path, repo: Path) -> None:
    engine = FakeEngine(states=UP, exec_codes=[3])
    instance = _finished(home, repo, engine)
    code = session.resumed_session(instance, progress=lambda _l: None, prompt="echo again")
    assert code == 3
    assert engine.execs == [["bash", "-lc", "echo again"]]
    assert instance.metadata.status == InstanceStatus.FINISHED
    assert instance.metadata.exit_code == 3
    log = instance.state.run_log.read_text()
    assert "$ bash -lc 'echo again'" in log and "exit 3" in log
    assert instance.state.run_log.parent == instance.state.path  # not the agent's transcript/
    assert not (instance.state.transcript / "run.log").exists()


def test_a_run_log_that_cannot_be_written_is_warned_about_not_fatal(home: Path, repo: Path) -> None:
    # A run.log turned into a FIFO (or a link) once made every 'bottle resume --prompt'
    # fail, and one spoiled mid-run lost the run's exit code; it is never followed.
    engine = FakeEngine(states=UP, exec_codes=[3])
    instance = _finished(home, repo, engine)
    os.mkfifo(instance.state.run_log)
    lines: list[str] = []
    code = session.resumed_session(instance, progress=lines.append, prompt="echo again")
    assert code == 3 and engine.execs == [["bash", "-lc", "echo again"]]
    assert instance.metadata.status == InstanceStatus.FINISHED
    assert instance.metadata.exit_code == 3
    assert any("run.log" in line and line.startswith("warning:") for line in lines), lines


def test_a_resume_clears_a_replacement_its_approver_never_finished(home: Path, repo: Path) -> None:
    # An approval killed mid-recreate left `replacing` set: every later non-zero exit of a
    # session waited REPLACE_WAIT_S for a container nobody was making. A resume holds the
    # operator lock, so no replacement can be under way: what is recorded is stale.
    engine = FakeEngine(states=UP)
    instance = _finished(home, repo, engine)
    instance.state.write_metadata(instance.metadata.model_copy(update={"replacing": "img:x"}))
    _resume(instance, home)
    assert instance.metadata.replacing is None


def _replace_during_first_exec(instance: Instance, engine: FakeEngine, image: str) -> None:
    """What capability.replace_agent_image does to the metadata while the agent runs."""

    def swap(argv: list[str]) -> None:
        if len(engine.execs) == 1:
            meta = instance.metadata
            instance.state.write_metadata(
                meta.model_copy(
                    update={
                        "agent_restarts": meta.agent_restarts + 1,
                        "images": {**meta.images, "agent": image},
                    }
                )
            )

    engine.on_exec = swap


def test_a_headless_prompt_run_continues_in_the_replaced_agent(home: Path, repo: Path) -> None:
    engine = FakeEngine(states=UP, exec_codes=[137, 0])
    instance = _finished(home, repo, engine)
    _replace_during_first_exec(instance, engine, "bottle-agent-capability:abc")
    code = session.resumed_session(instance, progress=lambda _l: None, prompt="work")
    assert code == 0
    first, again = engine.execs
    assert first == ["bash", "-lc", "work"]
    assert "bottle-agent-capability:abc" in again[-1] and "Continue the task" in again[-1]


def test_a_plain_command_is_not_run_again_after_a_replacement(home: Path, repo: Path) -> None:
    engine = FakeEngine(exec_codes=[137])
    instance = _started(home, repo, engine)
    _replace_during_first_exec(instance, engine, "bottle-agent-capability:abc")
    code = session._headless(instance, ["make", "test"], prompt_run=False)
    assert code == 137 and engine.execs == [["make", "test"]]


def test_an_attended_session_reattaches_after_a_replacement(home: Path, repo: Path) -> None:
    engine = FakeEngine(states=UP, exec_codes=[137, 0])
    instance = _finished(home, repo, engine)
    _replace_during_first_exec(instance, engine, "bottle-agent-capability:abc")
    lines: list[str] = []
    code = session.resumed_session(instance, progress=lines.append)
    assert code == 0 and instance.status == InstanceStatus.FINISHED
    assert engine.execs == [["bash", "-l"], ["bash", "-l"]]
    # The shell takes no first prompt: the user is told on the terminal instead.
    assert any("bottle-agent-capability:abc" in line for line in lines)


def test_a_non_zero_exit_without_a_replacement_preserves(home: Path, repo: Path) -> None:
    engine = FakeEngine(states=UP, exec_codes=[5])
    instance = _finished(home, repo, engine)
    code = session.resumed_session(instance, progress=lambda _l: None)
    assert code == 5 and instance.status == InstanceStatus.PRESERVED
    assert len(engine.execs) == 1


def test_a_session_waits_while_a_replacement_is_under_way(
    home: Path, repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = FakeEngine()
    instance = _started(home, repo, engine)
    meta = instance.metadata
    instance.state.write_metadata(meta.model_copy(update={"replacing": "bottle-agent-x:1"}))
    clock = FakeClock()
    monkeypatch.setattr(session, "time", clock)
    assert session.replaced_since(instance, 0, wait_s=0.6) is None  # never finished
    assert clock.slept >= 0.6  # it waited its whole time for the replacement


def test_attaching_to_a_preserved_instance_and_exiting_cleanly_finishes_it(
    home: Path, repo: Path
) -> None:
    engine = FakeEngine(states=UP)
    instance = _started(home, repo, engine)
    instance.preserve("agent exited with code 1")
    assert session.attach_session(instance, progress=lambda _l: None) == 0
    assert instance.status == InstanceStatus.FINISHED


def test_attaching_to_a_preserved_instance_whose_agent_stopped_names_resume(
    home: Path, repo: Path
) -> None:
    engine = FakeEngine()
    instance = _started(home, repo, engine)
    engine.states = [ServiceState("agent", "c1", "exited", None, 0)]
    instance.preserve("interrupted")
    with pytest.raises(StateError, match="not running") as info:
        session.attach_session(instance, progress=lambda _l: None)
    assert f"bottle resume {instance.slug}" in (info.value.hint or "")


def test_attaching_to_a_detached_instance_leaves_it_running(home: Path, repo: Path) -> None:
    engine = FakeEngine(states=UP)
    instance = _started(home, repo, engine)
    assert session.attach_session(instance, progress=lambda _l: None) == 0
    assert instance.status == InstanceStatus.RUNNING


def test_home_mount_points_never_follow_a_link_the_agent_left(
    home: Path, repo: Path, tmp_path: Path
) -> None:
    from pathlib import PurePosixPath

    engine = FakeEngine()
    instance = _finished(home, repo, engine)
    outside = tmp_path / "outside"
    outside.mkdir()
    (instance.state.home / ".skills").symlink_to(outside)
    with pytest.raises(StateError, match="a link is never followed"):
        instance.state.make_home_dirs([PurePosixPath(".skills/review")])
    assert list(outside.iterdir()) == []


def test_skills_under_the_home_get_their_mount_points_made_first(home: Path, repo: Path) -> None:
    write(home / "skills" / "review" / "SKILL.md", "---\nname: review\n---\nReview.\n")
    write(home / "agents" / "sk.md", "---\nbottle: default\nskills: [review]\n---\n")
    bottle = Bottle(
        "sk", cwd=user_owned(repo), settings=Settings(home=home), environ={}, engine=FakeEngine()
    )
    instance = bottle.start()
    assert (instance.state.home / ".skills" / "review").is_dir()


def test_a_failed_instance_cannot_start_again_by_transition(home: Path, repo: Path) -> None:
    engine = FakeEngine()
    instance = _started(home, repo, engine)
    instance.state.transition(InstanceStatus.STOPPING)
    instance.state.transition(InstanceStatus.FAILED)
    with pytest.raises(StateError, match="cannot become starting"):
        instance.state.transition(InstanceStatus.STARTING)
