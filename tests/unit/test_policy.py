from __future__ import annotations

from collections.abc import Callable

import pytest
from pydantic import ValidationError

from bottle.policy import Auth, Route, Routes, RoutesFileError, parse_routes_file


def table(*routes: dict) -> Routes:
    return Routes.model_validate({"routes": list(routes)})


def test_first_match_wins_and_unmatched_is_none() -> None:
    routes = table(
        {"host": "api.x.com", "paths": ["/v1/"], "methods": ["get"]},
        {"host": "*.x.com"},
    )
    assert routes.match("GET", "api.x.com", "/v1/items?q=1") is routes.routes[0]
    assert routes.match("POST", "api.x.com", "/v1/items") is routes.routes[1]
    assert routes.match("GET", "x.com", "/") is None
    assert routes.match("GET", "evil-x.com", "/") is None
    assert routes.match("GET", "deep.sub.x.com", "/") is routes.routes[1]


def test_regex_paths_and_headers() -> None:
    routes = table(
        {"host": "h.io", "paths": ["^/repos/[^/]+/issues$"], "headers": {"X-Kind": "a|b"}}
    )
    assert routes.match("GET", "h.io", "/repos/me/issues", {"x-kind": "a"})
    assert not routes.match("GET", "h.io", "/repos/me/issues/1", {"x-kind": "a"})
    assert not routes.match("GET", "h.io", "/repos/me/issues", {"x-kind": "c"})
    assert not routes.match("GET", "h.io", "/repos/me/issues")


def test_auth_header_values() -> None:
    assert Auth(scheme="bearer", token_ref="T").header_value("abc") == "Bearer abc"
    assert Auth(scheme="token", token_ref="T").header_value("abc") == "token abc"
    assert Auth(scheme="basic", token_ref="T").header_value("u:p") == "Basic dTpw"
    header = Auth(scheme="header:x-api-key", token_ref="T")
    assert header.header == "x-api-key" and header.header_value("abc") == "abc"


@pytest.mark.parametrize(
    "route",
    [
        {"host": "https://x.com"},
        {"host": "x.com/path"},
        {"host": "a.*.com"},
        {"host": "x.com", "paths": ["relative"]},
        {"host": "x.com", "paths": ["^("]},
        {"host": "x.com", "methods": ["FETCH"]},
        {"host": "x.com", "auth": {"scheme": "digest", "token_ref": "T"}},
        {"host": "x.com", "auth": {"scheme": "bearer", "token_ref": "not-a-name"}},
        {"host": "x.com", "dlp": "maybe"},
        {"host": "x.com", "passthrough": True, "methods": ["GET"]},
    ],
)
def test_invalid_routes_rejected(route: dict) -> None:
    with pytest.raises(ValidationError):
        Route.model_validate(route)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/a/../b", "dot segments"),
        ("/a/./b", "dot segments"),
        ("/a/..;/b", "dot segments"),
        ("/a/.;x/b", "dot segments"),
        ("/a/%2e%2e/b", "dot segments"),
        ("/a/%2E./b", "dot segments"),
        ("/a/..%5cb", "dot segments"),  # a backslash, encoded, read as a separator
        ("/a/%252e%252e/b", "encoded twice"),
        ("/a/%252fb", "encoded twice"),
        ("/a%2fb", "encoded '%2f'"),
        ("/a%5Cb", "encoded '%5C'"),
        ("/a%00b", "encoded '%00'"),
        ("/a\\b", "backslash"),
    ],
)
def test_ambiguous_route_paths_are_refused_saying_why(path: str, reason: str) -> None:
    # What a route names must mean one thing to every server, as a request path must.
    with pytest.raises(ValidationError, match=reason):
        Route.model_validate({"host": "x.com", "paths": [path]})


def test_route_paths_are_kept_normalised() -> None:
    # Not ambiguous, only written another way: kept as matching sees a request's path.
    route = Route.model_validate({"host": "x.com", "paths": ["/a//b/", "/%7Euser;v=1/x"]})
    assert route.paths == ("/a/b/", "/~user/x")


def test_passthrough_and_token_refs() -> None:
    routes = table(
        {"host": "pinned.io", "passthrough": True},
        {"host": "a.io", "auth": {"scheme": "bearer", "token_ref": "B"}},
        {"host": "a.io", "paths": ["/x"], "auth": {"scheme": "bearer", "token_ref": "B"}},
    )
    assert routes.passthrough_for("pinned.io") and not routes.passthrough_for("a.io")
    assert routes.token_refs == ("B",)
    assert routes.with_route(routes.routes[0]) is routes
    assert len(routes.with_route(Route(host="new.io")).routes) == 4


