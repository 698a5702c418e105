"""``ComposeProject.logs``: every container's ``docker logs``, merged in time order.

A ``docker`` on PATH answers ``ps`` and ``logs`` as the CLI does (the real engine's
output is the lifecycle integration test's).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bottle.engine.compose import ComposeProject
from tests.conftest import fake_docker_on_path

FAKE = r"""#!/bin/sh
if [ "$1" = ps ]; then
  printf 'aaa\trunning\tUp 1 second\tbottle-x\tagent\tx\th\tbottle-x-agent-1\n'
  printf 'bbb\trunning\tUp 1 second\tbottle-x\tegress\tx\th\tbottle-x-egress-1\n'
  printf 'ccc\trunning\tUp 1 second\tbottle-other\tagent\to\th\tbottle-other-agent-1\n'
  exit 0
fi
shift 2  # logs --timestamps
[ "$1" = --tail ] && { echo "tail $2" >> "$TAILS"; shift 2; }
case "$1" in
  aaa) printf '2026-01-01T00:00:02.000000000Z agent out\n'
       printf '2026-01-01T00:00:04.000000000Z agent err\r still err\n' >&2 ;;
  bbb) printf '2026-01-01T00:00:01.000000000Z egress one\n2026-01-01T00:00:03.000000000Z egress two\n' ;;
  *) echo "Error: No such container: $1" >&2; exit 1 ;;
esac
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ComposeProject:
    fake_docker_on_path(tmp_path, FAKE, monkeypatch)
    monkeypatch.setenv("TAILS", str(tmp_path / "tails"))
    return ComposeProject(compose_file=tmp_path / "c.yml", project="bottle-x", project_dir=tmp_path)


def test_logs_of_every_container_in_time_order(project: ComposeProject) -> None:
    assert project.logs().split("\n") == [
        "egress-1  | 2026-01-01T00:00:01.000000000Z egress one",
        "agent-1   | 2026-01-01T00:00:02.000000000Z agent out",
        "egress-1  | 2026-01-01T00:00:03.000000000Z egress two",
        "agent-1   | 2026-01-01T00:00:04.000000000Z agent err\r still err",
    ]


def test_logs_of_some_services_with_a_tail(project: ComposeProject, tmp_path: Path) -> None:
    text = project.logs(services=["egress"], tail=8)
    assert text.splitlines() == [
        "egress-1  | 2026-01-01T00:00:01.000000000Z egress one",
        "egress-1  | 2026-01-01T00:00:03.000000000Z egress two",
    ]
    assert (tmp_path / "tails").read_text() == "tail 8\n"


def test_no_container_no_log(project: ComposeProject) -> None:
    assert project.logs(services=["supervise"]) == ""
