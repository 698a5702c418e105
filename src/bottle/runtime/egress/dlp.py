"""Outbound DLP for the egress sidecar: find secrets in what the agent is about to send.

Pure functions over text and bytes; no mitmproxy import, so the host can test and reuse them.

Two kinds of finding:

- **known secrets**: the exact values of credentials the sidecar knows about (every route's
  ``auth.token_ref`` plus the variable names listed in ``BOTTLE_DLP_SECRETS``), in plain,
  URL-encoded and base64 form. The agent must never hold any of them, so seeing one leave is
  a leak even when the request goes to the very host the secret belongs to.
- **token shapes**: well-known credential formats (AWS key ids, GitHub/GitLab/Slack/OpenAI/
  Anthropic/Google/Stripe keys, private key blocks, JWTs), from the table ``TOKEN_PATTERNS``.

A :class:`Finding` names *what* was found and *where* (``url``, ``header <name>``, ``body``),
never the matched text, so a finding can be logged and shown to the agent as it is.
"""

from __future__ import annotations

import base64
import contextlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from bottle.policy import check_env_name

#: Bodies are scanned up to this many bytes (after content-encoding is undone).
MAX_SCAN_BYTES = 1 << 20
#: Known secrets shorter than this are ignored: they would match ordinary text.
MIN_SECRET_LEN = 8
#: Comma-separated *names* of environment variables whose values are secrets to watch for.
DLP_SECRETS_ENV = "BOTTLE_DLP_SECRETS"


@dataclass(frozen=True)
class Finding:
    """One thing DLP found: a kind and a place. Never the matched text."""

    kind: str  # "secret:GITHUB_TOKEN" or a TOKEN_PATTERNS kind like "github-token"
    where: str  # "url", "header <lower-case name>", "body", "websocket message"
    form: str = ""  # for known secrets: "plain", "url-encoded" or "base64"

    def __str__(self) -> str:
        form = f" ({self.form})" if self.form else ""
        return f"{self.kind}{form} in {self.where}"


@dataclass(frozen=True)
class KnownSecret:
    """A secret value to look for, already expanded into the forms it may travel in.

    ``repr`` shows the name only, so a stray log of this object leaks nothing.
    """

    name: str
    forms: tuple[tuple[str, str], ...] = field(repr=False)  # (form, needle)


# Well-known credential shapes. Each entry: (kind, regex). The look-arounds keep a pattern from
# firing inside a longer run of the same alphabet (a base64 blob, a hash), which is where these
# prefixes otherwise turn up by chance. Kinds are what findings, logs and refusals name.
_B = r"(?<![A-Za-z0-9_-])"  # start boundary for base64url-ish tokens
_E = r"(?![A-Za-z0-9_-])"  # end boundary for base64url-ish tokens
TOKEN_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    # AWS access key ids: long-term (AKIA), temporary (ASIA) and the rarer ABIA/ACCA.
    (
        "aws-access-key-id",
        re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}(?![A-Z0-9])"),
    ),
    # GitHub: classic PAT, OAuth, user-to-server, server-to-server, refresh; then fine-grained PATs.
    ("github-token", re.compile(_B + r"gh[pousr]_[A-Za-z0-9]{36,255}" + _E)),
    ("github-token", re.compile(_B + r"github_pat_[A-Za-z0-9_]{22,255}" + _E)),
    # GitLab personal access tokens (classic 20 chars, newer longer with dots).
    ("gitlab-token", re.compile(_B + r"glpat-[A-Za-z0-9_.-]{20,}")),
    # Slack bot/app/user/refresh/service tokens.
    ("slack-token", re.compile(_B + r"xox[baprs]-[A-Za-z0-9-]{10,}")),
    # Anthropic before OpenAI: both start with "sk-".
    ("anthropic-api-key", re.compile(_B + r"sk-ant-[A-Za-z0-9_-]{20,}")),
    # OpenAI: project/service-account/admin keys, legacy 48-char keys, and any key carrying the
    # "T3BlbkFJ" marker (base64 of "OpenAI") that OpenAI embeds in its keys.
    (
        "openai-api-key",
        re.compile(
            _B + r"sk-(?:(?:proj|svcacct|admin)-[A-Za-z0-9_-]{20,}"
            r"|[A-Za-z0-9]{48}(?![A-Za-z0-9])"
            r"|[A-Za-z0-9_-]*T3BlbkFJ[A-Za-z0-9_-]*)"
        ),
    ),
    # Google API keys.
    ("google-api-key", re.compile(_B + r"AIza[0-9A-Za-z_-]{35}" + _E)),
    # Stripe live secret and restricted keys.
    ("stripe-live-key", re.compile(_B + r"(?:sk|rk)_live_[0-9A-Za-z]{16,}")),
    # PEM/OpenSSH/PGP private keys (RSA, EC, DSA, OPENSSH, ENCRYPTED, PGP ... BLOCK).
    ("private-key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ ){0,3}PRIVATE KEY(?: BLOCK)?-----")),
    # JSON Web Tokens: base64url JSON header and payload (both start with '{"' -> "eyJ").
    ("jwt", re.compile(_B + r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*")),
)

#: Values that have a token's shape but are published examples, not credentials.
_DOCUMENTED_EXAMPLES = frozenset({"AKIAIOSFODNN7EXAMPLE"})


def _base64_fragments(secret: bytes) -> list[str]:
    """Substrings that any base64 encoding of a stream containing ``secret`` must contain.

    A secret embedded in a longer value (``user:token`` in Basic auth, a JSON document) lands
    at one of three alignments in the 3-byte groups; for each, keep only the output characters
    made of the secret's bits alone.
    """
    out: list[str] = []
    n = len(secret)
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret).decode("ascii")
        start = (8 * offset + 5) // 6  # first char with no bits of the padding prefix
        end = (8 * (offset + n)) // 6  # chars past this mix in whatever follows the secret
        fragment = encoded[start:end]
        if len(fragment) >= MIN_SECRET_LEN:
            out.append(fragment)
            urlsafe = fragment.translate(str.maketrans("+/", "-_"))
            if urlsafe != fragment:
                out.append(urlsafe)
    return out