# -- hosts that cannot be meant ---------------------------------------------------------------

_NEVER = [
    "169.254.169.254",
    "[fd00:ec2::254]",
    "::ffff:169.254.169.254",
    "metadata.google.internal",
    "metadata",
    "127.0.0.1",
    "[::1]",
    "0.0.0.0",
    "localhost",
    "api.localhost",
    "*.localhost",
    "egress",
    "supervise",
    "git-gate",
    "2130706433",
    "0x7f.1",
    "0x7f000001",
    "0177.0.0.1",
    "127.1",
    "*.com",
    "*.co.uk",
    "*.github.io",
    "*.test",
]
_PRIVATE_ONLY = [
    "10.0.0.5",
    "192.168.1.1",
    "8.8.8.8",
    "[fd12::1]",
    "gitlab",
    "git.corp.internal",
    "printer.local",
    "nas.home.arpa",
]


@pytest.mark.parametrize("host", _NEVER)
@pytest.mark.parametrize("private", [False, True])
def test_hosts_that_cannot_be_meant_are_refused(host: str, private: bool) -> None:
    with pytest.raises(ValidationError, match=r"no route leads there|non-standard|wildcard"):
        Route.model_validate({"host": host, "private": private})


@pytest.mark.parametrize("host", _PRIVATE_ONLY)
def test_internal_hosts_need_private(host: str) -> None:
    with pytest.raises(ValidationError, match="private: true"):
        Route.model_validate({"host": host})
    route = Route.model_validate({"host": host, "private": True})
    assert route.host == host.strip("[]")


@pytest.mark.parametrize(
    "host", ["api.example.com", "*.example.com", "*.s3.amazonaws.com.example", "pypi.org"]
)
def test_public_names_pass(host: str) -> None:
    assert Route.model_validate({"host": host}).host == host


#: Wildcards under which anyone can get a name: a public suffix below them (the list's
#: private section), or shared hosting the list does not hold.
_SHARED = [
    "*.amazonaws.com",
    "*.us-east-1.amazonaws.com",
    "*.s3.amazonaws.com",
    "*.amazonaws.com.cn",
    "*.windows.net",
    "*.core.windows.net",
    "*.blob.core.windows.net",
    "*.dfs.core.windows.net",
    "*.googleapis.com",
    "*.storage.googleapis.com",
    "*.my-bucket.storage.googleapis.com",
    "*.firebaseio.com",
    "*.herokuapp.com",
    "*.azure.com",
    "*.fastly.net",
    "*.cloudfront.net",
    "*.workers.dev",
]


@pytest.mark.parametrize("host", _SHARED)
def test_wildcards_over_shared_hosting_are_refused_with_the_fix(host: str) -> None:
    with pytest.raises(ValidationError, match="wildcard") as info:
        Route.model_validate({"host": host})
    assert "name the site" in str(info.value) or "list the exact hosts" in str(info.value)
    # A proposal from the agent meets the same parser.
    from bottle.errors import ApplyError
    from bottle.proposals.payloads import validate_payload

    with pytest.raises(ApplyError, match="wildcard"):
        validate_payload("egress-block", {"host": host})


@pytest.mark.parametrize(
    "host",
    [
        "my-bucket.s3.amazonaws.com",
        "bedrock-runtime.us-east-1.amazonaws.com",
        "my-bucket.storage.googleapis.com",
        "*.github.com",
        "*.anthropic.com",
        "*.pythonhosted.org",
    ],
)
def test_exact_hosts_on_shared_hosting_and_wildcards_of_one_owner_pass(host: str) -> None:
    assert Route.model_validate({"host": host}).host == host


def test_a_routes_file_with_a_shared_wildcard_names_the_route_and_the_fix() -> None:
    text = b"routes:\n  - host: api.example.com\n  - host: '*.amazonaws.com'\n"
    with pytest.raises(RoutesFileError) as info:
        parse_routes_file(text, "routes.yaml")
    message = str(info.value)
    assert message.startswith("routes.yaml: routes.1: '*.amazonaws.com' is a wildcard")
    assert "'s3.amazonaws.com'" in message and "list the exact hosts" in message


