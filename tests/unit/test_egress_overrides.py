"""The method-override readers (pure: no mitmproxy). The addon's refusals over the same
cases are in test_egress_addon (test_a_body_that_could_claim_another_method_is_refused...)."""

from __future__ import annotations

import gzip

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
