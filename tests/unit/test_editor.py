"""The $EDITOR round trip of the operator's commands: YAML a person can edit, errors that say why."""

from __future__ import annotations

import pytest

from bottle.errors import ApplyError
from bottle_cli.editor import edit_text, parse_payload, payload_yaml

DOCKERFILE = "FROM ${BOTTLE_AGENT_IMAGE}\nRUN apt-get install -y jq\n"


def test_payload_is_commented_yaml_with_a_dockerfile_as_lines() -> None:
    text = payload_yaml("Proposal 3\nJustification: needs jq", {"dockerfile": DOCKERFILE})
    assert text.startswith("# Proposal 3\n# Justification: needs jq\n")
    assert "dockerfile: |\n  FROM ${BOTTLE_AGENT_IMAGE}\n  RUN apt-get install -y jq\n" in text
    assert parse_payload(text) == {"dockerfile": DOCKERFILE}


def test_route_payload_round_trips() -> None:
    payload = {"host": "api.example.com", "paths": ["/v1/", "^/v2/.*"], "methods": ["GET"]}
    assert parse_payload(payload_yaml("h", payload)) == payload


@pytest.mark.parametrize(
    ("text", "words"),
    [("host: [unclosed\n", "not valid YAML"), ("- a\n- b\n", "must be a mapping")],
)
def test_bad_edits_are_refused_and_change_nothing(text: str, words: str) -> None:
    with pytest.raises(ApplyError) as caught:
        parse_payload(text)
    assert words in caught.value.message
    assert "Nothing changed" in (caught.value.hint or "")


def test_an_emptied_file_cancels() -> None:
    assert parse_payload("# only comments\n") is None


def test_editor_runs_on_a_file_and_its_failure_is_reported(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    script = tmp_path / "upper.sh"
    script.write_text('#!/bin/sh\ntr a-z A-Z < "$1" > "$1.new" && mv "$1.new" "$1"\n')
    script.chmod(0o755)
    monkeypatch.setenv("EDITOR", str(script))
    monkeypatch.delenv("VISUAL", raising=False)
    assert edit_text("host: a\n", extension=".yaml") == "HOST: A\n"
    monkeypatch.setenv("EDITOR", "false")
    with pytest.raises(ApplyError, match="the editor failed, so nothing changed"):
        edit_text("host: a\n", extension=".yaml")


def test_quitting_without_saving_cancels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDITOR", "true")  # returns at once, like `code` without --wait
    monkeypatch.delenv("VISUAL", raising=False)
    assert edit_text("host: a\n", extension=".yaml") is None
