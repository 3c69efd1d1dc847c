"""The owner's HTTP API (FastAPI), thin over the operations (memfs.local.LocalOperations), assembled
from memfs.http's routers; and the extended-memory port beside it.

The same app answers on the owner's Unix socket (mode 0600: the file's permissions are the
authentication) and, when asked, on TCP, where a configured token is required on every route but
/health (memfs.http.guard). Errors are JSON (memfs.http.errors). OpenAPI at /docs and /openapi.json.
The request models are memfs.schemas': one per operation, shared by every door (#19).
"""

from __future__ import annotations

import time

from fastapi import FastAPI

from .. import __version__
from ..local import LocalOperations
from ..metrics import Metrics, RequestMetrics
from ..sync.http import router as sync_router
from ..web import web_router
from . import admin, backups, graph, kv, memories, search, transfer
from .deps import GUARDED, local_path
from .errors import ErrorStyle, OrjsonResponse, install_error_handlers
from .extended import extended_memory_app
from .guard import Guard
from .mcp import mount_mcp

RESOURCES = (admin, memories, search, backups, transfer, kv, graph)


def create_app(ops: LocalOperations, *, token: str | None = None, on_stop=None) -> FastAPI:
    """The API over `ops`. `on_stop()` is called by POST /owner/stop (None: the route refuses)."""
    owner = ops.owner
    owner.last_activity = time.monotonic()
    owner.in_flight = 0
    app = FastAPI(title="memfs", version=__version__, default_response_class=OrjsonResponse,
                  description="Memories as JSON files, with semantic and keyword search.")
    app.state.ops, app.state.token, app.state.on_stop = ops, token, on_stop
    app.state.metrics = Metrics(ops)
    app.add_middleware(Guard, token=token, owner=owner)
    app.add_middleware(RequestMetrics, counters=app.state.metrics.requests)  # outermost: 401s and 413s count too
    roots = (str(ops.layout.root), str(ops.layout.root.resolve()))
    install_error_handlers(app, ErrorStyle(roots=roots))
    app.include_router(sync_router(ops, GUARDED, local_path))  # issue #20
    app.include_router(web_router(ops, token))
    for resource in RESOURCES:
        app.include_router(resource.router)
    mount_mcp(app, ops, token=token, is_ready=lambda: owner.ready)
    return app


def with_extended_memory_api(app, ops: LocalOperations, *, port: int, token: str | None):
    """Answer the extended-memory service's API (memfs.http.extended) on its own port, so its clients'
    requests (`/store`, `/retrieve/{key}`, its own `/health` and `/stats`) work unchanged; `app` on
    every other listener.

    The same Guard as the main port stands in front (#19: this port once took no token and read any
    body whole): the token on every route, its /health included (it names the store's path and counts),
    the header and body limits and the body timeout. Its routes call the operations, like every door."""
    owner = ops.owner
    extended = extended_memory_app(lambda: ops, str(owner.layout.root))
    guarded = Guard(extended, token=token, owner=owner, public=frozenset(), check_ready=True)

    async def dispatch(scope, receive, send):
        server = scope.get("server")
        target = guarded if scope["type"] == "http" and server and server[1] == port else app
        await target(scope, receive, send)

    return dispatch
