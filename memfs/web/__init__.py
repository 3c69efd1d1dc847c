"""The web page for the people who run memfs (issue #21), served by `memfs serve` at `/`.

The page is static (HTML, one script, one stylesheet, no library, nothing fetched from the internet)
and reads and writes only through the JSON API, so it shows exactly what every other client sees,
with the same limits and error messages. This module adds what a browser needs beyond that API:

- `/` for a browser (Accept: text/html) and `/ui/<asset>`: the page, under a strict
  Content-Security-Policy (no inline script, no eval, nothing from another origin);
- `/ui/login`: with a token set, the page asks for it once and keeps a session cookie derived from
  it (HttpOnly, SameSite=Strict); `session.py` checks that cookie and the CSRF rule for writes;
- `/events`: server-sent events when any memory changes (any client, or a file edited by hand once
  the watcher has indexed it), from `Operations.revision()`.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from importlib import resources
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .session import SESSION_COOKIE, session_value, token_matches

# The page may run only its own script and style and talk only to its own origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"content-security-policy": CSP, "x-content-type-options": "nosniff",
                    "referrer-policy": "no-referrer", "x-frame-options": "DENY", "cache-control": "no-cache"}
ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
          "login.css": "text/css; charset=utf-8"}
EVENT_POLL_SECONDS = 0.5
# An event stream ends after this long and the browser reconnects at once (EventSource does): a
# stopping server never waits on an open page for more than this.
EVENT_STREAM_SECONDS = 5.0


@functools.lru_cache(maxsize=None)
def asset(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


@functools.lru_cache(maxsize=None)
def asset_version(name: str) -> str:
    """The asset's content hash: the page names `/ui/app.js?v=<hash>`, so a browser keeps the file
    until it changes (a new memfs version) and a page view costs the HTML and the API call alone."""
    return hashlib.sha256(asset(name)).hexdigest()[:16]


def wants_html(request_or_scope) -> bool:
    """A browser asking for a page (Accept names text/html), from a Request or an ASGI scope."""
    if hasattr(request_or_scope, "headers"):
        accept = request_or_scope.headers.get("accept", "")
    else:
        accept = dict(request_or_scope["headers"]).get(b"accept", b"").decode("latin-1")
    return "text/html" in accept


def page() -> HTMLResponse:
    html = asset("index.html").decode()
    for name in ("app.js", "app.css"):
        html = html.replace(f"/ui/{name}", f"/ui/{name}?v={asset_version(name)}")
    return HTMLResponse(html, headers=SECURITY_HEADERS)


def web_router(ops, token: str | None) -> APIRouter:
    r = APIRouter(include_in_schema=False)

    @r.get("/ui/login")
    def login_form(error: str = "") -> HTMLResponse:
        html = asset("login.html").decode()
        message = "That token is not the one this server was started with." if error else ""
        return HTMLResponse(html.replace("<!--error-->", message), headers=SECURITY_HEADERS)

    @r.post("/ui/login")
    async def login(request: Request) -> Response:
        # A plain form post (no script on the login page): token=…
        given = (parse_qs((await request.body()).decode("utf-8", "replace")).get("token") or [""])[0]
        if token is None:
            return Response(status_code=303, headers={"location": "/"})
        if not token_matches(given, token):
            return Response(status_code=303, headers={"location": "/ui/login?error=1"})
        response = Response(status_code=303, headers={"location": "/"})
        response.set_cookie(SESSION_COOKIE, session_value(token), httponly=True, samesite="strict", path="/",
                            secure=request.url.scheme == "https")
        return response

    @r.post("/ui/logout")
    def logout() -> Response:
        response = Response(status_code=303, headers={"location": "/ui/login" if token else "/"})
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @r.get("/ui/{name}")
    def static(name: str, v: str = "") -> Response:
        if name not in ASSETS:
            return Response(status_code=404)
        headers = dict(SECURITY_HEADERS)
        if v == asset_version(name):
            headers["cache-control"] = "public, max-age=31536000, immutable"
        return Response(asset(name), media_type=ASSETS[name], headers=headers)

    @r.get("/events")
    async def events(request: Request) -> StreamingResponse:
        async def stream():
            yield "retry: 300\n\n"
            last, waited = None, 0.0
            while waited < EVENT_STREAM_SECONDS and not await request.is_disconnected():
                revision = await run_in_threadpool(ops.revision)
                if revision != last:
                    yield f"event: revision\ndata: {revision}\n\n"
                    last = revision
                await asyncio.sleep(EVENT_POLL_SECONDS)
                waited += EVENT_POLL_SECONDS

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    return r
