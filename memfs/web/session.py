"""The web page's session cookie and its CSRF rule (issue #21); no FastAPI here, the Guard calls it.

With a token set, a browser logs in once at /ui/login and then carries `memfs_session`, an HMAC of
the token (so the cookie is useless once the token changes and never holds the token itself),
HttpOnly (no script reads it) and SameSite=Strict (no other site's page sends it).

A request authenticated by that cookie (not by `Authorization: Bearer`) that could change
something must also carry `X-Memfs-CSRF: 1` and, where the browser says so, come from this origin:
a form or image on another site cannot set a custom header, and a script there cannot either without
a CORS grant this server never gives. So a forged cross-site POST is refused even by a browser that
ignores SameSite.
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import CookieError, SimpleCookie

SESSION_COOKIE = "memfs_session"
CSRF_HEADER = b"x-memfs-csrf"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"memfs web session v1", hashlib.sha256).hexdigest()


def token_matches(given: str, token: str) -> bool:
    return hmac.compare_digest(given.strip().encode(), token.encode())


def _header(scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def _cookie(scope, name: str) -> str | None:
    raw = _header(scope, b"cookie")
    if raw is None:
        return None
    try:
        jar = SimpleCookie(raw.decode("latin-1"))
    except CookieError:
        return None
    return jar[name].value if name in jar else None


def _same_origin(scope) -> bool:
    site = _header(scope, b"sec-fetch-site")
    if site is not None and site not in (b"same-origin", b"none"):
        return False
    origin, host = _header(scope, b"origin"), _header(scope, b"host")
    if origin is not None and host is not None:
        return origin.split(b"://", 1)[-1] == host
    return True


def cookie_ok(scope, token: str) -> bool:
    """The request carries this token's session cookie and, if it may change something, passes CSRF."""
    value = _cookie(scope, SESSION_COOKIE)
    if value is None or not hmac.compare_digest(value.encode(), session_value(token).encode()):
        return False
    if scope.get("method", "GET") in SAFE_METHODS:
        return True
    return _header(scope, CSRF_HEADER) == b"1" and _same_origin(scope)
