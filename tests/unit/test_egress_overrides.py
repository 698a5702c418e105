"""The method-override readers (pure: no mitmproxy). The addon's refusals over the same
cases are in test_egress_addon (test_a_body_that_could_claim_another_method_is_refused...)."""

from __future__ import annotations

import gzip
import struct
import zlib

import pytest

from bottle.runtime.egress import overrides
from bottle.runtime.egress.overrides import FORM, JSON, MULTIPART, Unreadable


@pytest.mark.parametrize(
    ("name", "claims"),
    [
        ("_method", True),
        ("_METHOD", True),
        (".method", True),  # PHP: a dot is read as "_"
        (" method", True),  # a space is "_" to a server that keeps it
        (" .method", True),  # PHP drops the leading space, then the dot is "_"
        ("_method[]", True),  # an array's base name
        ("_method[x", True),
        ("[method", True),  # an unmatched "[" read as "_"
        ("_method\x00junk", True),  # a C string ends at NUL
        ("[_method]", True),  # Rack 2's normalize_params and qs strip the brackets
        ("_method]", True),
        ("]_method", True),
        ("[_method", True),
        (" _method ", True),
        ("method", False),  # JSON-RPC's field: no framework's override
        ("payment_method", False),  # Stripe's
        ("x_method", False),
        ("_methods", False),
        ("__method", False),
    ],
)
def test_a_name_claims_the_method_field_however_a_server_reads_it(name: str, claims: bool) -> None:
    assert overrides.claims_method(name) is claims


@pytest.mark.parametrize(
    ("types", "method", "kinds"),
    [
        ([], "POST", [FORM]),  # Rack reads a POST without a type as a form
        ([], "PUT", []),
        (["application/x-www-form-urlencoded junk"], "POST", [FORM]),  # PHP ends it at a space
        (["multipart/mixed; boundary=b"], "POST", [MULTIPART]),  # Rack parses it too
        (["text/plain; a=/json"], "POST", [JSON]),  # Laravel: any "json" substring
        (["application/octet-stream"], "POST", []),
        (["text/plain, application/json"], "POST", [JSON]),
    ],
)
def test_form_kinds(types: list[str], method: str, kinds: list[str]) -> None:
    assert [kind for kind, _ in overrides.form_kinds(types, method)] == kinds


@pytest.mark.parametrize(
    "name",
    [
        b"X-HTTP-Method-Override",
        b"X_HTTP_METHOD_OVERRIDE",
        b" x-http-method-override ",
        b"X_Http_Method",
    ],
)
def test_header_names_compare_as_cgi_servers_read_them(name: bytes) -> None:
    assert overrides.header_name(name).decode() in overrides.METHOD_OVERRIDE_HEADERS


def test_query_and_body_claims() -> None:
    assert overrides.query_claims("/x?a=1;.method=DELETE&%5Fmethod=PUT") == ["DELETE", "PUT"]
    assert overrides.query_claims("/x?method=DELETE") == []
    body = gzip.compress(b"a=1&_method=DELETE")
    assert overrides.body_claims([FORM], "POST", body, "gzip") == ["DELETE"]


@pytest.mark.parametrize(
    "charset", ["utf-16", "UTF-16LE", "utf-32", "IBM037", "cp500", "utf-7", "iso-2022-jp", "x"]
)
def test_a_charset_whose_ascii_bytes_are_not_ascii_is_unreadable(charset: str) -> None:
    with pytest.raises(Unreadable, match="charset"):
        overrides.body_claims([f"{FORM}; charset={charset}"], "POST", b"a=1", "")


@pytest.mark.parametrize("charset", ["utf-8", "UTF8", '"ISO-8859-1"', "windows-1252", "us-ascii"])
def test_an_ascii_compatible_charset_is_read(charset: str) -> None:
    content_type = f"{FORM}; charset={charset}"
    assert overrides.body_claims([content_type], "POST", b"_method=PUT", "") == ["PUT"]


def test_a_decompression_bomb_is_unreadable_not_memory() -> None:
    bomb = gzip.compress(b"\0" * (65 << 20))
    with pytest.raises(Unreadable, match="does not decode"):
        overrides.body_claims([FORM], "POST", bomb, "gzip")


def test_the_safety_net_refuses_a_method_the_parse_did_not_read() -> None:
    # Every parser here reads every byte a field could come from, so the net cannot fire
    # through them; it is what stands if one of them ever drops bytes (a preamble, say).
    overrides._check_accounted(b"a=1&_method=x", ["a", "1", "_method", "x"])
    with pytest.raises(Unreadable, match="did not read"):
        overrides._check_accounted(b"junk _method\r\na=1", ["a", "1"])


