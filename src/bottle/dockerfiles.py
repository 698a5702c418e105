"""Every rule bottle applies to a Dockerfile, on one parser's view of it.

Two kinds of Dockerfile build on an agent image: a bottle's own ``agent.dockerfile`` (the
user's, :func:`check_custom_agent_dockerfile`) and a ``capability-block`` proposal (the
agent's, :func:`check_capability_dockerfile`). Both name their base with the one build
argument :data:`AGENT_IMAGE_ARG`, declared for them by :func:`buildable_dockerfile` when they
do not declare it; a capability build also gets :func:`with_build_trust` (the bottle CA and
the egress proxy for its RUN steps).

The text is parsed with ``dockerfile-parse`` rather than with line regexes: Docker joins
continuation lines *before* it reads the instruction word, so ``FR\\`` + newline + ``OM x``
is ``FROM x``, comments inside a continuation vanish, instructions are case-insensitive, and
flags can be split across lines (``COPY --fr\\`` + ``om=``). A parser that joins lines the
way Docker does is the only sound base for the checks, and every check below reads the
parser's instructions (continuations joined, comments dropped), never raw lines.

dockerfile-parse and Docker's own parser still differ in a few corners, so a capability
Dockerfile is first refused where they could disagree (:func:`_agreeable`): parser
directives (``# escape=`` changes the continuation character, ``# syntax=`` picks a frontend
that runs code), characters Python and Go treat differently (carriage returns, control
characters, non-ASCII white space, which Python's ``\\s`` and ``splitlines`` see and Docker
does not), and empty lines inside a continuation (Docker skips them and keeps joining;
dockerfile-parse ends the instruction there, which would hide what follows). Instruction
words are checked against an allow list, so a word the parser got wrong is refused, never
passed. Pure text handling: this module runs inside the supervise sidecar too.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath

from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]

#: The build argument that carries the image an agent Dockerfile builds on.
AGENT_IMAGE_ARG = "BOTTLE_AGENT_IMAGE"
#: The largest capability Dockerfile accepted, in bytes.
MAX_DOCKERFILE_BYTES = 64 * 1024
#: The name of the bottle CA in a capability build's context, and where RUN steps find it.
BUILD_CA_NAME = "bottle-ca.pem"
BUILD_CA_PATH = PurePosixPath("/run/bottle/ca/ca.pem")
#: The variables tools read to trust a CA bundle, set (as ARGs, not kept) for RUN steps.
CA_VARIABLES = (
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "GIT_SSL_CAINFO",
    "PIP_CERT",
)

#: A parser directive as either Docker builder reads one (a superset, on purpose).
DIRECTIVE_RE = re.compile(r"^\s*#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.*)$")
_CONTINUATION_RE = re.compile(r"\\[ \t]*$")
_ARG_REF_RE = re.compile(rf"^\$(\{{{AGENT_IMAGE_ARG}\}}|{AGENT_IMAGE_ARG})$")
_HEREDOC_RE = re.compile(r"<<-?\s*[\"']?[A-Za-z_]")
_FLAG_RE = re.compile(r"^--([A-Za-z-]+)(=|$)")

#: After FROM, these instructions are allowed (with the checks below on RUN, COPY, ADD, LABEL).
_ALLOWED = {"ARG", "ENV", "RUN", "WORKDIR", "LABEL", "COPY", "ADD", "EXPOSE", "MAINTAINER"}
_FORBIDDEN = {
    "ENTRYPOINT": "ENTRYPOINT is not allowed: the bottle decides how the agent starts, and a "
    "new entrypoint would replace the agent program; install tools and leave startup alone",
    "CMD": "CMD is not allowed: the bottle decides the agent's command; install tools and "
    "leave the command alone",
    "USER": "USER is not allowed: the bottle decides which user the agent runs as; RUN steps "
    "run as the agent image's build user, so drop the USER lines",
    "ONBUILD": "ONBUILD is not allowed: it would run instructions in a later build the "
    "operator never reviewed",
    "STOPSIGNAL": "STOPSIGNAL is not allowed: the bottle decides how the agent is stopped",
    "HEALTHCHECK": "HEALTHCHECK is not allowed: the bottle decides when the agent is healthy",
    "VOLUME": "VOLUME is not allowed: the bottle decides what is mounted in the agent",
    "SHELL": "SHELL is not allowed: RUN steps use the image's /bin/sh so the operator reads "
    "them as they will run; call another shell inside RUN (RUN bash -c '...')",
}
_RUN_FLAGS = {
    "mount": "it mounts caches, secrets or other images into the step",
    "network": "the build decides the network (the bottle's egress, or none)",
    "security": "it asks for an insecure (privileged) build step",
}
_COPY_FLAGS = {"chown", "chmod"}


@dataclass(frozen=True)
class Instruction:
    """One instruction as Docker reads it: continuations joined, comments gone."""

    word: str  # upper case
    value: str  # the arguments, continuations joined
    line: int  # 1-based line of its first physical line
    end_line: int  # 1-based line of its last physical line


def instructions(text: str) -> list[Instruction]:
    """The instructions of ``text`` as dockerfile-parse reads them."""
    if text and not text.endswith("\n"):
        # dockerfile-parse skips a last line of one word with no newline; Docker does not.
        text += "\n"
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode("utf-8")), env_replace=False)
    found = []
    for item in parser.structure:
        if item["instruction"] == "COMMENT":
            continue
        found.append(
            Instruction(
                word=str(item["instruction"]).upper(),
                value=str(item["value"]).strip(),
                line=int(item["startline"]) + 1,
                end_line=int(item["endline"]) + 1,
            )
        )
    return found


# --------------------------------------------------------------------------- capability


def check_capability_dockerfile(
    text: str, *, base_ref: str | None, any_literal_base: bool = False
) -> None:
    """Raise ``ValueError`` unless ``text`` is a capability Dockerfile bottle accepts.

    The rules: the first instruction is ``FROM ${BOTTLE_AGENT_IMAGE}`` (or ``FROM <base_ref>``,
    the exact agent image), optionally preceded by ``ARG BOTTLE_AGENT_IMAGE``; then only
    ARG, ENV, RUN, WORKDIR, LABEL, COPY, ADD, EXPOSE, MAINTAINER: no other FROM, no
    ENTRYPOINT/CMD/USER/ONBUILD/STOPSIGNAL/HEALTHCHECK/VOLUME/SHELL, no ``--mount``,
    ``--network`` or ``--security`` on RUN, no ``--from`` on COPY/ADD, no remote ADD sources,
    no heredocs, no parser directives. ``any_literal_base`` accepts any single image
    reference after FROM, for re-reading a file that was checked when it was filed.
    """
    if len(text.encode()) > MAX_DOCKERFILE_BYTES:
        raise ValueError(f"the Dockerfile is larger than {MAX_DOCKERFILE_BYTES} bytes")
    _agreeable(text)
    wanted = f"FROM ${{{AGENT_IMAGE_ARG}}}" + (f" or FROM {base_ref}" if base_ref else "")
    seen_from = False
    for ins in instructions(text):
        where = f"line {ins.line}"
        if not seen_from:
            if ins.word == "ARG" and re.fullmatch(rf"{AGENT_IMAGE_ARG}(=\S*)?", ins.value):
                default = ins.value.partition("=")[2]
                if default and default != base_ref and not any_literal_base:
                    raise ValueError(
                        f"{where}: ARG {AGENT_IMAGE_ARG} may not set a default of its own: "
                        f"write 'ARG {AGENT_IMAGE_ARG}' and let the build pass the agent image"
                    )
                continue
            if ins.word != "FROM":
                raise ValueError(
                    f"{where}: a capability Dockerfile must start with {wanted} "
                    f"(found {ins.word!r})"
                )
            _check_from(ins, base_ref, any_literal_base, wanted)
            seen_from = True
            continue
        _check_after_from(ins)
    if not seen_from:
        raise ValueError(f"the Dockerfile has no instructions: start it with {wanted}")


def _agreeable(text: str) -> None:
    """Refuse what dockerfile-parse and Docker might read differently (see the module doc)."""
    for char in dict.fromkeys(text):  # in order of appearance, each once
        if char in "\t\n":
            continue
        name = unicodedata.name(char, f"U+{ord(char):04X}")
        if char == "\r":
            raise ValueError(
                "the Dockerfile has carriage returns: write it with plain \\n line endings"
            )
        if unicodedata.category(char) == "Cc" or (char.isspace() and char != " "):
            raise ValueError(
                f"the Dockerfile contains the character {name}: use only spaces, tabs and "
                "newlines for white space, and no control characters"
            )
        if char == "\ufeff":
            raise ValueError("the Dockerfile contains a byte order mark (U+FEFF): remove it")
    continued = False
    started = False  # directives count only before the first instruction
    for number, raw in enumerate(text.split("\n"), start=1):
        stripped = raw.strip(" \t")
        directive = DIRECTIVE_RE.match(raw)
        if directive and not started:
            raise ValueError(
                f"line {number}: parser directive '# {directive.group(1)}=' is not allowed "
                "(# syntax= runs a frontend the operator cannot review, # escape= changes "
                "how lines join): delete that line, or put a word before the '=' if it is "
                "a comment"
            )
        if stripped.startswith("#"):
            continue  # Docker drops comment lines, inside a continuation too
        if not stripped:
            if continued:
                raise ValueError(
                    f"line {number}: an empty line inside a continuation: Docker skips it "
                    "and keeps joining lines; remove the empty line or the trailing \\ "
                    "before it"
                )
            continue
        started = True
        continued = bool(_CONTINUATION_RE.search(raw))


def _check_from(ins: Instruction, base_ref: str | None, any_literal: bool, wanted: str) -> None:
    image = ins.value
    ok = bool(_ARG_REF_RE.fullmatch(image)) or (base_ref is not None and image == base_ref)
    if not ok and any_literal:
        ok = bool(image) and not re.search(r"\s", image) and not image.startswith("-")
    if not ok:
        raise ValueError(
            f"line {ins.line}: 'FROM {image}' is not the agent image: write exactly {wanted} "
            "(no --platform, no AS, no other image)"
        )


def _check_after_from(ins: Instruction) -> None:
    where = f"line {ins.line}"
    if ins.word == "FROM":
        raise ValueError(
            f"{where}: a second FROM is not allowed: build on the agent image in a "
            "single stage (no multi-stage builds)"
        )
    if ins.word in _FORBIDDEN:
        raise ValueError(f"{where}: {_FORBIDDEN[ins.word]}")
    if ins.word not in _ALLOWED:
        raise ValueError(
            f"{where}: {ins.word!r} is not an instruction a capability Dockerfile may use "
            f"(allowed after FROM: {', '.join(sorted(_ALLOWED))}); check the spelling and "
            "the \\ continuations before it"
        )
    if ins.word in {"RUN", "COPY", "ADD"} and _HEREDOC_RE.search(ins.value):
        raise ValueError(
            f"{where}: heredocs (<<EOF) are not accepted: write the commands on RUN "
            "lines joined with && and \\ continuations"
        )
    flags, rest = _flags(ins.value)
    if ins.word == "RUN":
        for flag in flags:
            why = _RUN_FLAGS.get(flag, "bottle accepts RUN without flags only")
            raise ValueError(f"{where}: RUN --{flag} is not allowed: {why}; drop the flag")
    elif ins.word in {"COPY", "ADD"}:
        for flag in flags:
            if flag == "from":
                raise ValueError(
                    f"{where}: {ins.word} --from is not allowed: it copies from another "
                    "image; install what you need with RUN instead"
                )
            if flag not in _COPY_FLAGS:
                raise ValueError(
                    f"{where}: {ins.word} --{flag} is not allowed: only --chown and --chmod "
                    "are accepted"
                )
        if ins.word == "ADD":
            _check_add_sources(where, rest)
    elif ins.word == "LABEL":
        # Docker unquotes and unescapes label keys, so look at the text without them.
        plain = re.sub(r"[\\\"']", "", ins.value)
        reserved = re.search(r"(?:^|\s)((?:bottle|com\.docker)\.[^\s=]*)", plain, re.I)
        if reserved:
            raise ValueError(
                f"{where}: label {reserved.group(1)!r} is reserved for bottle and docker "
                "compose: pick a key outside bottle.* and com.docker.*"
            )


def _flags(value: str) -> tuple[list[str], str]:
    """The leading ``--flag`` names of an instruction's arguments, and what follows them."""
    words = value.split()
    names = []
    while words and words[0].startswith("--"):
        match = _FLAG_RE.match(words[0])
        names.append(match.group(1).lower() if match else words[0][2:])
        words.pop(0)
    return names, " ".join(words)