#: Wildcards anyone can get a name under that the list's "over" rule alone let through
#: (review F5): each a kind of shared host, and each with the exact host it stands for.
_ANYONES = [
    # Dotted bucket names: the bucket "evil.corp" is a name under corp.s3.amazonaws.com.
    "*.corp.s3.amazonaws.com",
    "*.corp.s3.us-east-1.amazonaws.com",
    "*.corp.s3-website-us-east-1.amazonaws.com",
    "*.corp.s3.dualstack.us-east-1.amazonaws.com",
    "*.corp.nyc3.digitaloceanspaces.com",
    "*.corp.storage.googleapis.com",
    # Registries.
    "*.dkr.ecr.us-east-1.amazonaws.com",
    "*.dkr.ecr.cn-north-1.amazonaws.com.cn",
    "*.azurecr.io",
    "*.jfrog.io",
    # Azure resources.
    "*.openai.azure.com",
    "*.cognitiveservices.azure.com",
    "*.documents.azure.com",
    "*.database.windows.net",
    "*.azure-devices.net",
    # Storage, error intake, dev tunnels.
    "*.firebasestorage.app",
    "*.ingest.sentry.io",
    "*.ingest.us.sentry.io",
    "*.sentry.io",
    "*.devtunnels.ms",
    "*.usw2.devtunnels.ms",
    # interactsh.
    "*.oast.pro",
    "*.oast.live",
    "*.oast.site",
    "*.oast.online",
    "*.oast.fun",
    "*.oast.me",
    # Tunnels and hosted apps.
    "*.lhr.life",
    "*.serveo.net",
    "*.pinggy.link",
    "*.localtunnel.me",
    "*.bore.pub",
    "*.gradio.live",
    "*.modal.run",
    "*.localhost.run",
    "*.share.zrok.io",
    "*.tunnelto.dev",
    "*.loophole.site",
    "*.app.github.dev",
    # Request catchers.
    "*.webhook.site",
    "*.requestbin.net",
    "*.requestcatcher.com",
    "*.beeceptor.com",
    "*.dnslog.cn",
    "*.ceye.io",
    "*.canarytokens.com",
    # Tenant hosts: anyone's workspace, blog or database.
    "*.slack.com",
    "*.okta.com",
    "*.auth0.com",
    "*.my.salesforce.com",
    "*.service-now.com",
    "*.freshdesk.com",
    "*.freshservice.com",
    "*.lightning.force.com",
    "*.my.site.com",
    "*.ghe.com",
    "*.cloudflareaccess.com",
    "*.snowflakecomputing.com",
    "*.cloud.databricks.com",
    "*.azuredatabricks.net",
    "*.wordpress.com",
    "*.substack.com",
    "*.medium.com",
    "*.tumblr.com",
    "*.upstash.io",
    "*.neon.tech",
    "*.mongodb.net",
    "*.pinecone.io",
    "*.algolia.net",
    # The list's IDN entries, in the form a host reaches us: public suffixes lie under them.
    "*.xn--mre-og-romsdal-qqb.no",
    "*.xn--stfold-9xa.no",
    "*.xn--hery-ira.xn--mre-og-romsdal-qqb.no",
]


@pytest.mark.parametrize("spelling", [str, str.upper, lambda h: h + "."])
@pytest.mark.parametrize("host", _ANYONES)
def test_wildcards_anyone_can_get_a_name_under_are_refused(
    host: str, spelling: Callable[[str], str]
) -> None:
    with pytest.raises(ValidationError, match="wildcard") as info:
        Route.model_validate({"host": spelling(host)})
    assert "list the exact hosts" in str(info.value) or "name the site" in str(info.value)
    from bottle.errors import ApplyError
    from bottle.proposals.payloads import validate_payload

    with pytest.raises(ApplyError, match="wildcard"):
        validate_payload("egress-block", {"host": spelling(host)})


@pytest.mark.parametrize("host", ["*.slack.com", "*.my.salesforce.com", "*.corp.s3.amazonaws.com"])
def test_a_shared_wildcard_refusal_shows_the_exact_host_to_name(host: str) -> None:
    with pytest.raises(ValidationError) as info:
        Route.model_validate({"host": host})
    assert f"list the exact hosts instead (your-name.{host[2:]}, not {host})" in str(info.value)


@pytest.mark.parametrize("host", [h.replace("*", "my-team", 1) for h in _ANYONES])
def test_the_exact_hosts_behind_those_wildcards_pass(host: str) -> None:
    assert Route.model_validate({"host": host}).host == host


