"""The egress policy: routes, their parser and their matcher.

One parser for both sides of the boundary: the host validates a bottle's routes and every
proposal with these models, and the egress addon loads ``live-config/egress/routes.yaml``
with the very same code, so what ``apply`` accepted is exactly what the proxy enforces.
Keep this module free of Docker and CLI imports: it runs inside the sidecar too.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from bottle import hostnames, patterns, urlpaths

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HEADER_NAME_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")

DlpMode = Literal["off", "warn", "block"]
Scheme = Literal["https", "http"]
DEFAULT_PORTS: dict[str, int] = {"https": 443, "http": 80}


def check_env_name(value: str) -> str:
    if not _ENV_NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an environment variable name (letters, digits, _; "
            "not starting with a digit)"
        )
    return value


EnvName = Annotated[str, AfterValidator(check_env_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: What the agent holds for a credential whose real value egress injects.
PLACEHOLDER = "bottle-egress-injects-this"

#: The ``chatgpt`` scheme's secrets, as egress holds them in its environment: the host reads
#: Codex's ``auth.json`` (``file_ref``) at start and hands these two to compose, never a file.
CHATGPT_ACCESS_VAR = "BOTTLE_CHATGPT_ACCESS_TOKEN"
CHATGPT_ACCOUNT_VAR = "BOTTLE_CHATGPT_ACCOUNT_ID"
#: The header Codex names its ChatGPT workspace with; egress writes the real one.
CHATGPT_ACCOUNT_HEADER = "ChatGPT-Account-ID"


class Auth(_Strict):
    """How egress authenticates a route: the agent's own credential is stripped first."""

    scheme: str = Field(description="bearer | token | basic | header:<Name> | chatgpt")
    token_ref: EnvName | None = Field(
        None, description="host environment variable holding the secret (not for chatgpt)"
    )
    file_ref: str | None = Field(
        None,
        description="chatgpt only: the host's Codex auth.json (a ChatGPT login), e.g. "
        "~/.codex/auth.json",
    )

    @field_validator("scheme")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if value in {"bearer", "token", "basic", "chatgpt"}:
            return value
        if value.startswith("header:") and _HEADER_NAME_RE.fullmatch(value[7:]):
            return value
        raise ValueError(
            f"unknown auth scheme {value!r}: use bearer, token, basic, chatgpt or "
            "header:<Header-Name>"
        )

    @field_validator("file_ref")
    @classmethod
    def _file_ref(cls, value: str | None) -> str | None:
        if value is not None and (not value.strip() or "\0" in value):
            raise ValueError("file_ref must be a path, e.g. ~/.codex/auth.json")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Auth:
        if self.scheme == "chatgpt":
            if self.file_ref is None or self.token_ref is not None:
                raise ValueError(
                    "auth scheme chatgpt takes file_ref (the host's Codex auth.json, e.g. "
                    "~/.codex/auth.json), not token_ref"
                )
        elif self.token_ref is None or self.file_ref is not None:
            raise ValueError(
                f"auth scheme {self.scheme} takes token_ref (the host variable holding the "
                "secret); file_ref is for scheme chatgpt"
            )
        return self

    @property
    def secret_vars(self) -> tuple[str, ...]:
        """The variables of egress's environment this credential is made of."""
        if self.scheme == "chatgpt":
            return (CHATGPT_ACCESS_VAR, CHATGPT_ACCOUNT_VAR)
        assert self.token_ref is not None  # _one_source
        return (self.token_ref,)

    @property
    def header(self) -> str:
        """The request header this scheme writes."""
        return self.scheme[7:] if self.scheme.startswith("header:") else "Authorization"

    def headers(self, environ: Mapping[str, str]) -> dict[str, str] | None:
        """The headers this credential puts in a request, from ``environ``; None when a
        value it needs is not set."""
        values = [environ.get(name, "").strip() for name in self.secret_vars]
        if not all(values):
            return None
        if self.scheme == "chatgpt":
            token, account = values
            return {"Authorization": f"Bearer {token}", CHATGPT_ACCOUNT_HEADER: account}
        return {self.header: self.header_value(values[0])}

    def header_value(self, secret: str) -> str:
        if self.scheme in {"bearer", "chatgpt"}:
            return f"Bearer {secret}"
        if self.scheme == "token":
            return f"token {secret}"
        if self.scheme == "basic":
            import base64

            # A basic secret is "user:password"; a bare token is sent as its own user name,
            # which is what git hosts accept for token auth.
            raw = secret if ":" in secret else f"{secret}:"
            return "Basic " + base64.b64encode(raw.encode()).decode()
        return secret


