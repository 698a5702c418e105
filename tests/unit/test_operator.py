"""The operator lock and the stale-edit guard: checked before anything reaches Docker."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bottle.errors import ApplyError, ApplyFailed
from bottle.instance import Instance
from bottle.operator import changing, set_routes
from bottle.policy import Routes
from bottle.sidecars import egress
from bottle.state import StateDir


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    state = StateDir(tmp_path / "slug-abcde")
    state.create()
    return Instance(state)


def test_one_operator_change_at_a_time(instance: Instance) -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with changing(instance):
            held.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert held.wait(10)
        with (
            pytest.raises(ApplyFailed, match="still being applied") as caught,
            changing(instance, wait_s=0.2),
        ):
            pass
        assert caught.value.exit_code == 1  # waiting too long is not bad input
        assert isinstance(caught.value.__cause__, TimeoutError)
    finally:
        release.set()
        worker.join(10)
    with changing(instance, wait_s=0.2):  # free again once the first change is done
        pass


def test_an_edit_of_routes_that_changed_meanwhile_is_refused(instance: Instance) -> None:
    path = egress.routes_file(instance)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"routes:\n- host: new.example\n")
    with pytest.raises(ApplyError, match="changed while you were editing") as caught:
        set_routes(instance, Routes(), based_on=b"routes: []\n")
    assert "Nothing changed" in (caught.value.hint or "")
    assert path.read_bytes() == b"routes:\n- host: new.example\n"


def test_a_damaged_audit_log_stops_a_change_before_it_is_made(instance: Instance) -> None:
    from bottle.errors import StateError
    from bottle.operator import allow
    from bottle.policy import Route

    path = egress.routes_file(instance)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"routes: []\n")
    instance.state.audit_log.write_text('{"not": "an entry"}\n')
    with pytest.raises(StateError, match="not an audit entry"):
        allow(instance, Route(host="new.example"))
    assert path.read_bytes() == b"routes: []\n"  # nothing was applied