@pytest.mark.parametrize(
    "host",
    [
        # Under an ICANN suffix a name and all below it are one owner's.
        "*.example.co.uk",
        "*.api.example.co.uk",
        "*.example.no",
        "*.api.github.com",
        "*.githubcopilot.com",
        "*.openai.com",
        "*.docker.io",
        "*.ghcr.io",
        "*.npmjs.org",
        "*.amazon.com",
        "*.microsoft.com",
        "*.google.com",
        "*.cloudflare.com",
        "*.hashicorp.com",
        "*.s3.amazonaws.com.example",
    ],
)
def test_wildcards_of_one_owner_still_pass(host: str) -> None:
    assert Route.model_validate({"host": host}).host == host


def test_a_proposal_is_checked_like_a_route() -> None:
    from bottle.errors import ApplyError
    from bottle.proposals.payloads import validate_payload

    for tool, payload in [
        ("egress-block", {"host": "169.254.169.254"}),
        ("egress-block", {"host": "*.com"}),
        ("pipelock-block", {"url": "http://2130706433/x"}),
        ("pipelock-block", {"url": "http://localhost:8080/"}),
    ]:
        with pytest.raises(ApplyError, match="refused"):
            validate_payload(tool, payload)


# -- scheme and port ------------------------------------------------------------------------------


def test_scheme_and_port_are_matched() -> None:
    routes = table(
        {"host": "a.io"},
        {"host": "b.io", "scheme": "https"},
        {"host": "c.io", "scheme": "http", "port": 8080},
        {"host": "d.io", "auth": {"scheme": "bearer", "token_ref": "T"}},
        {"host": "e.io", "port": 8443, "auth": {"scheme": "bearer", "token_ref": "T"}},
    )
    a, _, c, d, e = routes.routes
    assert routes.match("GET", "a.io", "/", scheme="https", port=443) is a
    assert routes.match("GET", "a.io", "/", scheme="http", port=80) is a
    assert routes.match("GET", "a.io", "/", scheme="https", port=8443) is None
    assert routes.match("GET", "b.io", "/", scheme="http", port=80) is None
    assert routes.match("GET", "c.io", "/", scheme="http", port=8080) is c
    assert routes.match("GET", "c.io", "/", scheme="http", port=80) is None
    assert routes.match("GET", "d.io", "/", scheme="https", port=443) is d
    assert routes.match("GET", "d.io", "/", scheme="http", port=80) is None
    assert routes.match("GET", "d.io", "/", scheme="https", port=8443) is None
    assert routes.match("GET", "e.io", "/", scheme="https", port=8443) is e
    assert routes.match("GET", "e.io", "/", scheme="https", port=443) is None
    assert d.credential_wire() == ("https", 443) and a.credential_wire() is None
    assert routes.credential_wires("d.io") == {("https", 443)}
    assert routes.credential_wires("a.io") == frozenset()
    both = table(
        {"host": "f.io", "auth": {"scheme": "bearer", "token_ref": "T"}},
        {"host": "f.io", "port": 8443, "auth": {"scheme": "bearer", "token_ref": "T"}},
    )
    assert both.credential_wires("f.io") == {("https", 443), ("https", 8443)}


def test_a_credential_over_plain_http_is_refused() -> None:
    with pytest.raises(ValidationError, match="never goes over plain HTTP"):
        Route.model_validate(
            {"host": "x.com", "scheme": "http", "auth": {"scheme": "bearer", "token_ref": "T"}}
        )
    with pytest.raises(ValidationError):
        Route.model_validate({"host": "x.com", "port": 0})


# -- paths -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "matched"),
    [
        ("/repos", True),
        ("/repos/o/r", True),
        ("/repository", False),
        ("/reposx/y", False),
        ("/%72epos/o", True),  # unreserved characters are decoded before matching
        ("//repos//o", True),  # empty segments collapse
        ("/repos;jsessionid=1/o", True),  # ;params are dropped from each segment
        ("/repos/../admin", False),
        ("/repos/..;/admin", False),
        ("/repos/%2e%2e/admin", False),
        ("/repos/%252e%252e/admin", False),
        ("/repos%2f..%2fadmin", False),
        ("/repos\\..\\admin", False),
        ("/repos/%00", False),
    ],
)
def test_prefix_rules_match_normalised_paths_on_segment_boundaries(
    path: str, matched: bool
) -> None:
    routes = table({"host": "h.io", "paths": ["/repos"]})
    assert (routes.match("GET", "h.io", path) is not None) is matched


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/a/../b", "dot segments"),
        ("/a/..;/b", "dot segments"),
        ("/a/.;x/b", "dot segments"),
        ("/a/%2E%2e/b", "dot segments"),
        ("/a/%252e%252e/b", "encoded twice"),
        ("/a%2Fb", "encoded '%2F'"),
        ("/a%5cb", "encoded '%5c'"),
        ("/a\\b", "backslash"),
        ("/ok/path?x=%2f", None),  # the query is not part of the path
        ("/ok;v=1/x", None),
    ],
)
def test_ambiguous_paths_say_why(path: str, reason: str | None) -> None:
    from bottle import urlpaths

    found = urlpaths.ambiguity(path)
    assert (found is None) if reason is None else (found is not None and reason in found)