def encoded_forms(secret: str) -> tuple[tuple[str, str], ...]:
    """The (form, needle) pairs to look for: plain, URL-encoded variants, base64 fragments."""
    forms: dict[str, str] = {secret: "plain"}
    for needle in (quote(secret, safe=""), quote_plus(secret), quote(secret)):
        forms.setdefault(needle, "url-encoded")
    for needle in _base64_fragments(secret.encode("utf-8")):
        forms.setdefault(needle, "base64")
    return tuple((form, needle) for needle, form in forms.items())


def secret_names(token_refs: Iterable[str], environ: Mapping[str, str]) -> tuple[str, ...]:
    """The route credentials plus the names listed in ``BOTTLE_DLP_SECRETS`` (bad names skipped)."""
    names = list(token_refs)
    for raw in environ.get(DLP_SECRETS_ENV, "").split(","):
        name = raw.strip()
        with contextlib.suppress(ValueError):  # a bad name: no variable can hold a secret
            names.append(check_env_name(name))
    return tuple(dict.fromkeys(names))


def known_secrets(names: Iterable[str], environ: Mapping[str, str]) -> tuple[KnownSecret, ...]:
    """Look the names up in ``environ``; unset, empty and too-short values are skipped."""
    out: list[KnownSecret] = []
    for name in dict.fromkeys(names):
        value = environ.get(name, "").strip()
        if len(value) >= MIN_SECRET_LEN:
            # Longest needle first, so redact() replaces a whole encoding, not a piece of it.
            forms = tuple(sorted(encoded_forms(value), key=lambda fn: -len(fn[1])))
            out.append(KnownSecret(name=name, forms=forms))
    return tuple(out)


def _views(text: str) -> list[str]:
    """The text as sent and, when it has escapes, URL-decoded both ways ('+' as '+' and as
    space), which catches any mix of %-encoded and literal characters."""
    views = [text]
    if "%" in text or "+" in text:
        for decoded in (unquote(text), unquote_plus(text)):
            if decoded not in views:
                views.append(decoded)
    return views


def _secret_form(secret: KnownSecret, views: list[str]) -> str:
    """The form ``secret`` appears in ("" if absent); anything found only after URL-decoding
    is reported as url-encoded."""
    for index, view in enumerate(views):
        for form, needle in secret.forms:
            if needle in view:
                return form if index == 0 else "url-encoded"
    return ""


def _shape_in(pattern: re.Pattern[str], text: str) -> bool:
    return any(m.group(0) not in _DOCUMENTED_EXAMPLES for m in pattern.finditer(text))


def scan_text(text: str, where: str, secrets: Iterable[KnownSecret] = ()) -> list[Finding]:
    """Findings in one piece of text: known secrets first, then token shapes (one per kind)."""
    views = _views(text)
    findings: list[Finding] = []
    for secret in secrets:
        form = _secret_form(secret, views)
        if form:
            findings.append(Finding(f"secret:{secret.name}", where, form))
    seen: set[str] = set()
    for kind, pattern in TOKEN_PATTERNS:
        if kind not in seen and any(_shape_in(pattern, view) for view in views):
            seen.add(kind)
            findings.append(Finding(kind, where))
    return findings


def decode_body(body: bytes | None, limit: int = MAX_SCAN_BYTES) -> str:
    """The first ``limit`` bytes of a body as text; undecodable bytes become U+FFFD."""
    if not body:
        return ""
    return body[:limit].decode("utf-8", errors="replace")


def scan_request(
    url: str,
    headers: Iterable[tuple[str, str]],
    body: bytes | None,
    secrets: Iterable[KnownSecret] = (),
    *,
    limit: int = MAX_SCAN_BYTES,
) -> list[Finding]:
    """Scan a request's URL, every header value and the first ``limit`` bytes of its body."""
    secrets = tuple(secrets)
    findings = scan_text(url, "url", secrets)
    for name, value in headers:
        findings.extend(scan_text(value, f"header {name.lower()}", secrets))
    text = decode_body(body, limit)
    if text:
        findings.extend(scan_text(text, "body", secrets))
    return findings


def redact(text: str, secrets: Iterable[KnownSecret] = ()) -> str:
    """``text`` with every finding replaced by ``[kind]``; wholly ``[redacted]`` if any is left.

    For fields that must go into logs or refusal bodies (host, path).
    """
    secrets = tuple(secrets)
    if not scan_text(text, "", secrets):
        return text  # the common case, on every request: nothing to replace
    out = text
    for secret in secrets:
        for _form, needle in secret.forms:
            out = out.replace(needle, f"[secret:{secret.name}]")
    for kind, pattern in TOKEN_PATTERNS:
        out = pattern.sub(f"[{kind}]", out)
    if scan_text(out, "", secrets):
        return "[redacted]"
    return out
