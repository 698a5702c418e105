from __future__ import annotations

import pytest
from pydantic import ValidationError

from bottle.policy import Auth, Route, Routes


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