def _check_add_sources(where: str, args: str) -> None:
    """Refuse an ADD that the Docker daemon would fetch itself, outside the bottle's egress."""
    sources = [args]
    if args.startswith("["):
        try:
            parsed = json.loads(args)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            sources += [str(item) for item in parsed]
    for text in sources:
        lowered = text.lower()
        remote = "://" in lowered or "@" in text or re.search(r"(^|[\s\"'\[,])github\.com/", text)
        if remote or "$" in text or "\\" in text:
            raise ValueError(
                f"{where}: ADD from a URL, a git repository or a variable is not allowed: the "
                "Docker daemon would fetch it outside the bottle's egress; download with "
                "RUN curl (through egress) instead, and use COPY for files of the build"
            )


# --------------------------------------------------------------------------- custom agent


def check_custom_agent_dockerfile(text: str) -> None:
    """Raise ``ValueError`` unless the user's agent Dockerfile builds on the provider image.

    The user is trusted with their own Dockerfile (stages, directives, anything Docker
    takes); the one rule is that its last stage starts ``FROM`` the agent image argument.
    """
    stages = [ins for ins in instructions(text) if ins.word == "FROM"]
    image = _from_image(stages[-1].value) if stages else ""
    if AGENT_IMAGE_ARG not in image:
        raise ValueError(f"its last FROM does not use ${{{AGENT_IMAGE_ARG}}}")


