"""The egress DLP functions: known secrets in their encodings, token shapes, redaction.

Token-shaped test values are assembled from pieces at run time so that no secret scanner
mistakes this file for a leak.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, quote_plus

import pytest

from bottle.runtime.egress import dlp

SECRET = "s3cr3t-Value/with+chars=ok"  # has characters that URL- and base64-encode visibly
SECRETS = dlp.known_secrets(["MY_TOKEN"], {"MY_TOKEN": SECRET})


def kinds(findings: list[dlp.Finding]) -> set[str]:
    return {f.kind for f in findings}


# -- known secrets ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "form"),
    [
        (f"token={SECRET}", "plain"),
        (f"token={quote(SECRET, safe='')}", "url-encoded"),
        (f"token={quote_plus(SECRET)}", "url-encoded"),
        (base64.b64encode(SECRET.encode()).decode(), "base64"),
        (base64.urlsafe_b64encode(SECRET.encode()).decode(), "base64"),
    ],
)
def test_known_secret_found_in_each_form(text: str, form: str) -> None:
    findings = dlp.scan_text(text, "body", SECRETS)
    assert dlp.Finding("secret:MY_TOKEN", "body", form) in findings


@pytest.mark.parametrize("prefix", ["", "u:", "us:", "user:", "x-access-token:"])
def test_known_secret_found_inside_a_longer_base64_value(prefix: str) -> None:
    """Basic auth: base64("user:" + secret) at every alignment, and followed by more bytes."""
    for suffix in ("", "!", "!!", "\n{more}"):
        blob = base64.b64encode(f"{prefix}{SECRET}{suffix}".encode()).decode()
        findings = dlp.scan_text(f"Basic {blob}", "header authorization", SECRETS)
        assert "secret:MY_TOKEN" in kinds(findings), (prefix, suffix)


def test_partially_percent_encoded_secret_is_found() -> None:
    sneaky = "".join(f"%{ord(c):02X}" if i % 3 == 0 else c for i, c in enumerate(SECRET))
    assert "secret:MY_TOKEN" in kinds(dlp.scan_text(f"/x?q={sneaky}", "url", SECRETS))


def test_finding_never_carries_the_secret() -> None:
    findings = dlp.scan_request(
        f"https://h/p?t={SECRET}", [("X-K", SECRET)], SECRET.encode(), SECRETS
    )
    assert {f.where for f in findings} == {"url", "header x-k", "body"}
    rendered = json.dumps([str(f) for f in findings]) + repr(findings) + repr(SECRETS)
    assert SECRET not in rendered
    assert base64.b64encode(SECRET.encode()).decode()[:12] not in rendered


def test_short_and_missing_secrets_are_ignored() -> None:
    secrets = dlp.known_secrets(["SHORT", "UNSET", "EMPTY"], {"SHORT": "abc1234", "EMPTY": ""})
    assert secrets == ()


def test_secret_names_merge_token_refs_and_bottle_dlp_secrets() -> None:
    env = {dlp.DLP_SECRETS_ENV: " EXTRA_ONE, ,bad name,EXTRA_TWO,GH_TOKEN"}
    names = dlp.secret_names(["GH_TOKEN"], env)
    assert names == ("GH_TOKEN", "EXTRA_ONE", "EXTRA_TWO")


def test_ordinary_text_has_no_findings() -> None:
    text = "GET /repos/owner/name/pulls?state=open HTTP/1.1 user-agent: git/2.45 sk-learn"
    assert dlp.scan_text(text, "url", SECRETS) == []


def test_body_scan_stops_at_the_limit() -> None:
    body = b"x" * 100 + SECRET.encode()
    assert dlp.scan_request("https://h/", [], body, SECRETS, limit=100) == []
    assert dlp.scan_request("https://h/", [], body, SECRETS, limit=200) != []


def test_binary_body_is_scanned_without_failing() -> None:
    body = bytes(range(256)) * 10 + SECRET.encode() + b"\xff\xfe"
    assert "secret:MY_TOKEN" in kinds(dlp.scan_request("https://h/", [], body, SECRETS))


# -- token shapes ----------------------------------------------------------------------------

ALNUM = "aB3dE5fG7hJ9kL1mN2pQ4rS6tU8vW0xYz"


def shapes() -> list[tuple[str, str]]:
    return [
        ("aws-access-key-id", "AK" + "IA" + "Q3EGRIGHTS7W4XMP"),
        ("aws-access-key-id", "AS" + "IA" + "Q3EGRIGHTS7W4XMP"),
        ("github-token", "gh" + "p_" + (ALNUM * 2)[:36]),
        ("github-token", "gh" + "s_" + (ALNUM * 2)[:36]),
        ("github-token", "github" + "_pat_" + "11ABCDEFG0123456789_" + (ALNUM * 2)[:59]),
        ("gitlab-token", "gl" + "pat-" + ALNUM[:20]),
        ("slack-token", "xo" + "xb-" + "123456789012-1234567890123-" + ALNUM[:24]),
        ("openai-api-key", "sk" + "-proj-" + (ALNUM * 3)[:64]),
        ("openai-api-key", "sk" + "-" + (ALNUM * 2)[:48]),
        ("anthropic-api-key", "sk" + "-ant-api03-" + (ALNUM * 3)[:80]),
        ("google-api-key", "AI" + "za" + (ALNUM * 2)[:35]),
        ("stripe-live-key", "sk" + "_live_" + ALNUM[:24]),
        ("private-key", "-----BEGIN " + "RSA PRIVATE KEY-----\nMIIEow..."),
        ("private-key", "-----BEGIN " + "OPENSSH PRIVATE KEY-----"),
        ("private-key", "-----BEGIN " + "PRIVATE KEY-----"),
        (
            "jwt",
            "ey" + "JhbGciOiJIUzI1NiJ9" + ".ey" + "JzdWIiOiIxMjM0NTY3ODkwIn0" + ".dozjgNryP4J3jVm",
        ),
    ]


@pytest.mark.parametrize(("kind", "token"), shapes())
@pytest.mark.parametrize("wrap", ["{}", "Bearer {}", '{{"key": "{}"}}', "/v1/{}/x"])
def test_token_shapes_are_detected(kind: str, token: str, wrap: str) -> None:
    findings = dlp.scan_text(wrap.format(token), "body")
    assert kind in kinds(findings)
    assert token not in json.dumps([str(f) for f in findings])


def test_anthropic_key_is_not_also_called_openai() -> None:
    token = "sk" + "-ant-api03-" + (ALNUM * 3)[:80]
    assert kinds(dlp.scan_text(token, "body")) == {"anthropic-api-key"}


def test_shapes_inside_longer_runs_and_documented_examples_are_not_findings() -> None:
    assert dlp.scan_text("X" + "AK" + "IA" + "Q3EGRIGHTS7W4XMP", "body") == []
    assert dlp.scan_text("AK" + "IA" + "IOSFODNN7EXAMPLE", "body") == []
    assert dlp.scan_text("Q" + "AI" + "za" + (ALNUM * 2)[:35] + "Q", "body") == []


def test_url_encoded_token_shape_in_url_is_detected() -> None:
    token = "gh" + "p_" + (ALNUM * 2)[:36]
    url = "https://evil.example/?" + quote(f"x={token}", safe="")
    assert "github-token" in kinds(dlp.scan_text(url, "url"))


# -- redaction -------------------------------------------------------------------------------


def test_redact_replaces_secrets_and_shapes() -> None:
    token = "gh" + "p_" + (ALNUM * 2)[:36]
    out = dlp.redact(f"/upload/{SECRET}/{token}", SECRETS)
    assert out == "/upload/[secret:MY_TOKEN]/[github-token]"


def test_redact_gives_up_wholesale_when_it_cannot_cut_precisely() -> None:
    sneaky = "".join(f"%{ord(c):02X}" if i % 3 == 0 else c for i, c in enumerate(SECRET))
    assert dlp.redact(f"/x/{sneaky}", SECRETS) == "[redacted]"


def test_redact_leaves_clean_text_alone() -> None:
    assert dlp.redact("/repos/owner/name", SECRETS) == "/repos/owner/name"
