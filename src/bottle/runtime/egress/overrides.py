"""What a request could ask a server for besides its own method: the fields frameworks read
as a method override, found the way the most lenient of them would find them.

Rails (Rack), Laravel and Symfony take a ``_method`` field of a POSTed form, multipart or
(Laravel) JSON body, or of the query, as the method. Each parses differently, so egress does
not try to be one of them: a name counts if any of them could read it as ``_method``
(:func:`claims_method`), and a body it cannot read exactly is :class:`Unreadable`, a claim it
cannot check. That means, by construction rather than by a list of tricks:

- the body is read as the server reads it: after its Content-Encoding (bounded, as DLP
  decodes), and only in a charset whose ASCII bytes mean ASCII (UTF-16 or EBCDIC are refused);
- forms and queries split on ``&`` and ``;``; names are cut at NUL and ``[`` and have spaces
  and dots read as ``_`` (PHP), so ``.method`` and ``_method[]`` are ``_method`` too;
- any Content-Type containing ``json`` is JSON (Laravel's ``isJson`` is a substring test),
  and any ``multipart/*`` is multipart (Rack reads ``multipart/mixed`` too);
- multipart is parsed strictly (one boundary, CRLF delimiters only, every header line
  well-formed, one Content-Disposition, no escapes in its quoted strings) or refused;
- a safety net: every ``method`` in the decoded body must turn up again in what the parse
  read (names, values, part headers). Parsers that drop bytes (a preamble, an epilogue) could
  drop the one a server reads.

Pure functions over str and bytes; no mitmproxy import.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from urllib.parse import unquote_plus

from bottle.runtime.egress import decoding

#: Headers by which frameworks let a request claim another method, as :func:`header_name`
#: spells them.
METHOD_OVERRIDE_HEADERS = ("x-http-method-override", "x-http-method", "x-method-override")
METHOD_OVERRIDE_PARAM = "_method"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
JSON = "application/json"

#: Charsets whose bytes below 0x80 are ASCII, one byte each: a name spelled in ASCII bytes
#: is the name the server decodes. Any other declared charset (UTF-16, UTF-32, EBCDIC such
#: as IBM037, UTF-7, ISO-2022) can spell ``_method`` in bytes egress would not recognise.
ASCII_COMPATIBLE = frozenset(
    {"utf-8", "utf8", "us-ascii", "ascii", "latin1", "latin-1"}
    | {f"iso-8859-{n}" for n in range(1, 17)}
    | {f"iso8859-{n}" for n in range(1, 17)}
    | {f"windows-{n}" for n in range(1250, 1259)}
    | {f"cp{n}" for n in range(1250, 1259)}
)

# What could spell a claimed name once decoded: "method" after a byte some server reads as
# "_" (or "+", a space in a form), or an escape (%xx, JSON's \uXXXX, a quoted-pair in a
# multipart header, an RFC 2047 word). A body with none of them holds no override to parse
# for. Tested with `in` first: a case-insensitive regex over 32 MiB costs 100 ms or more.
_CLAIM_WORD = re.compile(rb"[_.\s\[+]method")
# In a form or query only %xx escapes (and "+") decode: a claimed name starts a field with
# whitespace or one of "_ .[]", any of them escaped, then "method", any letter escaped.
# (The spaces str's \s knows in latin-1 are spelled out: a bytes pattern's \s is ASCII's.)
_FORM_CLAIM = (
    r"(?i)(?:^|[&;])(?:[+\s\x1c-\x1f\x85\xa0_.\[\]]|%[0-9a-f]{2})+"
    r"(?:m|%[46]d)(?:e|%[46]5)(?:t|%[57]4)(?:h|%[46]8)(?:o|%[46]f)(?:d|%[46]4)"
)
_MAYBE_METHOD_TEXT = re.compile(_FORM_CLAIM)
_MAYBE_METHOD_FORM = re.compile(_FORM_CLAIM.encode())
_METHOD_WORD = re.compile(rb"(?i)method")
# JSON's escape of "_" or of a letter of "method", either case.
_ESCAPED_LETTER = re.compile(rb"\\u00[4-7][0-9a-f]")
_METHOD_WORD_TEXT = re.compile(r"(?i)method")
# "method" in bytes read undecoded, any letter escaped the way some server unescapes it: a
# quoted-pair (Rack 3.1 multipart names), %xx (RFC 2231 name*, forms) or JSON's \u00XX.
_SPELLED_METHOD = re.compile(
    b"".join(
        rb"(?:\\?" + letter + rb"|%" + code + rb"|\\u00" + code + rb")"
        for letter, code in zip(
            (b"m", b"e", b"t", b"h", b"o", b"d"),
            (b"[46]d", b"[46]5", b"[57]4", b"[46]8", b"[46]f", b"[46]4"),
            strict=True,
        )
    )
)
_ENCODED_WORD = re.compile(rb"=\?[!->@-~]{1,64}\?[bBqQ]\?")  # RFC 2047, as Tomcat decodes
_BOUNDARY_WORD = re.compile(r"(?i)boundary")
_CHARSET = re.compile(r'(?i)charset[ \t]*=[ \t]*(?:"([^"]*)"|([^;,\s"]*))')
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_PARAM = re.compile(rf';[ \t]*({_TCHARS})[ \t]*=[ \t]*(?:"([^"\\\r\n]*)"|({_TCHARS}))[ \t]*')
_MEDIA = re.compile(rf"[ \t]*({_TCHARS}/{_TCHARS})[ \t]*")
_HEADER_LINE = re.compile(rf"({_TCHARS}):[ \t]*([^\r\n]*?)[ \t]*")
_BOUNDARY = re.compile(r"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
_FORM_DATA = re.compile(r"(?i)[ \t]*form-data[ \t]*")
# A quoted value may hold a ' (PHP, which also quotes with ', skips it inside "..."); an
# unquoted one may not.
_PLAIN_VALUE = r'"([^"\\;=%\r\n]*)"|([!#$&*+.^_`|~0-9A-Za-z\[\]-]+)'
_DISPOSITION_PARAM = re.compile(rf"(?i);[ \t]*(name|filename)[ \t]*=[ \t]*(?:{_PLAIN_VALUE})[ \t]*")
_PART_TYPE = re.compile(rf"(?i){_TCHARS}/{_TCHARS}(?:[ \t]*;[ \t]*charset=[0-9A-Za-z_.:-]+)?")
_CLAIM = re.compile(r"(?is)\s*[\[\]]*[_ .\[]method(?:[\[\]].*)?\s*")


class Unreadable(ValueError):
    """A body egress cannot read exactly, so it cannot say what ``_method`` a server finds."""


def header_name(name: bytes) -> bytes:
    """A header name as servers compare it: CGI-style servers (Puma, Unicorn, WEBrick) turn
    ``X_HTTP_METHOD_OVERRIDE`` into the same variable as ``X-HTTP-Method-Override``; some
    trim it. (Bytes: this runs for every header of every request.)"""
    return name.strip().lower().replace(b"_", b"-")


def claims_method(name: str) -> bool:
    """Whether a server could read the field ``name`` as ``_method``.

    PHP cuts a name at NUL (C strings) and at ``[`` (an array's base name), drops leading
    spaces and reads spaces and dots as ``_`` (an unmatched ``[`` as ``_`` too); a server
    that keeps leading spaces, or trims the name, reads it its own way. Any reading counts:
    after any whitespace, one of ``_ .[`` then ``method``, then nothing but an index or
    whitespace. ``method`` alone (JSON-RPC's field) and ``payment_method`` (Stripe's) claim
    nothing.
    """
    return _CLAIM.fullmatch(name.split("\x00", 1)[0]) is not None


def form_kinds(content_types: Iterable[str], method: str) -> list[tuple[str, str]]:
    """(kind, Content-Type value) for each way a framework could read the body as fields.

    Every Content-Type field and comma-separated value counts (a server may take the last
    of two); the media type ends at ``;``, ``,`` or a space (PHP); none at all on a POST is
    a form to Rack."""
    values = [v.strip() for field in content_types for v in field.split(",")]
    if not any(values):
        return [(FORM, "")] if method.upper() == "POST" else []
    kinds = []
    for value in values:
        lowered = value.lower()
        head = lowered.partition(";")[0].split(maxsplit=1)
        media = head[0] if head else ""
        if media == FORM:
            kinds.append((FORM, value))
        elif media.startswith("multipart/"):
            kinds.append((MULTIPART, value))
        if "json" in lowered:
            kinds.append((JSON, value))
    return kinds


def query_claims(path: str) -> list[str]:
    """The value of every query field a server could read as ``_method``."""
    _, sep, query = path.partition("?")
    if not sep or _MAYBE_METHOD_TEXT.search(query) is None:
        return []  # the common case: parsing the query costs more than the rest of the guards
    return [value for name, value in _form_fields(query) if claims_method(name)]


def body_claims(
    content_types: list[str], method: str, body: bytes, content_encoding: str
) -> list[str]:
    """The value of every field of ``body`` a server could read as ``_method``, read as each
    of its :func:`form_kinds` says; raises :class:`Unreadable` (with the reason) when egress
    cannot tell."""
    if not body:
        return []
    plain = not content_encoding.strip() and "charset" not in "".join(content_types).lower()
    if plain and not _may_claim(body, ""):
        return []  # the common case: one search of the body, whatever its kinds
    kinds = form_kinds(content_types, method)
    if not kinds:
        return []
    for _, content_type in kinds:
        _check_charset(content_type)
    if decoding.parse(content_encoding):
        _check_undecoded(body)
        body = _decoded(body, content_encoding)
    found: list[str] = []
    for kind, content_type in kinds:
        # The common case costs one search of the body (no lower-case copy of up to 32 MiB).
        if not _may_claim(body, kind):
            continue
        if kind == FORM:
            fields = _form_fields(body.decode("latin-1"))
            read = [text for field in fields for text in field]
        elif kind == MULTIPART:
            fields, read = _multipart(content_type, body)
        else:
            fields, read = _json(body)
        _check_accounted(body, read)
        found += [value for name, value in fields if claims_method(name)]
    return found


def _may_claim(body: bytes, kind: str) -> bool:
    """Whether ``body``, read as ``kind`` ("": any), could hold a claimed name."""
    if b"%" in body and kind != JSON:  # no %xx decodes in JSON
        return kind != FORM or _MAYBE_METHOD_FORM.search(body) is not None
    if kind in {"", MULTIPART} and b"*" in body and re.search(rb"(?i)name\*", body):
        return True
    if b"=?" in body and kind in {"", MULTIPART}:
        return True
    # A quoted-pair (multipart, or any kind before kinds are known) or JSON's \uXXXX.
    if b"\\" in body and (kind in {"", MULTIPART} or b"\\u" in body):
        return True
    lowered = body.lower()  # one copy at C speed, then plain searches
    if b"method" not in lowered:
        return False
    if kind == FORM:
        return _MAYBE_METHOD_FORM.search(lowered) is not None
    return _CLAIM_WORD.search(lowered) is not None


def _check_undecoded(body: bytes) -> None:
    """Rack, PHP and Tomcat never decode a request's Content-Encoding: they read its bytes as
    they are, and a gzip comment or a stored block carries any bytes the agent likes (a form,
    a multipart part after a preamble). Compressed bytes spell none of these by chance."""
    lowered = body.lower()
    if (
        _SPELLED_METHOD.search(lowered) is not None
        or _MAYBE_METHOD_FORM.search(lowered) is not None
        or _ESCAPED_LETTER.search(lowered) is not None
        or b"name*" in lowered
        or _ENCODED_WORD.search(body) is not None
    ):
        raise Unreadable(
            "its bytes before its Content-Encoding is decoded could name a method field "
            "(a server that does not decode it reads them)"
        )


def _check_charset(content_type: str) -> None:
    # Every "charset=" in the value, even inside another parameter's name: some servers
    # (older Tomcat) find it by a substring search.
    if "charset" not in content_type.lower():
        return
    for match in _CHARSET.finditer(content_type):
        name = (match.group(1) or match.group(2) or "").strip().lower().replace("_", "-")
        if name not in ASCII_COMPATIBLE:
            raise Unreadable(
                "its charset is not one whose ASCII bytes mean ASCII (send it as UTF-8)"
            )


def _decoded(body: bytes, content_encoding: str) -> bytes:
    encodings = decoding.parse(content_encoding)
    if not encodings:
        return body
    try:
        return b"".join(decoding.decode_stream(decoding.chunks(body), encodings))
    except decoding.DecodeError as exc:
        raise Unreadable(f"its Content-Encoding does not decode: {exc}") from exc


def _form_fields(text: str) -> list[tuple[str, str]]:
    # "&" and ";" both: older Rack, and many servers' query parsers, split on either.
    fields = [
        (_unquoted(name), _unquoted(value))
        for name, _, value in (part.partition("=") for part in re.split(r"[&;]", text))
    ]
    # qs (Express's extended parser) splits on "&" alone and ends a key at its first "]="
    # before any "=": "[_method]x=POST;]=DELETE" is _method=DELETE to it.
    if "]=" not in text:
        return fields
    seen = set(fields)
    for part in text.split("&"):
        cut = part.find("]=")
        if cut != -1:
            field = (_unquoted(part[: cut + 1]), _unquoted(part[cut + 2 :]))
            if field not in seen:
                seen.add(field)
                fields.append(field)
    return fields


def _unquoted(text: str) -> str:
    if "%" in text or "+" in text:
        return unquote_plus(text, encoding="latin-1")
    return text


def _json(body: bytes) -> tuple[list[tuple[str, str]], list[str]]:
    pairs: list[list[tuple[str, object]]] = []

    def keep(items: list[tuple[str, object]]) -> dict[str, object]:
        pairs.append(items)  # every pair, duplicate keys too: servers keep the first or last
        return dict(items)

    def parse(text: bytes) -> tuple[object, list[tuple[str, object]]]:
        data = json.loads(text, object_pairs_hook=keep)
        # The outermost object is the last one parsed: its pairs are the top-level fields.
        return data, (pairs[-1] if isinstance(data, dict) else [])

    try:
        documents = [parse(body)]
    except (ValueError, RecursionError):
        # JSON lines (NDJSON, JSON Lines, which a Content-Type naming json may be): each
        # line a document of its own, every one of them read.
        pairs.clear()
        try:
            documents = [parse(line) for line in body.splitlines() if line.strip()]
        except (ValueError, RecursionError) as exc:
            # Unreadable here but perhaps not to a lenient server.
            raise Unreadable("it is not valid JSON") from exc
    read: list[str] = []
    fields: list[tuple[str, str]] = []
    for data, top in documents:
        _strings(data, read)
        fields += [(k, v if isinstance(v, str) else "") for k, v in top]
    read += [key for items in pairs for key, _ in items]
    return fields, read


def _strings(data: object, out: list[str]) -> None:
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _multipart(content_type: str, body: bytes) -> tuple[list[tuple[str, str]], list[str]]:
    """Fields of a multipart body parsed strictly (RFC 2046, 7578): anything another parser
    could read differently is :class:`Unreadable`."""
    delimiter = b"--" + _boundary(content_type).encode("latin-1")
    if not body.startswith(delimiter):
        raise Unreadable("multipart: it does not start with its boundary")
    fields: list[tuple[str, str]] = []
    read: list[str] = []
    start = 0
    while True:
        after = start + len(delimiter)
        if body[after : after + 2] == b"--":
            if body[after + 2 :] not in (b"", b"\r\n"):
                raise Unreadable("multipart: bytes follow its closing boundary")
            read.append(body[start:].decode("latin-1"))
            return fields, read
        if body[after : after + 2] != b"\r\n":
            raise Unreadable("multipart: a boundary line is not followed by CRLF")
        end = body.find(delimiter, after)
        if end == -1:
            raise Unreadable("multipart: it has no closing boundary")
        # The boundary may appear only as a delimiter (after CRLF): a lenient parser also
        # splits at LF-only or mid-line ones.
        if body[end - 2 : end] != b"\r\n":
            raise Unreadable("multipart: its boundary appears other than after CRLF")
        name, value, head = _part(body[after + 2 : end - 2])
        fields.append((name, value))
        # Each region once: a copy would pay for a "method" read nowhere.
        read += [head, value, delimiter.decode("latin-1")]
        start = end


def _boundary(content_type: str) -> str:
    media = _MEDIA.match(content_type)
    if media is None:
        raise Unreadable("multipart: its Content-Type does not parse")
    params = _params(content_type[media.end() :], "Content-Type")
    boundary = params.get("boundary")
    # PHP takes the first "boundary" in the header, Rack the last "boundary=": outside its
    # own value the word may appear only as the parameter's name.
    if (
        boundary is None
        or len(_BOUNDARY_WORD.findall(content_type)) != 1 + len(_BOUNDARY_WORD.findall(boundary))
        or re.search(r"(?i)boundary\s*=", boundary)
    ):
        raise Unreadable("multipart: it needs exactly one boundary parameter")
    if not _BOUNDARY.fullmatch(boundary):
        raise Unreadable("multipart: its boundary is not a valid one")
    return boundary


def _params(text: str, where: str) -> dict[str, str]:
    params: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = _PARAM.match(text, position)
        if match is None:
            raise Unreadable(
                f"multipart: a {where} parameter does not parse strictly (a backslash "
                "or a stray character)"
            )
        key = match.group(1).lower()
        if key in params:
            raise Unreadable(f"multipart: a {where} parameter is given twice")
        params[key] = match.group(2) if match.group(2) is not None else match.group(3)
        position = match.end()
    return params


def _part(part: bytes) -> tuple[str, str, str]:
    """(field name, value, the name and file name as written) of one part.

    Only the grammar every server reads alike is taken: a Content-Disposition of form-data
    with a name and perhaps a file name, each a plain token or a quoted string with no
    ``"``, backslash, ``;``, ``=`` or ``%`` in it, and perhaps a plain Content-Type. Servers
    part ways over everything else (PHP quotes with ``'`` too; Rack 2 takes the last
    ``; name=`` of the line, even in a quoted value, and falls back to Content-ID; Go joins
    RFC 2231 continuations; Tomcat decodes RFC 2047 words; Rack 3.1 unescapes quoted-pairs),
    so on a method-limited route it is refused, not modelled.
    """
    head, blank, value = part.partition(b"\r\n\r\n")
    if not blank:
        raise Unreadable("multipart: a part has no blank line after its headers")
    text = head.decode("latin-1")
    disposition: str | None = None
    typed = False
    for line in text.split("\r\n"):
        match = _HEADER_LINE.fullmatch(line)
        if match is None:
            raise Unreadable("multipart: a part header line does not parse strictly")
        key = match.group(1).lower()
        if key == "content-disposition" and disposition is None:
            disposition = match.group(2)
        elif key == "content-type" and not typed and _PART_TYPE.fullmatch(match.group(2)):
            typed = True
        else:
            raise Unreadable(
                "multipart: a part may have one Content-Disposition and one plain "
                "Content-Type, nothing else"
            )
    form = _FORM_DATA.match(disposition or "")
    if disposition is None or form is None:
        raise Unreadable("multipart: a part's Content-Disposition is not form-data")
    params: dict[str, str] = {}
    position = form.end()
    while position < len(disposition):
        param = _DISPOSITION_PARAM.match(disposition, position)
        if param is None or param.group(1).lower() in params:
            raise Unreadable(
                "multipart: a part's Content-Disposition holds more than one plain name "
                "and file name"
            )
        params[param.group(1).lower()] = param.group(2) or param.group(3) or ""
        position = param.end()
    if "name" not in params:
        raise Unreadable("multipart: a part has no name")
    shown = f"{params['name']} {params.get('filename', '')}"
    # The name and file name are all of the header a field may be named from.
    if len(_METHOD_WORD_TEXT.findall(text)) != len(_METHOD_WORD_TEXT.findall(shown)):
        raise Unreadable("multipart: a part header spells a method outside its name")
    return params["name"], value.decode("latin-1"), shown


def _check_accounted(body: bytes, read: list[str]) -> None:
    # The parse read every byte a server could take a field from iff each "method" in the
    # body is in something it read (decoding only adds them: an escape cannot hide one).
    expected = len(_METHOD_WORD.findall(body))
    if expected and sum(len(_METHOD_WORD_TEXT.findall(text)) for text in read) < expected:
        raise Unreadable("some of it could name a method field egress did not read")
