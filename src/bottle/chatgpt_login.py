"""Codex's ChatGPT login (``auth: {scheme: chatgpt, file_ref: ~/.codex/auth.json}``).

The host holds the real ``auth.json`` (what ``codex login`` wrote). At ``up`` bottle reads
it and hands egress, through compose's own environment, the two values a request needs: the
access token and the account id (:func:`compose_values`). The id token and the refresh token
never leave the host. The agent gets :func:`placeholder_auth`: JWT-shaped placeholders with
the claims Codex 0.171.0 parses (it decodes the payloads, never checks a signature).

No refresh inside the bottle. Codex refreshes only when a request gets 401 or the access
token's ``exp`` is near, and the placeholder's ``exp`` is far off. A refresh would rotate the
host's refresh token, so the host's own Codex would be logged out, and the new tokens would
land in the agent's file. The login is refreshed on the host, by running ``codex`` there.
A start refuses an expired login, and egress refuses to send one that expired during the
session (``egress_credential_expired``).

Pure functions of bytes plus one host-file read; used by the host and by egress (JWT expiry).
"""

from __future__ import annotations

import base64
import binascii
import errno
import json
import math
import os
import re
import stat
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bottle.errors import Refused
from bottle.policy import CHATGPT_ACCESS_VAR, CHATGPT_ACCOUNT_VAR, PLACEHOLDER

if TYPE_CHECKING:
    from bottle.plan import BottlePlan

#: The host Codex's backend; the route with ``scheme: chatgpt`` names it.
CHATGPT_HOST = "chatgpt.com"
#: The agent's account id. It equals what egress's response scrubbing writes in place of
#: the real id (``bottle.runtime.egress.scrub.MARKER``). Codex looks its own id up in the
#: backend's workspace list (``/backend-api/wham/accounts/check``), and there it finds it.
PLACEHOLDER_ACCOUNT = "[bottle:scrubbed]"
#: 2100-01-01: the placeholders never look due for a refresh.
FAR_EXP = 4102444800
_AUTH_CLAIMS = "https://api.openai.com/auth"
_MAX_FILE = 1 << 20
_ACCOUNT_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@dataclass(frozen=True)
class Login:
    """What egress needs of the host's login. ``repr`` shows no token."""

    access_token: str = field(repr=False)
    account_id: str = field(repr=False)
    expires: float | None = None


def _b64(data: dict[str, Any]) -> str:
    # A leading space: still JSON to Codex, but the segment does not start "eyJ", so egress's
    # DLP does not take the placeholder for a real JWT (``dlp.TOKEN_PATTERNS``) and refuse it.
    raw = b" " + json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def placeholder_jwt(claims: Mapping[str, Any]) -> str:
    """A JWT-shaped placeholder: real claims, no key, a signature that is only a marker."""
    return ".".join((_b64({"alg": "none", "typ": "JWT"}), _b64(dict(claims)), "bm90LXNpZ25lZA"))


def placeholder_auth() -> dict[str, Any]:
    """The agent's ``auth.json``: the shape of a ChatGPT login, nothing of the real one."""
    auth = {"chatgpt_account_id": PLACEHOLDER_ACCOUNT, "chatgpt_user_id": PLACEHOLDER}
    common = {"sub": PLACEHOLDER, "exp": FAR_EXP, _AUTH_CLAIMS: auth}
    id_claims = {
        **common,
        "email": "agent@bottle.invalid",
        _AUTH_CLAIMS: {**auth, "chatgpt_plan_type": "plus"},
    }
    return {
        "auth_mode": "chatgpt",
        "OPENAI_API_KEY": None,
        "tokens": {
            "id_token": placeholder_jwt(id_claims),
            "access_token": placeholder_jwt(common),
            "refresh_token": PLACEHOLDER,
            "account_id": PLACEHOLDER_ACCOUNT,
        },
        "last_refresh": "2100-01-01T00:00:00Z",
    }


def claims(token: str) -> dict[str, Any] | None:
    """The payload of JWT ``token``, unverified; None when it is not one."""
    parts = token.split(".")
    if len(parts) != 3 or not all(parts) or len(token) > _MAX_FILE:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        found = json.loads(payload)
    except (binascii.Error, ValueError, RecursionError):  # nesting past the parser's stack
        return None
    return found if isinstance(found, dict) else None


def expiry(token: str) -> float | None:
    """The ``exp`` of JWT ``token`` (seconds), None when it has none."""
    exp = (claims(token) or {}).get("exp")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    try:
        seconds = float(exp)
    except OverflowError:  # an int past any float: no date a login could mean
        return None
    return seconds if math.isfinite(seconds) else None


def host_path(file_ref: str) -> Path:
    path = Path(file_ref).expanduser()
    if not path.is_absolute():
        raise Refused(
            f"file_ref {file_ref!r} is not an absolute path",
            hint="Name the host's Codex login by its full path, e.g. ~/.codex/auth.json.",
        )
    return path


def _read_file(path: Path) -> bytes:
    """A regular file's first bytes; a link is followed (dotfile managers link auth.json),
    a FIFO or device is refused rather than waited on."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        return handle.read(_MAX_FILE + 1)


def read_login(file_ref: str, *, now: float | None = None) -> Login:
    """The host's ChatGPT login from Codex's ``auth.json``; Refused when it is none or
    has expired."""
    path = host_path(file_ref)
    fix = "Log in on the host with `codex login` (ChatGPT), then start again."
    try:
        raw = _read_file(path)
    except OSError as exc:
        raise Refused(f"cannot read the ChatGPT login {path}: {exc.strerror}", hint=fix) from None
    try:
        data = json.loads(raw) if len(raw) <= _MAX_FILE else None
    except (ValueError, RecursionError):
        data = None
    tokens = data.get("tokens") if isinstance(data, dict) else None
    access = tokens.get("access_token") if isinstance(tokens, dict) else None
    if not isinstance(tokens, dict) or not isinstance(access, str) or not access.strip():
        raise Refused(f"{path} holds no ChatGPT login (tokens.access_token)", hint=fix)
    account = tokens.get("account_id")
    if not isinstance(account, str) or not account:
        id_token = tokens.get("id_token")
        found = (claims(id_token) or {}) if isinstance(id_token, str) else {}
        auth = found.get(_AUTH_CLAIMS)
        account = auth.get("chatgpt_account_id") if isinstance(auth, dict) else None
    if not isinstance(account, str) or not _ACCOUNT_RE.fullmatch(account):
        raise Refused(f"{path} names no ChatGPT account (tokens.account_id)", hint=fix)
    if any(c in access for c in "\r\n\0") or len(access) > 64 << 10:
        raise Refused(f"{path}: tokens.access_token is not a token", hint=fix)
    expires = expiry(access)
    if expires is not None and expires <= (time.time() if now is None else now):
        try:
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(expires))
        except (OverflowError, OSError, ValueError):  # before any date gmtime can show
            when = f"{expires:.0f} s after the epoch"
        raise Refused(
            f"the ChatGPT login in {path} expired at {when}; bottle does not refresh it",
            hint="Run codex once on the host (it refreshes the login), then start again.",
        )
    return Login(access.strip(), account, expires)


def compose_values(plan: BottlePlan) -> dict[str, str]:
    """What compose's environment must hold for egress's chatgpt credential, if any."""
    egress = plan.sidecars.get("egress")
    routes = getattr(egress, "routes", None)
    files: tuple[str, ...] = getattr(routes, "chatgpt_files", ())
    if not files:
        return {}
    login = read_login(files[0])
    return {CHATGPT_ACCESS_VAR: login.access_token, CHATGPT_ACCOUNT_VAR: login.account_id}
