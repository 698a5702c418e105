"""``ComposeProject.down`` in docker CLI calls: what it stops, removes, and what it reports.

A ``docker`` on PATH records each call and answers as the CLI does; a network it is told
is held stays after ``network rm`` (the real engine's case is in test_cli_real).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bottle.engine.compose import ComposeProject
from bottle.errors import DownIncomplete
from tests.conftest import fake_docker_on_path

FAKE = r"""#!/bin/sh
echo "$*" >> "$CALLS"
case "$1 $2" in
  "ps --all")
    [ -f "$GONE" ] && exit 0
    printf 'aaa\trunning\tUp 1 second\tbottle-x\tagent\tx\th\tbottle-x-agent-1\n'
    printf 'bbb\texited\tExited (0) 1 second ago\tbottle-x\tegress\tx\th\tbottle-x-egress-1\n'
    printf 'ccc\trunning\tUp 1 second\tbottle-x-2\tagent\tx2\th\tbottle-x-2-agent-1\n' ;;
  "logs --timestamps")
    [ -f "$STOPPED" ] || { echo "logs read before the stop" >&2; exit 1; }
    case "$3" in
      aaa) echo "2026-01-01T00:00:02.000000000Z agent bye" ;;
      bbb) [ -n "$BBB_GONE" ] && exit 1; echo "2026-01-01T00:00:01.000000000Z egress last" ;;
    esac ;;
  "stop --time")
    if [ -n "$AWAIT_STOP" ]; then  # until ``while_stopping`` ran: proof that it runs alongside
      for _ in $(seq 50); do [ -f "$AWAIT_STOP" ] && break; sleep 0.1; done
      [ -f "$AWAIT_STOP" ] || { echo "while_stopping never ran" >&2; exit 1; }
    fi
    touch "$STOPPED" ;;
  "rm --force")
    if [ -n "$AWAIT_NETS" ]; then  # until a network rm was tried: proof that it runs alongside
      for _ in $(seq 50); do [ -f "$NET_TRIED" ] && break; sleep 0.1; done
      [ -f "$NET_TRIED" ] || { echo "no network rm alongside" >&2; exit 1; }
    fi
    touch "$GONE" ;;
  "network ls")
    if [ -f "$NETS_LEFT" ]; then cat "$NETS_LEFT"
    elif [ ! -f "$NETS_GONE" ]; then printf 'n1\tbottle-x_internal\nn2\tbottle-x_egress\n'; fi ;;
  "network rm")
    [ -f "$STOPPED" ] || [ -f "$GONE" ] || { echo "has active endpoints" >&2; exit 1; }
    touch "$NET_TRIED"
    if [ -n "$AWAIT_NETS" ] && [ ! -f "$GONE" ]; then  # held by a container still there
      printf 'n1\tbottle-x_internal\n' > "$NETS_LEFT"; echo "Error: has active endpoints" >&2; exit 1
    fi
    if [ -n "$AWAIT" ]; then  # until ``meanwhile`` ran: proof that it runs alongside
      for _ in $(seq 50); do [ -f "$AWAIT" ] && break; sleep 0.1; done
      [ -f "$AWAIT" ] || { echo "meanwhile never ran" >&2; exit 1; }
    fi
    if [ -n "$HELD" ]; then printf 'n2\tbottle-x_egress\n' > "$NETS_LEFT"; echo "Error: has active endpoints" >&2; exit 1; fi
    rm -f "$NETS_LEFT"; touch "$NETS_GONE" ;;
esac
exit 0
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ComposeProject:
    fake_docker_on_path(tmp_path, FAKE, monkeypatch)
    for name in ("CALLS", "GONE", "NETS_GONE", "NETS_LEFT", "NET_TRIED", "STOPPED"):
        monkeypatch.setenv(name, str(tmp_path / name.lower()))
    return ComposeProject(compose_file=tmp_path / "c.yml", project="bottle-x", project_dir=tmp_path)


def _calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls").read_text().splitlines()


def test_down_stops_and_removes_the_project_and_nothing_else(
    project: ComposeProject, tmp_path: Path
) -> None:
    project.down(timeout=5)
    calls = _calls(tmp_path)
    # The networks are listed while the containers are listed and stopped: at any time
    # before their removal.
    [listing] = [n for n, call in enumerate(calls) if call.startswith("network ls")]
    assert "label=com.docker.compose.project=bottle-x" in calls[listing]
    assert listing < calls.index("network rm n1 n2")
    rest = calls[:listing] + calls[listing + 1 :]
    assert rest[0].startswith("ps --all")
    assert "label=com.docker.compose.project=bottle-x" in rest[0]
    # The networks go once the containers stopped, alongside their removal: either order.
    assert rest[1] == "stop --time 5 aaa"
    assert sorted(rest[2:]) == ["network rm n1 n2", "rm --force --volumes aaa bbb"]
    assert not any("ccc" in call for call in calls)  # another project's, with a like name
    assert (tmp_path / "nets_gone").exists()  # the fake refuses a network rm before the stop