def test_regex_rules_run_on_re2_within_bounds() -> None:
    import re
    import threading

    import re2

    from bottle import patterns

    routes = table({"host": "h.io", "paths": ["^/(a+)+$"], "headers": {"X-K": "(b|b)*c"}})
    # The engine is RE2, whose matching is linear in the text: no input makes it backtrack.
    assert isinstance(patterns._compiled("^/(a+)+$"), re2._Regexp)
    assert not isinstance(patterns._compiled("^/(a+)+$"), re.Pattern)
    # A backtracking engine tries about 2**5000 ways to split these a's before it fails:
    # that this returns at all shows none is used. The join's bound only keeps a broken
    # engine from hanging the run; it is no measure of speed.
    evil = "/" + "a" * 5000 + "!"
    results: list[object] = []
    worker = threading.Thread(
        target=lambda: results.append(routes.match("GET", "h.io", evil, {"x-k": "b" * 5000})),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=300)
    assert results == [None], "the match never finished: the regex engine backtracks"
    assert routes.match("GET", "h.io", "/aaa", {"x-k": "bbc"}) is not None
    # Text longer than the cap never matches a regex rule.
    assert routes.match("GET", "h.io", "/" + "a" * patterns.MAX_TEXT, {"x-k": "c"}) is None
    for bad in ["^/(a)\\1", "^/(?=x)", "^/" + "a" * patterns.MAX_PATTERN]:
        with pytest.raises(ValidationError, match="path regex"):
            Route.model_validate({"host": "h.io", "paths": [bad]})


@pytest.mark.parametrize(
    ("host", "paths"),
    [
        ("s3.amazonaws.com", []),
        ("S3.Amazonaws.com.", []),
        ("s3.us-east-1.amazonaws.com", []),
        ("s3-eu-west-1.amazonaws.com", ["/"]),
        ("s3.dualstack.eu-west-1.amazonaws.com", ["^/"]),
        ("s3.cn-north-1.amazonaws.com.cn", []),
        ("storage.googleapis.com", ["/", "/mine/"]),  # one rule that lets anyone's through
        ("www.googleapis.com", ["/upload/"]),
        ("s3.eu-central-2.wasabisys.com", []),
        ("nyc3.digitaloceanspaces.com", []),
        ("hooks.slack.com", ["/services/"]),
        ("hooks.slack.com", ["^/services/T"]),
        ("discord.com", ["/api/"]),
        ("discord.com", ["/api/v10/"]),
        ("api.telegram.org", []),
        ("ntfy.sh", []),
        ("webhook.site", ["/"]),
    ],
)
def test_a_host_shared_by_path_needs_paths_that_keep_to_ones_own(
    host: str, paths: list[str]
) -> None:
    # s3.amazonaws.com/<bucket>: the host alone lets the agent PUT into an attacker's
    # public bucket, or post to an attacker's webhook; the wildcard check never sees it.
    with pytest.raises(ValidationError, match="serves anyone's bucket, webhook or topic"):
        Route.model_validate({"host": host, "paths": paths})
    from bottle.errors import ApplyError
    from bottle.proposals.payloads import validate_payload

    with pytest.raises(ApplyError, match="anyone's"):
        validate_payload("egress-block", {"host": host, "paths": paths})


@pytest.mark.parametrize(
    ("host", "paths"),
    [
        ("s3.amazonaws.com", ["/my-bucket/"]),
        ("s3.us-east-1.amazonaws.com", ["/my-bucket/", "/my-other-bucket/"]),
        ("storage.googleapis.com", ["/my-bucket/"]),
        ("www.googleapis.com", ["/upload/storage/v1/b/my-bucket/"]),
        ("hooks.slack.com", ["/services/T0123/B0456/"]),
        ("discord.com", ["/api/v10/webhooks/1234/"]),
        ("ntfy.sh", ["/my-long-topic-name"]),
        ("my-bucket.s3.amazonaws.com", []),
        ("api.github.com", []),
        ("slack.com", []),
    ],
)
def test_ones_own_part_of_a_host_shared_by_path_passes(host: str, paths: list[str]) -> None:
    assert Route.model_validate({"host": host, "paths": paths}).host == host.lower()
