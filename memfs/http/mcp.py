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

import anyio
import anyio.to_thread
from starlette.responses import JSONResponse
from starlette.routing import Route

from ..inputs import MAX_REQUEST_BODY_BYTES

log = logging.getLogger("memfs.mcp")

PATH = "/mcp"
HTTP_TOOLS = "all"  # native, mcp-memory-service's names and the knowledge graph: a URL serves every client
LOOPBACK_HOSTS = ["127.0.0.1", "127.0.0.1:*", "localhost", "localhost:*", "[::1]", "[::1]:*"]


class McpEndpoint:
    """The ASGI app answering /mcp: 503 until the owner's first reconcile is done, then the SDK's.

    The SDK's server is built in the background once the app runs (`serve`, in the app's lifespan):
    importing the SDK takes ~0.6 s, more than half of the app's own start, and every owner start
    (one started on demand for a CLI command, `memfs serve` answering /health) waited for it. A call
    that comes before it is built waits for it."""

    def __init__(self, build: Callable[[], Any], is_ready: Callable[[], bool]):
        self.build, self.is_ready = build, is_ready
        self.route = Route(PATH, self)
        self.manager = None
        self.built: anyio.Event | None = None  # made in the running loop (serve)
        self.failed: str | None = None

    def lifespan(self, before):
        """The app's lifespan `before`, with the SDK's server built and run beside it (`serve`)."""

        @contextlib.asynccontextmanager
        async def lifespan(app):
            async with anyio.create_task_group() as tasks:
                started = anyio.Event()
                tasks.start_soon(self.serve, started)
                await started.wait()  # `built` exists before the first request
                async with before(app) as state:
                    yield state
                tasks.cancel_scope.cancel()

        return lifespan

    async def serve(self, started: anyio.Event) -> None:
        """Build the SDK's server off the event loop, then run its session manager until cancelled."""
        self.built = anyio.Event()
        started.set()
        try:
            self.manager = await anyio.to_thread.run_sync(self.build)
        except Exception as e:  # answered on every /mcp call, with the reason; the API keeps serving
            log.exception("could not start MCP over HTTP")
            self.failed = f"{type(e).__name__}: {e}"
            self.built.set()
            return
        async with self.manager.run():
            self.built.set()
            await anyio.sleep_forever()

    async def __call__(self, scope, receive, send) -> None:
        scope["route"] = self.route  # as FastAPI does for its own routes: /metrics counts /mcp by name
        if not self.is_ready():
            return await _error(503, "not_ready", "the startup reconcile is still running; try again shortly",
                                scope, receive, send)
        if self.built is not None and not self.built.is_set():  # a set Event's wait() still yields to the loop
            await self.built.wait()
        if self.manager is None:
            why = self.failed or "the app's lifespan, which starts it, did not run"
            return await _error(500, "mcp_unavailable", f"MCP over HTTP could not start ({why}); "
                                "the owner's log has the details", scope, receive, send)
        await self.manager.handle_request(scope, receive, send)


async def _error(status: int, code: str, message: str, scope, receive, send) -> None:
    await JSONResponse({"error": {"code": code, "message": message}}, status_code=status)(scope, receive, send)


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
    """Add /mcp to `app` (a FastAPI/Starlette app); its lifespan builds and runs the SDK's server."""

    def build():
        from ..mcp.gateway import Gateway
        from ..mcp.server import build_server

        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        server = build_server(Gateway.of(ops), tools)
        root.handlers[:], root.level = handlers, level  # the SDK's basicConfig(rich) is for its own processes, not the owner's log
        server.streamable_http_app(stateless_http=True, json_response=True,
                                   transport_security=security_settings(token),
                                   max_request_body_size=MAX_REQUEST_BODY_BYTES)
        return server.session_manager

    endpoint = McpEndpoint(build, is_ready)
    # First, not last: FastAPI tries its routes in order, and /mcp behind every API router cost each
    # tool call ~0.4 ms of failed matches (#22: a third of /mcp's overhead over the JSON API).
    app.router.routes.insert(0, endpoint.route)
    app.router.lifespan_context = endpoint.lifespan(app.router.lifespan_context)