def _check_host(value: str) -> str:
    # Syntax only: whether the host can be meant depends on the route's ``private``.
    return hostnames.check_syntax(value)


def _check_path(value: str) -> str:
    if value.startswith("/"):
        reason = urlpaths.ambiguity(value)
        if reason is not None:
            raise ValueError(f"path {value!r}: {reason}")
        return urlpaths.normalise(value)
    if value.startswith("^"):
        return patterns.check(value, "path regex")
    raise ValueError(
        f"path {value!r} must be a prefix starting with '/' or a regex starting with '^'"
    )


def _check_method(value: str) -> str:
    method = value.upper()
    if method not in HTTP_METHODS:
        raise ValueError(f"unknown HTTP method {value!r}")
    return method


Host = Annotated[str, AfterValidator(_check_host)]
PathRule = Annotated[str, AfterValidator(_check_path)]
Method = Annotated[str, AfterValidator(_check_method)]


class Route(_Strict):
    """One allowed way out. Empty ``paths`` / ``methods`` / ``headers`` match anything."""

    host: Host
    scheme: Scheme | None = Field(
        None,
        description="https or http; unset: https (and, for a route without auth, also http)",
    )
    port: int | None = Field(
        None, ge=1, le=65535, description="the upstream port (default 443 for https, 80 for http)"
    )
    paths: tuple[PathRule, ...] = ()
    methods: tuple[Method, ...] = ()
    headers: dict[str, str] = Field(
        default_factory=dict, description="header name -> regex the value must fully match"
    )
    auth: Auth | None = None
    passthrough: bool = Field(False, description="tunnel TLS without interception")
    dlp: DlpMode = "block"
    private: bool = Field(
        False,
        description="the host may resolve to a private, loopback or bottle-network address",
    )

    @field_validator("headers")
    @classmethod
    def _headers(cls, value: dict[str, str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for name, pattern in value.items():
            if not _HEADER_NAME_RE.fullmatch(name):
                raise ValueError(f"{name!r} is not a header name")
            try:
                patterns.check(pattern)
            except ValueError as exc:
                raise ValueError(f"header {name}: {exc}") from None
            out[name.lower()] = pattern
        return out

    @model_validator(mode="after")
    def _passthrough_sees_only_hosts(self) -> Route:
        if self.passthrough and (self.paths or self.methods or self.headers or self.auth):
            raise ValueError(
                "a passthrough route is not intercepted, so it can only match the host: "
                "drop paths, methods, headers and auth, or set passthrough: false"
            )
        return self

    @model_validator(mode="after")
    def _host_can_be_meant(self) -> Route:
        reason = hostnames.refusal(self.host, private=self.private)
        if reason is not None:
            raise ValueError(reason)
        return self

    @model_validator(mode="after")
    def _own_part_of_a_path_shared_host(self) -> Route:
        # The host alone would let the agent put what it likes in someone else's bucket or
        # webhook: only paths that keep to the operator's own make it a route.
        if self.host.startswith("*.") or not hostnames.shared_by_path(self.host):
            return self
        if not self.paths or any(
            _path_matches(rule, probe) for rule in self.paths for probe in hostnames.ANYONES_PATHS
        ):
            raise ValueError(
                f"{self.host!r} serves anyone's bucket, webhook or topic by its path, so "
                "the host alone would reach anyone's: add paths that keep to yours "
                "(paths: [/your-bucket/]), or name your bucket's own host "
                "(your-bucket.s3.amazonaws.com) where there is one"
            )
        return self

    @model_validator(mode="after")
    def _credentials_only_over_tls(self) -> Route:
        if self.auth is not None and self.scheme == "http":
            raise ValueError(
                "a route with auth sends a credential, which never goes over plain HTTP: "
                "drop scheme: http (auth routes are https only) or drop auth"
            )
        if self.passthrough and self.scheme == "http":
            raise ValueError("a passthrough route tunnels TLS: drop scheme: http")
        return self

    @property
    def wire(self) -> frozenset[tuple[str, int]]:
        """The (scheme, port) pairs this route matches.

        A route with ``auth`` matches only TLS to its port (443 unless set): a credential
        never goes over plain HTTP or to another port. Without ``auth`` and ``scheme``, both
        https and http on their default ports (or both on ``port``).
        """
        if self.auth is not None or self.scheme == "https" or self.passthrough:
            return frozenset({("https", self.port or 443)})
        if self.scheme == "http":
            return frozenset({("http", self.port or 80)})
        if self.port is not None:
            return frozenset({("https", self.port), ("http", self.port)})
        return frozenset({("https", 443), ("http", 80)})

    def credential_wire(self) -> tuple[str, int] | None:
        """Where this route's credential may go: TLS to this port, or None without auth."""
        return ("https", self.port or 443) if self.auth is not None else None

    def matches_host(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def matches(
        self,
        method: str,
        host: str,
        path: str,
        headers: Mapping[str, str],
        *,
        scheme: str = "https",
        port: int | None = None,
    ) -> bool:
        """``path`` as :func:`bottle.urlpaths.normalise` gives it; ``headers`` lower-cased."""
        if not self.matches_host(host):
            return False
        if (scheme, port or DEFAULT_PORTS.get(scheme, 0)) not in self.wire:
            return False
        if self.methods and method.upper() not in self.methods:
            return False
        if self.paths and not any(_path_matches(rule, path) for rule in self.paths):
            return False
        for name, pattern in self.headers.items():
            value = headers.get(name)
            if value is None or not patterns.fullmatch(pattern, value):
                return False
        return True


def _path_matches(rule: str, path: str) -> bool:
    if rule.startswith("^"):
        return patterns.search(rule, path)
    return urlpaths.prefix_matches(rule, path)


class Routes(_Strict):
    """An ordered route table; the first route that matches wins."""

    routes: tuple[Route, ...] = ()

    @model_validator(mode="after")
    def _one_credential_per_host(self) -> Routes:
        seen: dict[str, Auth | None] = {}
        for route in self.routes:
            earlier = seen.get(route.host)
            if route.auth is not None and earlier is not None and earlier != route.auth:
                raise ValueError(
                    f"host {route.host} has two routes with different auth; a host gets "
                    "one credential: make the auth blocks equal or merge the routes"
                )
            if route.auth is not None or route.host not in seen:
                seen[route.host] = route.auth
        files = {r.auth.file_ref for r in self.routes if r.auth and r.auth.file_ref}
        if len(files) > 1:
            raise ValueError(
                "routes name two ChatGPT logins (file_ref): egress holds one; use the same "
                "auth.json everywhere"
            )
        return self

    def match(
        self,
        method: str,
        host: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        *,
        scheme: str = "https",
        port: int | None = None,
    ) -> Route | None:
        """The first route allowing this request; None for none, or for a path servers may
        read differently (:func:`bottle.urlpaths.ambiguity`: egress refuses those first)."""
        if urlpaths.ambiguity(path) is not None:
            return None
        normal = urlpaths.normalise(path)
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        for route in self.routes:
            if route.matches(method, host, normal, lowered, scheme=scheme, port=port):
                return route
        return None

    def credential_wires(self, host: str) -> frozenset[tuple[str, int]]:
        """Where this host's credential may go: the (https, port) of each route with ``auth``
        naming it; empty when no route gives the host a credential."""
        return frozenset(
            wire
            for route in self.routes
            if route.matches_host(host) and (wire := route.credential_wire()) is not None
        )

    def passthrough_for(self, host: str, port: int | None = None) -> bool:
        """True when the first route naming this host says not to intercept it (on ``port``,
        when given: a passthrough route tunnels only to its own port, 443 by default)."""
        for route in self.routes:
            if route.matches_host(host):
                return route.passthrough and (port is None or port == (route.port or 443))
        return False

    def private_for(self, host: str) -> bool:
        """True when a route naming this host lets it resolve to a non-public address.

        About the host, not the path: the address is chosen before any request is seen.
        """
        return any(route.private for route in self.routes if route.matches_host(host))

    def allows_host(self, host: str) -> bool:
        return any(route.matches_host(host) for route in self.routes)

    @cached_property
    def token_refs(self) -> tuple[str, ...]:
        """The host variables the credentials come from (a chatgpt login is a file)."""
        return tuple(sorted({r.auth.token_ref for r in self.routes if r.auth and r.auth.token_ref}))

    @cached_property
    def secret_vars(self) -> tuple[str, ...]:
        """Every variable of egress's environment a credential is made of."""
        return tuple(sorted({v for r in self.routes if r.auth for v in r.auth.secret_vars}))

    @cached_property
    def chatgpt_files(self) -> tuple[str, ...]:
        """The host files (Codex's auth.json) the chatgpt credentials are read from."""
        return tuple(
            dict.fromkeys(r.auth.file_ref for r in self.routes if r.auth and r.auth.file_ref)
        )

    def with_route(self, route: Route) -> Routes:
        """This table plus ``route`` at the end; an equal route is not added twice."""
        if route in self.routes:
            return self
        return Routes(routes=(*self.routes, route))

    def to_data(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_defaults=True)

    def to_yaml(self) -> bytes:
        """The routes file egress reads (`{routes: [...]}`), as `parse_routes_file` parses it."""
        import io

        from ruamel.yaml import YAML

        yaml = YAML(typ="safe")  # the C emitter where installed: same bytes, faster
        yaml.default_flow_style = False
        yaml.sort_base_mapping_type_on_output = False  # type: ignore[assignment]
        out = io.StringIO()
        yaml.dump(self.to_data() or {"routes": []}, out)
        return out.getvalue().encode()


class RoutesFileError(ValueError):
    """A routes file could not be turned into a :class:`Routes`; the message says why."""


def parse_routes_file(data: bytes, source: str = "routes.yaml") -> Routes:
    """Parse and validate the bytes of ``live-config/egress/routes.yaml`` (``{routes: [...]}``).

    The one parser of that file: the host before it writes or reloads, egress when it loads,
    supervise when it lists the routes in force. Bounded like a bottle file: the host also
    parses the copy egress echoes in its status, which a compromised egress writes.
    """
    from ruamel.yaml.error import YAMLError

    from bottle import boundedyaml

    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RoutesFileError(
            f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc
    try:
        loaded = boundedyaml.load(text)
    except boundedyaml.MaxDepthExceededError as exc:
        raise RoutesFileError(
            f"{source}: nests deeper than {boundedyaml.MAX_DEPTH} levels"
        ) from exc
    except YAMLError as exc:
        raise RoutesFileError(f"{source}: not valid YAML: {exc}") from exc
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise RoutesFileError(
            f"{source}: the top level must be a mapping like `routes: [...]`, "
            f"not {type(loaded).__name__}"
        )
    try:
        return Routes.model_validate(loaded)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in err['loc']) or '(top)'}: "
            f"{str(err['msg']).removeprefix('Value error, ')}"
            for err in exc.errors(include_input=False, include_url=False)
        )
        raise RoutesFileError(f"{source}: {problems}") from exc
