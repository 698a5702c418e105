"""Proposals: validation the agent can act on, and a queue of files that never tears."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import pytest

from bottle.dockerfiles import buildable_dockerfile
from bottle.errors import ApplyError
from bottle.proposals import (
    MAX_PAYLOAD_BYTES,
    CapabilityBlock,
    EgressBlock,
    GitPushAllow,
    PipelockBlock,
    Proposal,
    ProposalQueue,
    check_dockerfile,
    describe,
    request_fields,
    rows,
    validate_payload,
)
from tests.conftest import FakeClock

AGENT = "bottle-agent:abc123"


@pytest.fixture
def queue(tmp_path: Path) -> ProposalQueue:
    return ProposalQueue(tmp_path / "proposals")


def _files(queue: ProposalQueue) -> list[str]:
    if not queue.directory.exists():
        return []
    names = queue.directory.iterdir()
    return sorted(p.name for p in names if p.is_file() and not p.name.startswith("."))


# ----------------------------------------------------------------------------- payloads


def test_egress_block_normalises_like_a_route() -> None:
    payload = validate_payload(
        "egress-block", {"host": "API.Example.com.", "paths": ["/v1/"], "methods": ["get"]}
    )
    assert isinstance(payload, EgressBlock)
    assert payload.host == "api.example.com"
    assert payload.methods == ("GET",)
    route = payload.to_route()
    assert route.matches("GET", "api.example.com", "/v1/models", {})
    assert route.auth is None


def test_egress_block_drops_auth() -> None:
    payload = validate_payload(
        "egress-block",
        {"host": "api.example.com", "auth": {"scheme": "bearer", "token_ref": "GITHUB_TOKEN"}},
    )
    assert isinstance(payload, EgressBlock)
    assert "auth" not in payload.model_dump()
    assert payload.to_route().auth is None


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"host": "bad host"}, ["payload.host", "not a host name"]),
        ({"host": "https://x.com/"}, ["payload.host", "no scheme"]),
        ({"host": "x.com", "paths": ["v1"]}, ["payload.paths.0", "starting with '/'"]),
        ({"host": "x.com", "paths": ["^(("]}, ["payload.paths.0", "bad path regex"]),
        ({"host": "x.com", "methods": ["FETCH"]}, ["payload.methods.0", "unknown HTTP method"]),
        ({"host": "x.com", "hosts": ["y.com"]}, ["payload.hosts", "Extra inputs"]),
        ({}, ["payload.host", "required"]),
    ],
)
def test_bad_egress_block_says_what_to_fix(payload: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ApplyError) as caught:
        validate_payload("egress-block", payload)
    for word in words:
        assert word in caught.value.message
    assert caught.value.hint and "nothing was queued" in caught.value.hint


def test_pipelock_block_derives_the_host() -> None:
    payload = validate_payload("pipelock-block", {"url": "https://Files.PythonHosted.org/x?y=1"})
    assert isinstance(payload, PipelockBlock)
    assert payload.host == "files.pythonhosted.org"
    assert payload.to_route().paths == ()
    bare = validate_payload("pipelock-block", {"url": "pypi.org"})
    assert bare.host == "pypi.org"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("url", "word"),
    [
        ("ftp://x.com/file", "only http and https"),
        ("https:///path", "names no host"),
        ("https://bad_host!/", "not a host name"),
    ],
)
def test_bad_pipelock_url(url: str, word: str) -> None:
    with pytest.raises(ApplyError, match=word):
        validate_payload("pipelock-block", {"url": url})


def test_pipelock_host_must_match_url() -> None:
    with pytest.raises(ApplyError, match="does not match"):
        validate_payload("pipelock-block", {"url": "https://a.com/", "host": "b.com"})


def test_unknown_tool_and_oversized_payload() -> None:
    with pytest.raises(ApplyError, match="unknown proposal tool"):
        validate_payload("root-please", {})
    with pytest.raises(ApplyError, match="bytes, more than"):
        validate_payload(
            "egress-block", {"host": "x.com", "paths": ["/" + "a" * MAX_PAYLOAD_BYTES]}
        )


GOOD_DOCKERFILES = [
    "FROM ${BOTTLE_AGENT_IMAGE}\nRUN apt-get update && apt-get install -y jq\n",
    "FROM $BOTTLE_AGENT_IMAGE\nRUN true\n",
    "# a comment\nARG BOTTLE_AGENT_IMAGE\nFROM ${BOTTLE_AGENT_IMAGE}\nENV A=1\n",
    f"FROM {AGENT}\nRUN pip install ruff \\\n    # comment inside a continuation\n    black\n",
    # ENTRYPOINT here is an argument of RUN, joined by the continuation
    "FROM ${BOTTLE_AGENT_IMAGE}\nRUN echo \\\n  ENTRYPOINT\n",
]


@pytest.mark.parametrize("dockerfile", GOOD_DOCKERFILES)
def test_good_dockerfiles(dockerfile: str) -> None:
    payload = validate_payload("capability-block", {"dockerfile": dockerfile}, base_ref=AGENT)
    assert isinstance(payload, CapabilityBlock)


@pytest.mark.parametrize(
    ("dockerfile", "word"),
    [
        ("FROM ubuntu:24.04\nRUN true\n", "is not the agent image"),
        ("FROM other:1\n", "FROM ${BOTTLE_AGENT_IMAGE} or FROM bottle-agent:abc123"),
        ("FROM ${BOTTLE_AGENT_IMAGE} AS build\n", "no AS"),
        ("FROM --platform=linux/arm64 ${BOTTLE_AGENT_IMAGE}\n", "no --platform"),
        ("RUN true\nFROM ${BOTTLE_AGENT_IMAGE}\n", "must start with"),
        ("ARG BOTTLE_AGENT_IMAGE=evil:1\nFROM ${BOTTLE_AGENT_IMAGE}\n", "default of its own"),
        ("FROM ${BOTTLE_AGENT_IMAGE}\nFROM alpine\n", "second FROM"),
        ('FROM ${BOTTLE_AGENT_IMAGE}\nENTRYPOINT ["/bin/sh"]\n', "ENTRYPOINT is not allowed"),
        ('FROM ${BOTTLE_AGENT_IMAGE}\ncmd ["sh"]\n', "CMD is not allowed"),
        ("FROM ${BOTTLE_AGENT_IMAGE}\nUSER root\n", "USER is not allowed"),
        ("FROM ${BOTTLE_AGENT_IMAGE}\nONBUILD RUN x\n", "ONBUILD is not allowed"),
        ("FROM ${BOTTLE_AGENT_IMAGE}\nENTRYPOINT\t/bin/sh\n", "ENTRYPOINT is not allowed"),
        ("FROM\t${BOTTLE_AGENT_IMAGE}\n  user\troot\n", "USER is not allowed"),
        ("FROM ${BOTTLE_AGENT_IMAGE}\nCOPY --from=alpine /bin/sh /x\n", "--from is not allowed"),
        ("FROM ${BOTTLE_AGENT_IMAGE}\nRUN <<EOF\nENTRYPOINT\nEOF\n", "heredocs"),
        ("# syntax=evil/frontend\nFROM ${BOTTLE_AGENT_IMAGE}\n", "parser directive"),
        ("# only a comment\n", "no instructions"),
    ],
)
def test_bad_dockerfiles_say_why(dockerfile: str, word: str) -> None:
    with pytest.raises(ApplyError) as caught:
        validate_payload("capability-block", {"dockerfile": dockerfile}, base_ref=AGENT)
    assert word in caught.value.message


def test_literal_base_needs_the_exact_ref() -> None:
    with pytest.raises(ValueError, match="not the agent image"):
        check_dockerfile(f"FROM {AGENT}\n", base_ref=None)
    check_dockerfile(f"FROM {AGENT}\n", base_ref=AGENT)


@pytest.mark.parametrize(
    ("text", "added"),
    [
        ("FROM ${BOTTLE_AGENT_IMAGE}\nRUN true\n", True),
        ("# tools\nFROM ${BOTTLE_AGENT_IMAGE}\n", True),
        ("ARG BOTTLE_AGENT_IMAGE\nFROM ${BOTTLE_AGENT_IMAGE}\n", False),
        ("# tools\narg BOTTLE_AGENT_IMAGE\nFROM $BOTTLE_AGENT_IMAGE\n", False),
    ],
)
def test_buildable_dockerfile_declares_the_base_arg_once(text: str, added: bool) -> None:
    built = buildable_dockerfile(text)
    assert built == ("ARG BOTTLE_AGENT_IMAGE\n" + text if added else text)
    check_dockerfile(built, base_ref=AGENT)  # still a Dockerfile bottle accepts


# ----------------------------------------------------------------------------- the queue


def test_create_writes_the_documented_file(queue: ProposalQueue) -> None:
    proposal = queue.create(
        "egress-block", {"host": "pypi.org", "paths": ["/simple/"]}, "  pip needs the index  "
    )
    assert proposal.id == 1
    data = json.loads(queue.path(1).read_text())
    assert data == {
        "id": 1,
        "tool": "egress-block",
        "created_at": data["created_at"],
        "status": "pending",
        "justification": "pip needs the index",
        "payload": {
            "tool": "egress-block",
            "host": "pypi.org",
            "paths": ["/simple/"],
            "methods": [],
        },
        "decision": None,
    }
    assert data["created_at"].endswith("Z")
    assert oct(queue.path(1).stat().st_mode & 0o777) == oct(0o644)
    assert queue.get(1) == proposal


def test_ids_are_sequential(queue: ProposalQueue) -> None:
    ids = [queue.create("pipelock-block", {"url": f"https://h{i}.com"}, "j").id for i in range(3)]
    assert ids == [1, 2, 3]
    assert _files(queue) == ["1.json", "2.json", "3.json"]


def test_concurrent_creates_never_share_an_id(queue: ProposalQueue) -> None:
    results: list[int] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(10):
                p = queue.create("egress-block", {"host": f"w{n}-{i}.example.com"}, "j")
                results.append(p.id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors
    assert sorted(results) == list(range(1, 61))
    listing = queue.list()
    assert len(listing.proposals) == 60
    assert listing.problems == ()
    hosts = {p.payload.host for p in listing.proposals}  # type: ignore[union-attr]
    assert len(hosts) == 60


def test_invalid_proposal_writes_nothing(queue: ProposalQueue) -> None:
    with pytest.raises(ApplyError):
        queue.create("egress-block", {"host": "not a host"}, "j")
    with pytest.raises(ApplyError, match="justification is empty"):
        queue.create("egress-block", {"host": "ok.com"}, "   ")
    with pytest.raises(ApplyError, match="justification is"):
        queue.create("egress-block", {"host": "ok.com"}, "x" * 5000)
    assert _files(queue) == []
    assert queue.list().proposals == ()


def test_capability_base_ref_is_passed_through(queue: ProposalQueue) -> None:
    dockerfile = f"FROM {AGENT}\nRUN true\n"
    with pytest.raises(ApplyError):
        queue.create("capability-block", {"dockerfile": dockerfile}, "j")
    proposal = queue.create("capability-block", {"dockerfile": dockerfile}, "j", base_ref=AGENT)
    # Read back without the ref: the file still loads.
    assert queue.get(proposal.id).payload == proposal.payload


def test_get_unknown_id(queue: ProposalQueue) -> None:
    with pytest.raises(ApplyError, match="no proposal 7"):
        queue.get(7)


def test_list_reports_malformed_files_and_filters(queue: ProposalQueue) -> None:
    queue.create("egress-block", {"host": "a.com"}, "j")
    queue.create("egress-block", {"host": "b.com"}, "j")
    queue.decide(2, approved=False, by="op", reason="no")
    (queue.directory / "3.json").write_text("{not json")
    (queue.directory / "4.json").write_text(json.dumps({"id": 4, "tool": "egress-block"}))
    (queue.directory / "5.json").write_text(queue.path(1).read_text())  # says id 1
    (queue.directory / "notes.txt").write_text("ignored")
    old = queue.directory / "6.json"
    old.touch()
    os.utime(old, (time.time() - 60, time.time() - 60))
    (queue.directory / "7.json").touch()  # a create in flight: not a problem yet

    listing = queue.list()
    assert [p.id for p in listing.proposals] == [1, 2]
    problems = "\n".join(listing.problems)
    assert "3.json: not JSON" in problems
    assert "4.json" in problems
    assert "5.json: the file says id 1" in problems
    assert "6.json: empty file" in problems
    assert "7.json" not in problems
    assert [p.id for p in queue.list(status="pending").proposals] == [1]
    assert [p.id for p in queue.list(status="rejected").proposals] == [2]
    with pytest.raises(ApplyError, match="unreadable"):
        queue.get(3)


def test_a_file_nested_past_the_parser_is_one_bad_file(queue: ProposalQueue) -> None:
    # Review 5, F4: "[[[[…" raised RecursionError out of list, get, the host's pending
    # rows and supervise's index rebuild; the queue behind it was hidden.
    from bottle.proposals.rows import read_row

    queue.create("egress-block", {"host": "a.com"}, "j")
    (queue.directory / "2.json").write_text("[" * 100_000)
    listing = queue.list()
    assert [p.id for p in listing.proposals] == [1]
    assert "2.json: nested deeper than any proposal is" in "\n".join(listing.problems)
    with pytest.raises(ApplyError, match="unreadable"):
        queue.get(2)
    with pytest.raises(ValueError, match="nested deeper"):
        read_row(queue.directory / "2.json", 2)
    assert queue.rebuild_index() == 2  # indexed, so every listing names it


def test_decide_approve_and_reject(queue: ProposalQueue) -> None:
    queue.create("egress-block", {"host": "a.com"}, "j")
    queue.create("egress-block", {"host": "b.com"}, "j")
    approved = queue.decide(1, approved=True, by="alice", reason="fine", applied=True)
    assert approved.status == "approved"
    assert approved.decision is not None
    assert approved.decision.applied and not approved.decision.edited
    assert queue.get(1) == approved
    rejected = queue.decide(2, approved=False, by="bob", reason="too broad")
    assert rejected.status == "rejected"
    data = json.loads(queue.path(2).read_text())
    assert data["decision"]["by"] == "bob"
    assert data["decision"]["reason"] == "too broad"
    assert data["decision"]["applied"] is False
    assert data["decision"]["at"].endswith("Z")


def test_a_decision_names_the_new_image_only_when_there_is_one(queue: ProposalQueue) -> None:
    from bottle.proposals.models import describe

    queue.create("egress-block", {"host": "a.com"}, "j")
    queue.create("capability-block", {"dockerfile": "FROM ${BOTTLE_AGENT_IMAGE}\n"}, "j")
    queue.decide(1, approved=True, by="op", applied=True)
    # An older supervise, still running, reads this file: no key it does not know.
    assert "image" not in json.loads(queue.path(1).read_text())["decision"]
    swapped = queue.decide(2, approved=True, by="op", applied=True, image="bottle-cap:1")
    assert json.loads(queue.path(2).read_text())["decision"]["image"] == "bottle-cap:1"
    assert queue.get(2) == swapped
    assert describe(swapped).endswith("was built; your container now runs bottle-cap:1.")


def test_decide_refuses_a_decided_proposal(queue: ProposalQueue) -> None:
    queue.create("egress-block", {"host": "a.com"}, "j")
    queue.decide(1, approved=False, by="op")
    before = queue.path(1).read_bytes()
    with pytest.raises(ApplyError, match="already rejected by op"):
        queue.decide(1, approved=True, by="op", applied=True)
    assert queue.path(1).read_bytes() == before


def test_decide_refuses_nonsense(queue: ProposalQueue) -> None:
    queue.create("egress-block", {"host": "a.com"}, "j")
    with pytest.raises(ApplyError, match="cannot be applied"):
        queue.decide(1, approved=False, by="op", applied=True)
    with pytest.raises(ApplyError, match=r"decision\.by"):
        queue.decide(1, approved=True, by="")
    with pytest.raises(ApplyError, match="no proposal 9"):
        queue.decide(9, approved=True, by="op")
    assert queue.get(1).status == "pending"


def test_decide_with_an_edited_payload(queue: ProposalQueue) -> None:
    queue.create("egress-block", {"host": "api.example.com"}, "j")
    with pytest.raises(ApplyError, match=r"payload\.paths\.0"):
        queue.decide(1, approved=True, by="op", edited_payload={"host": "x.com", "paths": ["x"]})
    decided = queue.decide(
        1,
        approved=True,
        by="op",
        applied=True,
        edited_payload={"host": "api.example.com", "paths": ["/v1/"], "methods": ["GET"]},
    )
    assert decided.decision is not None and decided.decision.edited
    assert decided.payload.paths == ("/v1/",)  # type: ignore[union-attr]
    assert decided.decision.original_payload == EgressBlock(host="api.example.com")
    assert "edited your request" in describe(decided)


def test_decide_with_an_unchanged_edit_is_not_edited(queue: ProposalQueue) -> None:
    queue.create("egress-block", {"host": "a.com"}, "j")
    decided = queue.decide(1, approved=True, by="op", edited_payload={"host": "A.com"})
    assert decided.decision is not None and not decided.decision.edited


def test_no_temp_files_are_left(queue: ProposalQueue) -> None:
    queue.create("egress-block", {"host": "a.com"}, "j")
    queue.decide(1, approved=True, by="op")
    leftovers = [p.name for p in queue.directory.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


def test_wait_returns_pending_when_time_runs_out(
    queue: ProposalQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bottle.proposals.queue as queue_module

    queue.create("egress-block", {"host": "a.com"}, "j")
    clock = FakeClock()  # the wait runs out without the wall-clock wait
    monkeypatch.setattr(queue_module, "time", clock)
    start = clock.now
    proposal = queue.wait(1, timeout_s=0.15, poll_s=0.05)
    assert proposal.status == "pending"
    # It waited out its bound, in polls of the size asked for, and no longer.
    assert clock.now >= start + 0.15 and clock.slept < 0.15 + 0.05


def test_wait_sees_a_decision(queue: ProposalQueue, monkeypatch: pytest.MonkeyPatch) -> None:
    import bottle.proposals.queue as queue_module

    queue.create("egress-block", {"host": "a.com"}, "j")

    class DecidedWhileItWaits(FakeClock):
        def sleep(self, seconds: float) -> None:
            super().sleep(seconds)
            if self.slept == seconds:  # the operator answers during the first poll's wait
                queue.decide(1, approved=True, by="op")

    clock = DecidedWhileItWaits()
    monkeypatch.setattr(queue_module, "time", clock)
    proposal = queue.wait(1, timeout_s=10, poll_s=0.02)
    assert proposal.status == "approved"
    assert clock.slept == 0.02  # pending at the first look; seen at the next, no later


def test_proposal_model_rejects_inconsistent_files() -> None:
    base = {
        "id": 1,
        "tool": "egress-block",
        "created_at": "2025-01-01T00:00:00Z",
        "justification": "j",
        "payload": {"host": "a.com"},
    }
    assert Proposal.model_validate(base).payload.tool == "egress-block"
    with pytest.raises(ValueError, match="payload is for"):
        Proposal.model_validate({**base, "payload": {"tool": "pipelock-block", "url": "a.com"}})
    with pytest.raises(ValueError, match="decided one has one"):
        Proposal.model_validate({**base, "status": "approved"})


def test_describe_tells_the_agent_what_happened(queue: ProposalQueue) -> None:
    queue.create("egress-block", {"host": "a.com", "methods": ["GET"]}, "j")
    queue.create("egress-block", {"host": "b.com"}, "j")
    queue.create("pipelock-block", {"url": "https://c.com/x"}, "j")
    assert describe(queue.get(1)).startswith("pending, id 1")
    assert "call proposal-status" in describe(queue.get(1))
    text = describe(queue.decide(1, approved=True, by="op", applied=True))
    assert "approved and applied" in text and "a.com (GET; any path)" in text
    text = describe(queue.decide(2, approved=False, by="op", reason="use the mirror"))
    assert text.startswith("rejected, id 2") and "use the mirror" in text
    text = describe(queue.decide(3, approved=True, by="op", applied=False, error="reload failed"))
    assert "not applied" in text and "reload failed" in text


@pytest.mark.parametrize(
    ("url", "wire"),
    [
        ("https://files.example.com/x", None),
        ("http://files.example.com/x", None),
        ("https://files.example.com:443/x", None),
        ("http://files.example.com:8080/x", ("http", 8080)),
        ("https://files.example.com:8443/x", ("https", 8443)),
    ],
)
def test_pipelock_block_keeps_a_non_default_port(url: str, wire: tuple[str, int] | None) -> None:
    payload = validate_payload("pipelock-block", {"url": url})
    assert isinstance(payload, PipelockBlock)
    route = payload.to_route()
    assert (None if route.port is None else (route.scheme, route.port)) == wire
    if wire is not None:
        assert route.matches("GET", "files.example.com", "/x", {}, scheme=wire[0], port=wire[1])
        assert f"port {wire[1]}" in payload.summary()


# ----------------------------------------------------------------------------- git-push-allow

PUSH = {
    "remote": "origin",
    "ref": "refs/heads/main",
    "commit": "A" * 40,
    "finding": "1234567890ab conf.txt:2: gitleaks:generic-api-key",
}


def test_git_push_allow_names_one_push() -> None:
    payload = validate_payload("git-push-allow", PUSH)
    assert isinstance(payload, GitPushAllow)
    assert payload.commit == "a" * 40  # as git prints it
    assert payload.summary() == (
        "push aaaaaaaaaaaa to origin refs/heads/main despite the secret scan"
    )
    assert rows.summary("git-push-allow", request_fields(payload)) == payload.summary()


@pytest.mark.parametrize(
    ("field", "value", "word"),
    [
        ("commit", "main", "payload.commit"),
        ("commit", "a" * 39, "payload.commit"),
        ("ref", "main", "payload.ref"),
        ("ref", "refs/heads/../../x", "not a ref name"),
        ("ref", "refs/heads/*", "payload.ref"),
        ("ref", "refs/heads/a.lock", "not a ref name"),
        ("remote", "Origin/x", "payload.remote"),
        ("finding", "", "payload.finding"),
    ],
)
def test_bad_git_push_allow_says_what_to_fix(field: str, value: str, word: str) -> None:
    with pytest.raises(ApplyError, match=re.escape(word)):
        validate_payload("git-push-allow", PUSH | {field: value})


def test_git_push_allow_takes_nothing_more() -> None:
    with pytest.raises(ApplyError, match=r"payload\.refs"):
        validate_payload("git-push-allow", PUSH | {"refs": ["refs/heads/*"]})


def test_an_approved_git_push_allow_tells_the_agent_to_push_again(queue: ProposalQueue) -> None:
    queue.create("git-push-allow", PUSH, "a fixture")
    text = describe(queue.decide(1, approved=True, by="op", applied=True))
    assert "approved and applied" in text and "egress" not in text
    assert f"once, the {'a' * 12} to origin refs/heads/main" in text and "Push exactly" in text
