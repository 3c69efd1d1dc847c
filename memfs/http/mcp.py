"""MCP over streamable HTTP at `/mcp` on the app `memfs serve` builds (issue #22; docs/mcp.md § Over HTTP).

The official SDK's transport, stateless with JSON responses (what its docs recommend for a server that
scales and sits behind a proxy: no session state to lose when a connection drops). The route is part
of the app, so the one guard in front of every route (token before a byte of the body is read, body
limit, the owner's idle clock: memfs.http.guard.Guard) stands in front of it too; readiness is checked
here, as the API's routes check it. The tools are the very ones `memfs mcp` lists over stdio, over the
owner's own operations, so the same input gets the same result or the same refusal through either.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable

from starlette.responses import JSONResponse
from starlette.routing import Route

from ..inputs import MAX_REQUEST_BODY_BYTES
from ..mcp.gateway import Gateway
from ..mcp.server import build_server

log = logging.getLogger("memfs.mcp")

PATH = "/mcp"
HTTP_TOOLS = "all"  # native, mcp-memory-service's names and the knowledge graph: a URL serves every client
LOOPBACK_HOSTS = ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"]


class McpEndpoint:
    """The ASGI app answering /mcp: 503 until the owner's first reconcile is done, then the SDK's."""

    def __init__(self, manager, is_ready: Callable[[], bool]):
        self.manager, self.is_ready = manager, is_ready
        self.route = Route(PATH, self)

    async def __call__(self, scope, receive, send) -> None:
        scope["route"] = self.route  # as FastAPI does for its own routes: /metrics counts /mcp by name
        if not self.is_ready():
            response = JSONResponse({"error": {"code": "not_ready", "message": "the startup reconcile is still "
                                               "running; try again shortly"}}, status_code=503)
            return await response(scope, receive, send)
        await self.manager.handle_request(scope, receive, send)


def security_settings(token: str | None):
    """With a token, the token is the protection and any Host may reach /mcp (a remote agent names the
    server as it knows it). Without one, only loopback names: a web page the user opens cannot make the
    browser call a local /mcp under another name (DNS rebinding)."""
    from mcp.server.transport_security import TransportSecuritySettings

    if token:
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    return TransportSecuritySettings(enable_dns_rebinding_protection=True, allowed_hosts=LOOPBACK_HOSTS,
                                     allowed_origins=[f"http://{h}" for h in LOOPBACK_HOSTS])


def mount_mcp(app, ops: Any, *, token: str | None, is_ready: Callable[[], bool], tools: str = HTTP_TOOLS) -> None:
    """Add /mcp to `app` (a FastAPI/Starlette app) and run the SDK's session manager in its lifespan."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    server = build_server(Gateway.of(ops), tools)
    root.handlers[:], root.level = handlers, level  # the SDK's basicConfig(rich) is for its own processes, not the owner's log
    server.streamable_http_app(stateless_http=True, json_response=True, transport_security=security_settings(token),
                               max_request_body_size=MAX_REQUEST_BODY_BYTES)
    manager = server.session_manager
    # First, not last: FastAPI tries its routes in order, and /mcp behind every API router cost each
    # tool call ~0.4 ms of failed matches (#22: a third of /mcp's overhead over the JSON API).
    app.router.routes.insert(0, McpEndpoint(manager, is_ready).route)
    before = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(a):
        async with manager.run(), before(a) as state:
            yield state

    app.router.lifespan_context = lifespan