def _from_image(value: str) -> str:
    words = [w for w in value.split() if not w.startswith("--")]
    return words[0] if words else ""


# --------------------------------------------------------------------------- building


def declares_agent_image_arg(text: str) -> bool:
    """Whether ``ARG BOTTLE_AGENT_IMAGE`` comes before the first FROM (so FROM can use it)."""
    for ins in instructions(text):
        if ins.word == "ARG" and re.fullmatch(rf"{AGENT_IMAGE_ARG}(=\S*)?", ins.value):
            return True
        if ins.word == "FROM":
            return False
    return False


def declares_arg(text: str, name: str) -> bool:
    """Whether any ``ARG <name>`` (with or without a default) is in ``text``."""
    return any(
        ins.word == "ARG" and re.match(rf"{re.escape(name)}(=|\s|$)", ins.value)
        for ins in instructions(text)
    )


def buildable_dockerfile(text: str) -> str:
    """``text`` with ``ARG BOTTLE_AGENT_IMAGE`` declared before its first FROM.

    People write ``FROM ${BOTTLE_AGENT_IMAGE}`` alone; a FROM can only use an ARG declared
    before it, so the declaration is added when the text lacks it: at the top, after any
    parser directives (which only count on the first lines).
    """
    if declares_agent_image_arg(text):
        return text
    lines = text.splitlines(keepends=True)
    head = 0
    while head < len(lines) and DIRECTIVE_RE.match(lines[head].strip()):
        head += 1
    return "".join([*lines[:head], f"ARG {AGENT_IMAGE_ARG}\n", *lines[head:]])


def with_build_trust(text: str) -> str:
    """A checked capability Dockerfile that trusts the bottle CA in its RUN steps.

    The build runs on the bottle's internal network with the egress proxy as
    ``HTTP(S)_PROXY`` (predefined build args, not kept in the image); egress intercepts
    TLS with the bottle CA, so right after the FROM the CA is copied from the build context
    to where the agent's own mount puts it at run time, and the usual CA variables are
    declared as ARGs (present for RUN steps, absent from the image's environment).
    """
    built = buildable_dockerfile(text)
    first_from = next(ins for ins in instructions(built) if ins.word == "FROM")
    lines = built.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    trust = [f"COPY {BUILD_CA_NAME} {BUILD_CA_PATH}\n"]
    trust += [f"ARG {name}={BUILD_CA_PATH}\n" for name in CA_VARIABLES]
    end = first_from.end_line
    return "".join([*lines[:end], *trust, *lines[end:]])
