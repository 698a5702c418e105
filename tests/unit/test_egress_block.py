"""An egress-block asks for a scheme and a port: https to 443 unless the agent says otherwise,
and then the operator sees it before approving."""

from __future__ import annotations

import json

import pytest

from bottle.proposals import EgressBlock, validate_payload
from bottle.proposals.rows import summary
from tests.unit.test_supervise_server import Server, call, for_host, operator, server, text  # noqa: F401


@pytest.mark.parametrize(
    ("fields", "wire", "note"),
    [
        ({}, {("https", 443)}, ""),
        ({"port": 443}, {("https", 443)}, ""),
        ({"port": 8443}, {("https", 8443)}, " [https, port 8443]"),
        ({"scheme": "http"}, {("http", 80)}, " [plain HTTP, unencrypted, port 80]"),
        (
            {"scheme": "http", "port": 8080},
            {("http", 8080)},
            " [plain HTTP, unencrypted, port 8080]",
        ),
    ],
)
def test_the_route_is_what_was_asked_and_the_operator_sees_it(
    fields: dict[str, object], wire: set[tuple[str, int]], note: str
) -> None:
    payload = {"host": "api.example.com", "methods": ["get"], **fields}
    proposal = validate_payload("egress-block", payload)
    assert isinstance(proposal, EgressBlock)
    # Never both ways: before, a proposal without scheme opened http:80 as well.
    assert proposal.to_route().wire == frozenset(wire)
    assert proposal.summary() == f"api.example.com (GET; any path){note}"
    # The queue's fast row (no models) says the same.
    assert summary("egress-block", payload).endswith(f"(get; any path){note}")


@pytest.mark.parametrize("fields", [{"scheme": "ftp"}, {"port": 0}, {"port": 70000}])
def test_a_bad_scheme_or_port_is_refused(fields: dict[str, object]) -> None:
    from bottle.errors import ApplyError

    with pytest.raises(ApplyError):
        validate_payload("egress-block", {"host": "api.example.com", **fields})


@pytest.mark.parametrize("fields", [{"scheme": "ftp"}, {"scheme": 1}, {"port": "443"}])
def test_the_queue_row_refuses_a_bad_scheme_or_port_shape(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"scheme or payload\.port"):
        summary("egress-block", {"host": "api.example.com", **fields})


def test_the_tool_files_the_scheme_and_port_it_was_given(server: Server) -> None:  # noqa: F811
    with operator(
        server.queue, for_host("plain.test"), approved=True, by="alice", applied=True
    ) as decided:
        result = call(
            server,
            "egress-block",
            {"host": "plain.test", "scheme": "http", "port": 8080, "justification": "a mirror"},
        )
    assert not result.isError, text(result)
    assert "plain.test (any method; any path) [plain HTTP, unencrypted, port 8080]" in text(result)
    payload = json.loads(server.queue.path(decided[0].id).read_text())["payload"]
    assert (payload["scheme"], payload["port"]) == ("http", 8080)
    with operator(server.queue, for_host("tls.test"), approved=True, by="a", applied=True) as d:
        call(server, "egress-block", {"host": "tls.test", "justification": "the API"})
    payload = json.loads(server.queue.path(d[0].id).read_text())["payload"]
    assert "scheme" not in payload and "port" not in payload  # https to 443, the default
