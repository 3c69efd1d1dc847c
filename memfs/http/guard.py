"""The Guard: ASGI middleware in front of every listener's routes (#15, #19), and who may act.

The token is checked before a byte of the body is read (over the Unix socket, mode 0600, the file's
permissions are the authentication); the header limit holds however the headers came; the body limit
holds on the bytes actually received, while they come; the body must come within BODY_TIMEOUT_SECONDS
of the headers. Every refusal is JSON (memfs.http.errors).
"""

from __future__ import annotations

import asyncio
import hmac
import time

from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..inputs import BODY_TIMEOUT_SECONDS, MAX_HEADER_BYTES, MAX_REQUEST_BODY_BYTES
from ..web import wants_html
from ..web.session import cookie_ok
from .errors import error_response

LOGIN_PAGE = frozenset({"/ui/login", "/ui/login.css"})
QUIET_PATHS = ("/health", "/owner")  # polling them does not keep an owner alive


def on_unix_socket(scope) -> bool:
    server = scope.get("server")
    return server is None or server[1] is None


def bearer_ok(scope, token: str | None) -> bool:
    """The request may act: no token is set, it came over the Unix socket (0600: the file's permissions
    are the authentication), it carries `Authorization: Bearer <token>` (the scheme in any case), or
    the web page's session cookie with its CSRF rule (memfs.web.session)."""
    if token is None or on_unix_socket(scope):
        return True
    if cookie_ok(scope, token):
        return True
    given = b""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            given = value
    scheme, _, credentials = given.strip().partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), token.encode())


class BodyTooLarge(StarletteHTTPException):
    """Raised from `receive` once more than MAX_REQUEST_BODY_BYTES have come; FastAPI passes HTTP exceptions on."""

    def __init__(self):
        super().__init__(413, f"request body over {MAX_REQUEST_BODY_BYTES} bytes")


class BodyTimeout(StarletteHTTPException):
    """Raised from `receive` when the body has not all come within BODY_TIMEOUT_SECONDS of the headers
    (#19: a body sent one byte every 3 s held its connection forever)."""

    def __init__(self):
        super().__init__(408, f"the request body did not arrive within {BODY_TIMEOUT_SECONDS} s of its headers; "
                              "send it at once")


def header_bytes(scope) -> int:
    """The request line and headers' size, as h11 read them (name: value CRLF)."""
    return (len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
            + sum(len(k) + len(v) + 4 for k, v in scope.get("headers", ())))


class LimitedReceive:
    """`receive` with the body limit and the body timeout: counts the body's bytes while they come."""

    def __init__(self, receive, body_timeout: float):
        self.receive, self.body_timeout = receive, body_timeout
        self.received, self.done, self.deadline = 0, False, None

    async def __call__(self):
        if self.done:  # the body is in: what comes now is http.disconnect, awaited as long as it takes
            return await self.receive()
        self.deadline = self.deadline or asyncio.get_running_loop().time() + self.body_timeout
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self.receive()
        except TimeoutError:
            raise BodyTimeout() from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > MAX_REQUEST_BODY_BYTES:
                raise BodyTooLarge()
            self.done = not message.get("more_body", False)
        return message


class Guard:
    """ASGI middleware in front of every listener's routes: the main port, the extended-memory port and
    /mcp (see the module's docstring). It also keeps the owner's idle clock: requests in flight, and
    when the last one ended.
    """

    def __init__(self, app, *, token: str | None, owner, public: frozenset[str] = frozenset({"/health"}) | LOGIN_PAGE,
                 body_timeout: float = BODY_TIMEOUT_SECONDS, check_ready: bool = False):
        # `public`: the paths answered without the token (memfs's /health, which then hides its details).
        # `check_ready`: answer 503 not_ready but on / and /health while the startup reconcile runs (the
        # main app does it with a route dependency instead, so /owner and /owner/stop answer then).
        self.app, self.token, self.owner, self.public = app, token, owner, public
        self.body_timeout, self.check_ready = body_timeout, check_ready

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is not None:
            if refusal[0] == 401 and scope["method"] == "GET" and wants_html(scope):  # a person at a browser
                return await Response(status_code=303, headers={"location": "/ui/login"})(scope, receive, send)
            return await error_response(*refusal, close=True)(scope, receive, send)
        quiet = scope["path"] in QUIET_PATHS
        if not quiet:
            self.owner.in_flight += 1
        try:
            await self.app(scope, LimitedReceive(receive, self.body_timeout), send)
        finally:
            if not quiet:
                self.owner.in_flight -= 1
                self.owner.last_activity = time.monotonic()

    def refusal(self, scope) -> tuple[int, str, str] | None:
        """(status, code, message) for a request refused on its headers alone, else None."""
        # /docs, /redoc and /openapi.json too: README promises the token on every route but /health.
        if scope["path"] not in self.public and not bearer_ok(scope, self.token):
            return 401, "unauthorized", "missing or wrong bearer token (set Authorization: Bearer …)"
        if self.check_ready and not self.owner.ready and scope["path"] not in ("/", "/health"):
            return 503, "not_ready", "the startup reconcile is still running; try again shortly"
        if header_bytes(scope) > MAX_HEADER_BYTES:
            return 431, "too_large", f"request line and headers over {MAX_HEADER_BYTES} bytes; send less in headers"
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_REQUEST_BODY_BYTES):
            return 413, "too_large", f"request body over {MAX_REQUEST_BODY_BYTES} bytes"
        return None
