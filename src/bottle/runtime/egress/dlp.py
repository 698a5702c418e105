"""Outbound DLP for the egress sidecar: find secrets in what the agent is about to send.

Pure functions over text and bytes; no mitmproxy import, so the host can test and reuse them.

Two kinds of finding:

- **known secrets**: the exact values of credentials the sidecar knows about (every route's
  ``auth.token_ref`` plus the variable names listed in ``BOTTLE_DLP_SECRETS``), in every form
  of :func:`encoded_forms` (plain, URL-encoded once and twice, base64 and base64url once and
  twice, hex, base32, JSON ``\\u`` escapes) and, through :func:`_views`, partly URL-encoded,
  partly JSON-escaped or broken across lines. The agent must never hold any of them, so seeing
  one leave is a leak even when the request goes to the very host the secret belongs to.
- **token shapes**: well-known credential formats (AWS key ids, GitHub/GitLab/Slack/OpenAI/
  Anthropic/Google/Stripe keys, private key blocks, JWTs), from the table ``TOKEN_PATTERNS``.

A :class:`Finding` names *what* was found and *where* (``url``, ``header <name>``, ``body``),
never the matched text, so a finding can be logged and shown to the agent as it is. Bodies
are scanned whole in bounded memory (:class:`BodyScanner`) and decoded as they say or as their
magic bytes show (:func:`scan_body`, over :mod:`.decoding`). docs/dlp.md lists what is caught.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus, unquote, unquote_plus

import ahocorasick_rs

from bottle.policy import check_env_name
from bottle.runtime.egress import decoding

#: Bodies are scanned whole, this many characters at a time (plus an overlap).
SCAN_WINDOW = 1 << 20
#: The least overlap between scan windows: longer than any token shape's distinctive part.
MIN_OVERLAP = 1024
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

#: Literal text each entry of TOKEN_PATTERNS starts with: a pattern runs only on text that
#: holds one of them, which spares ordinary bodies a dozen regex passes.
_PREFIXES: tuple[tuple[str, ...], ...] = (
    ("AKIA", "ASIA", "ABIA", "ACCA"),
    ("ghp_", "gho_", "ghu_", "ghs_", "ghr_"),
    ("github_pat_",),
    ("glpat-",),
    ("xoxb-", "xoxa-", "xoxp-", "xoxr-", "xoxs-"),
    ("sk-ant-",),
    ("sk-",),
    ("AIza",),
    ("sk_live_", "rk_live_"),
    ("-----BEGIN ",),
    ("eyJ",),
)
assert len(_PREFIXES) == len(TOKEN_PATTERNS)

#: Values that have a token's shape but are published examples, not credentials.
_DOCUMENTED_EXAMPLES = frozenset({"AKIAIOSFODNN7EXAMPLE"})


def _fragments(secret: bytes, encode: Callable[[bytes], bytes], group: int, bits: int) -> list[str]:
    """Substrings that any encoding (base64: 3-byte groups of 6-bit characters; base32: 5-byte
    groups of 5-bit characters) of a stream containing ``secret`` must contain.

    A secret embedded in a longer value (``user:token`` in Basic auth, a JSON document) lands
    at one of ``group`` alignments; for each, keep only the output characters made of the
    secret's bits alone.
    """
    out: list[str] = []
    n = len(secret)
    for offset in range(group):
        encoded = encode(b"\0" * offset + secret).decode("ascii")
        start = -(-8 * offset // bits)  # first char with no bits of the padding prefix
        end = (8 * (offset + n)) // bits  # chars past this mix in whatever follows the secret
        fragment = encoded[start:end]
        if len(fragment) >= MIN_SECRET_LEN:
            out.append(fragment)
    return out


def _base64_fragments(secret: bytes) -> list[str]:
    out: list[str] = []
    for fragment in _fragments(secret, base64.b64encode, 3, 6):
        out.append(fragment)
        urlsafe = fragment.translate(str.maketrans("+/", "-_"))
        if urlsafe != fragment:
            out.append(urlsafe)
    return out


def _json_escaped(secret: str, digits: str) -> str:
    return "".join(f"\\u{ord(c):04x}" if digits == "x" else f"\\u{ord(c):04X}" for c in secret)


def encoded_forms(secret: str) -> tuple[tuple[str, str], ...]:
    """The (form, needle) pairs to look for: each form in :data:`FORMS` that differs from
    plain. Partial encodings (some characters escaped) are caught by :func:`_views` instead."""
    raw = secret.encode("utf-8")
    forms: dict[str, str] = {secret: "plain"}
    for needle in (quote(secret, safe=""), quote_plus(secret), quote(secret)):
        forms.setdefault(needle, "url-encoded")
    for needle in (quote(quote(secret, safe=""), safe=""), quote(quote_plus(secret), safe="")):
        forms.setdefault(needle, "double url-encoded")
    single = _base64_fragments(raw)
    for needle in single:
        forms.setdefault(needle, "base64")
    for inner in single:
        for needle in _base64_fragments(inner.encode("ascii")):
            forms.setdefault(needle, "double base64")
    forms.setdefault(raw.hex(), "hex")
    forms.setdefault(raw.hex().upper(), "hex")
    for needle in _fragments(raw, base64.b32encode, 5, 5):
        forms.setdefault(needle, "base32")
        forms.setdefault(needle.lower(), "base32")
    for digits in ("x", "X"):
        forms.setdefault(_json_escaped(secret, digits), "json-escaped")
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


#: Text this long is URL-decoded byte for byte (:func:`_unquote`), shorter text by ``unquote``.
_BIG_TEXT = 4096
_JSON_U = re.compile(r"\\u([0-9a-fA-F]{4})")
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")


def _unquote(text: str, plus: bool) -> str:
    """Percent-escapes undone byte for byte (as Latin-1): far faster than ``unquote`` on big
    or binary text, and the same for the ASCII that secrets and token shapes are made of."""
    if plus:
        text = text.replace("+", " ")
    return _PERCENT.sub(lambda m: chr(int(m.group(1), 16)), text)


def _views(text: str) -> list[tuple[str, str]]:
    """(label, text): the text as sent ("") and, when it has escapes, decoded: URL-decoded
    once and twice, both ways ('+' as '+' and as space, which catches any mix of %-encoded and
    literal characters), JSON ``\\u`` escapes undone, line breaks removed (MIME base64)."""
    views = [("", text)]

    def add(label: str, view: str) -> None:
        if all(view != seen for _, seen in views):
            views.append((label, view))

    if "%" in text or "+" in text:
        for once in (
            (unquote(text), unquote_plus(text))
            if len(text) < _BIG_TEXT
            else (
                _unquote(text, False),
                _unquote(text, True),
            )
        ):
            add("url-encoded", once)
            if "%" in once:
                add("double url-encoded", _unquote(once, False))
                add("double url-encoded", _unquote(once, True))
    if "\\" in text:
        add(
            "json-escaped",
            _JSON_U.sub(lambda m: chr(int(m.group(1), 16)), text).replace("\\/", "/"),
        )
    if "\n" in text or "\r" in text:
        add("line-broken", text.replace("\r", "").replace("\n", ""))
    return views


def _named(label: str, form: str) -> str:
    """A form found only in a decoded view is named for the view (``line-broken base64``)."""
    if not label:
        return form
    return label if form == "plain" else f"{label} {form}"


@functools.lru_cache(maxsize=16)
def _needles(
    secrets: tuple[KnownSecret, ...],
) -> tuple[ahocorasick_rs.BytesAhoCorasick | None, tuple[tuple[tuple[int, str], ...], ...]]:
    """One automaton over every form of every secret (found in one pass per view), and for
    each needle the (secret index, form) pairs it stands for. Bytes (views and needles both
    as UTF-8), which the automaton searches several times faster than text."""
    owners: dict[str, list[tuple[int, str]]] = {}
    for index, secret in enumerate(secrets):
        for form, needle in secret.forms:
            owners.setdefault(needle, []).append((index, form))
    if not owners:
        return None, ()
    automaton = ahocorasick_rs.BytesAhoCorasick([_utf8(needle) for needle in owners])
    return automaton, tuple(tuple(o) for o in owners.values())


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


#: The token shapes' prefixes in one automaton: which patterns are worth running on a text.
_PREFIX_INDEX = tuple(i for i, prefixes in enumerate(_PREFIXES) for _ in prefixes)
_PREFIX_AUTOMATON = ahocorasick_rs.BytesAhoCorasick(
    [p.encode() for prefixes in _PREFIXES for p in prefixes]
)


def _shape_in(pattern: re.Pattern[str], text: str) -> bool:
    return any(m.group(0) not in _DOCUMENTED_EXAMPLES for m in pattern.finditer(text))


def _known(views: list[tuple[str, str]], secrets: tuple[KnownSecret, ...]) -> dict[int, str]:
    """For each known secret in some view: its index and the form it was first seen in."""
    automaton, owners = _needles(secrets)
    forms: dict[int, str] = {}
    if automaton is not None:
        for label, view in views:
            best: dict[int, tuple[int, str]] = {}
            raw = _utf8(view)
            for needle, start, end in automaton.find_matches_as_indexes(raw, overlapping=True):
                for index, form in owners[needle]:
                    if index not in forms and end - start > best.get(index, (0, ""))[0]:
                        best[index] = (end - start, _named(label, form))
            for index, (_, form) in best.items():
                forms[index] = form
    return forms


def secrets_in(data: bytes, secrets: tuple[KnownSecret, ...]) -> set[str]:
    """The names of the known secrets ``data`` holds in any form or decoded view (partly URL-
    or JSON-escaped, broken across lines); token shapes are not looked for."""
    latin = _as_latin1(secrets)
    return {latin[i].name for i in _known(_views(data.decode("latin-1")), latin)}


def scan_text(text: str, where: str, secrets: Iterable[KnownSecret] = ()) -> list[Finding]:
    """Findings in one piece of text: known secrets first, then token shapes (one per kind).

    A secret is reported in the first view it shows in, in the longest form found there."""
    secrets = tuple(secrets)
    views = _views(text)
    forms = _known(views, secrets)
    findings = [
        Finding(f"secret:{secret.name}", where, forms[index])
        for index, secret in enumerate(secrets)
        if index in forms
    ]
    shape_views = [view for label, view in views if label != "line-broken"]  # not split
    wanted = {
        _PREFIX_INDEX[i]
        for view in shape_views
        for i, _, _ in _PREFIX_AUTOMATON.find_matches_as_indexes(_utf8(view), overlapping=True)
    }
    seen: set[str] = set()
    for index, (kind, pattern) in enumerate(TOKEN_PATTERNS):
        if kind in seen or index not in wanted:
            continue
        if any(_shape_in(pattern, view) for view in shape_views):
            seen.add(kind)
            findings.append(Finding(kind, where))
    return findings


def decode_body(body: bytes | None, limit: int | None = None) -> str:
    """A body (its first ``limit`` bytes, if given) as text; undecodable bytes become U+FFFD."""
    if not body:
        return ""
    return (body if limit is None else body[:limit]).decode("utf-8", errors="replace")


def overlap(secrets: Iterable[KnownSecret]) -> int:
    """Characters one scan window keeps from the one before: twice the longest form (a
    decoded view is shorter than what was sent), and never less than a long token shape."""
    longest = max((len(needle) for s in secrets for _, needle in s.forms), default=0)
    return max(2 * longest, MIN_OVERLAP)


@functools.lru_cache(maxsize=16)
def _as_latin1(secrets: tuple[KnownSecret, ...]) -> tuple[KnownSecret, ...]:
    """Bodies are read as Latin-1 (one character a byte, so no piece boundary splits one and
    binary stays cheap); needles are their UTF-8 bytes read the same way. Cached: the table
    changes only on reload, and this ran for every request."""
    return tuple(
        KnownSecret(s.name, tuple((f, n.encode("utf-8").decode("latin-1")) for f, n in s.forms))
        for s in secrets
    )


class BodyScanner:
    """Findings in a body fed in pieces, in bounded memory.

    Text is scanned a window (``window`` characters) at a time, each with the last
    :func:`overlap` characters of the one before, so a secret split across pieces is still
    whole in one window. Findings are kept once per kind.
    """

    def __init__(
        self, where: str, secrets: Iterable[KnownSecret] = (), *, window: int = SCAN_WINDOW
    ) -> None:
        self.where = where
        self.secrets = _as_latin1(tuple(secrets))
        self.window = window
        self.overlap = overlap(self.secrets)
        self._pending: list[str] = []
        self._pending_len = 0
        self._carry = ""
        self._found: dict[str, Finding] = {}

    def feed(self, data: bytes) -> None:
        for start in range(0, len(data), self.window):
            text = data[start : start + self.window].decode("latin-1")
            self._pending.append(text)
            self._pending_len += len(text)
            if self._pending_len >= self.window:
                self._scan()

    def close(self) -> list[Finding]:
        self._scan()
        return list(self._found.values())

    def _scan(self) -> None:
        text = self._carry + "".join(self._pending)
        self._pending, self._pending_len = [], 0
        if len(text) > len(self._carry):
            for finding in scan_text(text, self.where, self.secrets):
                self._found.setdefault(finding.kind, finding)
        self._carry = text[-self.overlap :]


def _scan_pieces(
    pieces: Iterable[bytes], where: str, secrets: tuple[KnownSecret, ...]
) -> list[Finding]:
    scanner = BodyScanner(where, secrets)
    for piece in pieces:
        scanner.feed(piece)
    return scanner.close()


def _head(body: bytes, layers: list[str]) -> bytes:
    """The first few decoded bytes of ``body`` under ``layers`` (b"" if they do not decode)."""
    head = b""
    try:
        for piece in decoding.decode_stream(decoding.chunks(body, 4096), layers):
            head += piece
            if len(head) >= 4:
                break
    except decoding.DecodeError:
        return b""
    return head


def scan_body(
    body: bytes,
    content_encoding: str = "",
    secrets: Iterable[KnownSecret] = (),
    where: str = "body",
) -> tuple[list[Finding], str]:
    """Findings in the whole body as sent, then decoded as ``content_encoding`` says, then
    under any compression its magic bytes show but no header declared (up to
    :data:`~.decoding.MAX_LAYERS` layers in all). Also a problem ("" if none): the declared
    encoding did not decode, or some layer decoded too large to scan whole."""
    if not body:
        return [], ""
    secrets = tuple(secrets)
    found = {f.kind: f for f in _scan_pieces(decoding.chunks(body), where, secrets)}
    layers = decoding.parse(content_encoding)
    problem = ""

    def scan(layers: list[str]) -> None:
        for finding in _scan_pieces(
            decoding.decode_stream(decoding.chunks(body), layers), where, secrets
        ):
            found.setdefault(finding.kind, finding)

    if layers:
        try:
            scan(layers)
        except decoding.DecodeError as exc:
            problem = f"its content-encoding {content_encoding.strip()!r} does not decode: {exc}"
    while not problem and len(layers) < decoding.MAX_LAYERS:
        sniffed = decoding.sniff(_head(body, layers))
        if not sniffed:
            break
        layers = [sniffed, *layers]  # an inner layer: applied before the declared ones
        try:
            scan(layers)
        except decoding.TooLarge as exc:
            problem = f"it holds {sniffed} data that {exc}"
        except decoding.DecodeError:
            break  # magic bytes by chance: not compressed after all
    return list(found.values()), problem


def _scan_parts(
    url: str, headers: list[tuple[str, str]], secrets: tuple[KnownSecret, ...]
) -> list[Finding]:
    findings = scan_text(url, "url", secrets)
    for name, value in headers:
        in_name = scan_text(name, "a header name", secrets)
        findings.extend(in_name)
        # A finding names its header, unless the name is what carries the secret.
        where = "a header" if in_name else f"header {name.lower()}"
        findings.extend(scan_text(value, where, secrets))
    return findings


def scan_request(
    url: str,
    headers: Iterable[tuple[str, str]],
    body: bytes | None,
    secrets: Iterable[KnownSecret] = (),
    *,
    limit: int | None = None,
) -> list[Finding]:
    """Scan a request's URL (path and query), every header name and value, and its body as
    sent (the first ``limit`` bytes, if given). :func:`scan_body` also decodes the body."""
    secrets = tuple(secrets)
    headers = list(headers)
    # Nearly every request carries nothing: one scan over all of its text says so, and only
    # then is each place scanned on its own to say where. A line break ends every part, as
    # no header and no URL holds one, so no finding is made of two parts. (Short text only:
    # past _BIG_TEXT the URL-decoded view is made another way, which must not hide a part.)
    joined = "\n".join([url, *(f"{name}\n{value}" for name, value in headers)])
    if len(joined) < _BIG_TEXT and not scan_text(joined, "", secrets):
        findings: list[Finding] = []
    else:
        findings = _scan_parts(url, headers, secrets)
    if body:
        findings.extend(_scan_pieces(decoding.chunks(body[:limit]), "body", secrets))
    return findings


def redact(text: str, secrets: Iterable[KnownSecret] = ()) -> str:
    """``text`` with every finding replaced by ``[kind]``; wholly ``[redacted]`` if any is left.

    For fields that must go into logs or refusal bodies (host, path).
    """
    return _redact(text, tuple(secrets))


@functools.lru_cache(maxsize=1024)
def _redact(text: str, secrets: tuple[KnownSecret, ...]) -> str:
    # Cached: the same hosts and paths come by again and again, on every request.
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
