"""Live changes as transactions: the lock, the stale-edit guard, audit only after success.

All of it is checked before anything reaches Docker."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from bottle.changes import transaction
from bottle.errors import ApplyError, ApplyFailed
from bottle.instance import Instance
from bottle.policy import Routes
from bottle.state import StateDir


@pytest.fixture
def instance(tmp_path: Path) -> Instance:
    state = StateDir(tmp_path / "slug-abcde")
    state.create()
    return Instance(state)


def test_one_operator_change_at_a_time(instance: Instance) -> None:
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with transaction(instance):
            held.set()
            release.wait(10)

    worker = threading.Thread(target=hold)
    worker.start()
    try:
        assert held.wait(10)
        with (
            pytest.raises(ApplyFailed, match="still being applied") as caught,
            transaction(instance, wait_s=0.0),  # one try: the lock is held for certain
        ):
            pass
        assert caught.value.exit_code == 1  # waiting too long is not bad input
        assert isinstance(caught.value.__cause__, TimeoutError)
    finally:
        release.set()
        worker.join(10)
    with transaction(instance, wait_s=0.2):  # free again once the first change is done
        pass


def test_an_edit_of_routes_that_changed_meanwhile_is_refused(instance: Instance) -> None:
    path = instance.routes.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"routes:\n- host: new.example\n")
    with pytest.raises(ApplyError, match="changed while you were editing") as caught:
        instance.routes.apply(Routes(), based_on=b"routes: []\n")
    assert "Nothing changed" in (caught.value.hint or "")
    assert path.read_bytes() == b"routes:\n- host: new.example\n"


def test_a_damaged_audit_log_stops_a_change_before_it_is_made(instance: Instance) -> None:
    from bottle.errors import StateError
    from bottle.policy import Route

    path = instance.routes.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"routes: []\n")
    instance.state.audit_log.write_text('{"not": "an entry"}\n')
    with pytest.raises(StateError, match="not an audit entry"):
        instance.routes.allow(Route(host="new.example"))
    assert path.read_bytes() == b"routes: []\n"  # nothing was applied


def test_audit_entries_are_written_only_when_the_change_succeeds(instance: Instance) -> None:
    with pytest.raises(RuntimeError), transaction(instance) as change:
        change.record(action="allow", reason="never applied")
        raise RuntimeError("the apply failed")
    assert not instance.state.audit_log.exists() or instance.state.audit_log.read_bytes() == b""
    with transaction(instance) as change:
        change.record(action="allow", who="alice", reason="applied")
    from bottle.audit import AuditLog

    [entry] = AuditLog(instance.state.audit_log).entries()
    assert (entry.who, entry.action, entry.reason) == ("alice", "allow", "applied")


def test_the_routes_writer_is_what_the_one_parser_reads() -> None:
    from bottle.policy import Route, parse_routes_file

    routes = Routes(routes=(Route(host="api.example.com", paths=("/v1/",), methods=("GET",)),))
    assert parse_routes_file(routes.to_yaml()) == routes
    assert parse_routes_file(Routes().to_yaml()) == Routes()


def test_the_old_operator_functions_are_doors_onto_the_instance(instance: Instance) -> None:
    from bottle import operator

    assert operator.changing is transaction
    assert operator.proposal_queue(instance).directory == instance.state.proposals