def test_bracketed_names_claim_the_method_in_a_form_and_a_query() -> None:
    # Rack 2 (Rails 7.0 and older) reads "[_method]", "_method]" and "]_method" as
    # "_method"; Express's extended qs parser strips a top-level "[...]".
    for name in ("[_method]", "_method]", "]_method"):
        assert overrides.query_claims(f"/items/1?{name}=DELETE") == ["DELETE"]
        assert overrides.body_claims([FORM], "POST", f"{name}=DELETE".encode(), "") == ["DELETE"]


def _gzip_with_comment(comment: bytes, data: bytes) -> bytes:
    """A valid gzip stream of ``data`` whose header carries ``comment`` (FCOMMENT)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    deflated = packer.compress(data) + packer.flush()
    header = b"\x1f\x8b\x08\x10" + b"\0\0\0\0" + b"\x00\x03" + comment + b"\0"
    trailer = struct.pack("<II", zlib.crc32(data), len(data))
    return header + deflated + trailer


@pytest.mark.parametrize(
    ("kind", "raw"),
    [
        # Rack, PHP and Tomcat never decode a request body: they read the gzip header's
        # comment as a form field, though the body inflates to a harmless "a=1".
        (FORM, _gzip_with_comment(b"&_method=DELETE&", b"a=1")),
        # A multipart part after a preamble (Rack skips one) in the comment.
        (
            f"{MULTIPART}; boundary=B",
            _gzip_with_comment(
                b'\r\n--B\r\nContent-Disposition: form-data; name="_method"\r\n\r\n'
                b"DELETE\r\n--B--\r\n",
                b"--B--\r\n",
            ),
        ),
        # A stored deflate block carries its bytes as they are.
        (FORM, zlib.compress(b"_method=DELETE", 0)),
        (JSON, _gzip_with_comment(b'{"\\u005fmethod": "DELETE"}', b"{}")),
    ],
    ids=["gzip-comment-form", "gzip-comment-multipart", "stored-deflate-form", "gzip-json"],
)
def test_bytes_a_server_reads_undecoded_may_not_name_a_method(kind: str, raw: bytes) -> None:
    encoding = "deflate" if raw[:1] == b"\x78" else "gzip"
    with pytest.raises(Unreadable, match="before its Content-Encoding is decoded"):
        overrides.body_claims([kind], "POST", raw, encoding)


def test_a_compressed_body_without_a_claim_goes_on() -> None:
    body = gzip.compress(b'{"prompt": "%s", "n": 1}' % (b"100% of the method section " * 50))
    assert overrides.body_claims([JSON], "POST", body, "gzip") == []
    assert overrides.body_claims([FORM], "POST", gzip.compress(b"a=1&b=%20two"), "gzip") == []


@pytest.mark.parametrize(
    "part",
    [
        # Rack before 3.1 finds the name by an unanchored, greedy search of the header.
        'Content-Disposition: form-data; name="ok"; x="; name=_method"',
        # ... and falls back to Content-ID when the disposition names nothing.
        "Content-Disposition: form-data\r\nContent-ID: _method",
        'X-Content-Disposition: form-data; name="_method"\r\n'
        'Content-Disposition: form-data; name="ok"',
        # RFC 2231 continuations, which Go's mime package joins into "_method".
        'Content-Disposition: form-data; name*0="_me"; name*1="thod"',
    ],
)
def test_a_part_that_could_name_itself_otherwise_is_unreadable(part: str) -> None:
    body = f"--B\r\n{part}\r\n\r\nDELETE\r\n--B--\r\n".encode()
    with pytest.raises(Unreadable):
        overrides.body_claims([f"{MULTIPART}; boundary=B"], "POST", body, "")


def test_a_file_named_method_is_a_file_not_a_claim() -> None:
    part = 'Content-Disposition: form-data; name="upload"; filename="method.txt"'
    body = f"--B\r\n{part}\r\n\r\nthe _method section\r\n--B--\r\n".encode()
    assert overrides.body_claims([f"{MULTIPART}; boundary=B"], "POST", body, "") == []


def test_json_lines_are_read_line_by_line() -> None:
    ndjson = "application/x-ndjson"
    lines = b'{"msg": "100% done, \\u00e9t\xc3\xa9"}\n{"msg": "the _method of it"}\n'
    assert overrides.body_claims([ndjson], "POST", lines, "") == []
    claim = b'{"a": 1}\n{"_method": "DELETE"}\n'
    assert overrides.body_claims([ndjson], "POST", claim, "") == ["DELETE"]
    with pytest.raises(Unreadable, match="not valid JSON"):
        overrides.body_claims([ndjson], "POST", b'{"a": 1}\n{"_method": \n', "")
    # A nested _method is no claim (Laravel reads top-level keys), in either layout.
    assert overrides.body_claims([JSON], "POST", b'{"a": {"_method": "DELETE"}}', "") == []


def _mp(*parts: str) -> bytes:
    return b"".join(f"--AaB03x\r\n{part}\r\n".encode("latin-1") for part in parts) + (
        b"--AaB03x--\r\n"
    )


_MP = "multipart/form-data; boundary=AaB03x"


@pytest.mark.parametrize(
    "part",
    [
        # PHP quotes with ' anywhere: it reads name=_method as a parameter of its own.
        "Content-Disposition: form-data; a=x'; filename=\"'; name=_method; c=\"\r\n\r\nDELETE",
        # Rack 2.2 and 3.0 take the last "; name=" of the line, in a quoted value too.
        'Content-Disposition: form-data; name="x"; filename*="; name=_method;"\r\n\r\nDELETE',
        # Rack ignores a Content-Disposition over 1536 bytes and takes Content-ID.
        f'Content-Disposition: form-data; name="x%6dethod"; pad="{"A" * 1600}"\r\n'
        "Content-ID: _method\r\n\r\nDELETE",
        'Content-Disposition: form-data; name="a"; filename="b"; name="_method"\r\n\r\nDELETE',
        # A name and a name* too: servers differ over which one names the field.
        "Content-Disposition: form-data; name=\"a\"; name*=utf-8''_method\r\n\r\nDELETE",
    ],
    ids=["php-single-quote", "rack-last-name", "rack-content-id", "name-twice", "name-star"],
)
def test_a_part_header_servers_read_apart_is_unreadable(part: str) -> None:
    with pytest.raises(Unreadable, match="multipart"):
        overrides.body_claims([_MP], "POST", _mp(part), "")


@pytest.mark.parametrize(
    "inner",
    [
        # Go decodes RFC 2231 name*, skips a preamble and never decodes Content-Encoding.
        b"Content-Disposition: form-data; name*=utf-8''%5f%6d%65%74%68%6f%64",
        # Tomcat decodes an RFC 2047 word in a parameter.
        b'Content-Disposition: form-data; name="=?utf-8?b?X21ldGhvZA==?="',
        # Rack 3.1 unescapes a quoted-pair in a name.
        b'Content-Disposition: form-data; name="_\\m\\e\\t\\h\\o\\d"',
    ],
    ids=["rfc2231", "rfc2047", "quoted-pair"],
)
def test_undecoded_bytes_may_not_spell_a_method_field_in_any_escape(inner: bytes) -> None:
    hidden = b"\r\n--AaB03x\r\n" + inner + b"\r\n\r\nDELETE\r\n--AaB03x--\r\n"
    body = _gzip_with_comment(hidden, _mp('Content-Disposition: form-data; name="a"\r\n\r\n1'))
    with pytest.raises(Unreadable, match="before its Content-Encoding"):
        overrides.body_claims([_MP], "POST", body, "gzip")


def test_uploads_as_curl_and_requests_send_them_are_read() -> None:
    upload = _mp(
        'Content-Disposition: form-data; name="file"; filename="O\'Brien payment_method.csv"'
        "\r\nContent-Type: text/csv; charset=utf-8\r\n\r\nid,method\r\n1,card\\x",
        'Content-Disposition: form-data; name="payment_method"\r\n\r\ncard',
        "Content-Disposition: form-data; name=files[]\r\n\r\n%\\\x00",
    )
    assert overrides.body_claims([_MP], "POST", upload, "") == []
    claim = _mp('Content-Disposition: form-data; name="_method"\r\n\r\nDELETE')
    assert overrides.body_claims([_MP], "POST", claim, "") == ["DELETE"]


def test_a_latin1_space_before_the_name_is_seen_by_the_quick_look_too() -> None:
    # str's \s knows \xa0, bytes' does not: the quick look and the claim rule agree.
    assert overrides.claims_method("\xa0_method")
    assert overrides.body_claims([FORM], "POST", b"a=1&\xa0_method=DELETE", "") == ["DELETE"]


def test_a_key_that_qs_ends_at_its_first_bracket_equals_is_read_so_too() -> None:
    # qs splits on "&" only and cuts at the first "]=": {"_method": "DELETE"} to Express.
    assert "DELETE" in overrides.query_claims("/items/1?[_method]x=GET;]=DELETE")
    body = b"[_method]x=POST;]=DELETE"
    assert "DELETE" in overrides.body_claims([FORM], "POST", body, "")