def test_down_keeps_the_logs_of_the_stopped_containers_before_removing_them(
    project: ComposeProject, tmp_path: Path
) -> None:
    kept: list[str] = []
    project.down(keep_logs=kept.append)
    calls = _calls(tmp_path)
    logs = [n for n, call in enumerate(calls) if call.startswith("logs")]
    assert len(logs) == 2  # one read per container of the project, none of another's
    assert calls.index("stop --time 5 aaa") < min(logs)
    assert max(logs) < calls.index("rm --force --volumes aaa bbb")
    # The fake refuses a read before the stop: both lines made it, in time order.
    assert kept == [
        "egress-1  | 2026-01-01T00:00:01.000000000Z egress last\n"
        "agent-1   | 2026-01-01T00:00:02.000000000Z agent bye"
    ]


def test_a_log_that_cannot_be_read_does_not_stop_the_down(
    project: ComposeProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BBB_GONE", "1")
    kept: list[str] = []
    project.down(keep_logs=kept.append)
    assert kept == ["agent-1   | 2026-01-01T00:00:02.000000000Z agent bye"]
    assert {"network rm n1 n2", "rm --force --volumes aaa bbb"} <= set(_calls(tmp_path))
    assert (tmp_path / "gone").exists() and (tmp_path / "nets_gone").exists()


def test_down_of_nothing_is_a_no_op(project: ComposeProject, tmp_path: Path) -> None:
    (tmp_path / "gone").touch()
    (tmp_path / "nets_gone").touch()
    kept: list[str] = []
    project.down(keep_logs=kept.append)
    assert sorted(c.split()[0] for c in _calls(tmp_path)) == ["network", "ps"]
    assert kept == [""]  # said even so: the caller keeps the log it has


def test_a_held_network_is_down_incomplete(
    project: ComposeProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELD", "1")
    with pytest.raises(DownIncomplete) as caught:
        project.down()
    assert "bottle-x_egress" in caught.value.message and "still in use" in caught.value.message
    assert "docker network inspect bottle-x_egress" in (caught.value.hint or "")
    assert "rm --force --volumes aaa bbb" in _calls(tmp_path)  # the containers went first


def test_meanwhile_runs_once_the_containers_are_gone_while_the_networks_go(
    project: ComposeProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = tmp_path / "meanwhile-ran"
    monkeypatch.setenv("AWAIT", str(ran))
    seen: list[list[str]] = []

    def meanwhile() -> None:
        seen.append(_calls(tmp_path))
        ran.touch()  # the fake's network rm waits for this, and fails without it

    project.down(meanwhile=meanwhile)
    [calls] = seen
    assert "rm --force --volumes aaa bbb" in calls
    assert "network rm n1 n2" in _calls(tmp_path)
    assert (tmp_path / "nets_gone").exists()  # removed, not left behind by a failure


def test_while_stopping_runs_as_the_containers_stop_before_their_logs_are_read(
    project: ComposeProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ran = tmp_path / "while-stopping-ran"
    monkeypatch.setenv("AWAIT_STOP", str(ran))
    seen: list[bool] = []

    def while_stopping() -> None:
        seen.append((tmp_path / "stopped").exists())
        ran.touch()  # the fake's stop waits for this, and fails without it

    kept: list[str] = []
    project.down(keep_logs=kept.append, while_stopping=while_stopping)
    assert seen == [False]  # once, before the stop had ended
    assert "agent bye" in kept[0]  # the logs still read after the stop
    assert "stop --time 5 aaa" in _calls(tmp_path)


def test_the_networks_go_while_the_containers_are_removed(
    project: ComposeProject, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The fake's rm waits for a network rm, which fails while a container is left: the
    # removal ran alongside, and the network it could not take yet goes once they are gone.
    monkeypatch.setenv("AWAIT_NETS", "1")
    kept: list[str] = []
    project.down(keep_logs=kept.append)
    calls = _calls(tmp_path)
    # Both start at once, so either may be written down first: the fake's rm failing
    # without a network rm beside it is what shows they overlap.
    assert {"network rm n1 n2", "rm --force --volumes aaa bbb"} <= set(calls)
    assert calls[-1] == "network rm n1"  # tried again once the containers were gone
    assert (tmp_path / "nets_gone").exists() and not (tmp_path / "nets_left").exists()
    assert "agent bye" in kept[0]  # the logs were still read before the removal
