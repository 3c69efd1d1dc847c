"""The owner's HTTP API (FastAPI), thin over the operations (memfs.local.LocalOperations).

The same app answers on the owner's Unix socket (mode 0600: the file's permissions are the
authentication) and, when asked, on TCP, where a configured token is required on every route but
/health. Errors are JSON: {"error": {"code": "not_found", "message": "…"}}; the code names the
memfs.errors class, so memfs.remote raises the same exception the in-process path raises.
OpenAPI at /docs and /openapi.json.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import logging
import secrets
import time
from typing import Any, Literal

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .errors import InternalError, MemfsError, relative_to_root
from .inputs import BODY_TIMEOUT_SECONDS, MAX_HEADER_BYTES, MAX_REQUEST_BODY_BYTES
from .local import LocalOperations
from .metrics import CONTENT_TYPE as METRICS_TYPE, Metrics, RequestMetrics
from .ops import Retention
from .schemas import (BackupIn, ExportIn, ImportIn, KVIn, MemoryIn, MemoryPatch, OffsiteIn, PageLimit,
                      RemoveMatchingIn, RestoreIn, RetentionIn, SearchIn, ValidateIn, When, filters)
from .web import page, wants_html, web_router
from .web.session import cookie_ok

log = logging.getLogger("memfs.server")

MAX_BODY = MAX_REQUEST_BODY_BYTES  # the name tests and benches know


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str, close: bool = False) -> JSONResponse:
    # `Connection: close` on a refusal whose body was not read: the server drops the connection
    # instead of reading (and discarding) the rest of, say, a 100 MB upload.
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers={"connection": "close"} if close else None)


class OrjsonResponse(JSONResponse):
    """orjson instead of the stdlib encoder; results are already plain dicts (Result.to_dict)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


# The request models are memfs.schemas': one per operation, shared by every door (#19).


def _on_unix_socket(scope) -> bool:
    server = scope.get("server")
    return server is None or server[1] is None


def bearer_ok(scope, token: str | None) -> bool:
    """The request may act: no token is set, it came over the Unix socket (0600: the file's permissions
    are the authentication), it carries `Authorization: Bearer <token>` (the scheme in any case), or
    the web page's session cookie with its CSRF rule (memfs.web.session)."""
    if token is None or _on_unix_socket(scope):
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
    """Raised from `receive` once more than MAX_BODY bytes have come; FastAPI passes HTTP exceptions on."""

    def __init__(self):
        super().__init__(413, f"request body over {MAX_BODY} bytes")


LOGIN_PAGE = frozenset({"/ui/login", "/ui/login.css"})


def _redirect(location: str) -> Response:
    return Response(status_code=303, headers={"location": location})


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


class Guard:
    """ASGI middleware in front of every listener's routes (#15, #19): the main port, the extended-memory
    port and /mcp. The token is checked before a byte of the body is read; the header limit holds
    however the headers came (#19: 100 KB in one write went through); the body limit holds on the bytes
    actually received, chunked or not, while they come, and the body must come within
    BODY_TIMEOUT_SECONDS of the headers. Every refusal is JSON.

    It also keeps the owner's idle clock: requests in flight, and when the last one ended.
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
        path = scope["path"]
        refusal = self.refusal(scope)
        if refusal is not None:
            if refusal[0] == 401 and scope["method"] == "GET" and wants_html(scope):
                return await _redirect("/ui/login")(scope, receive, send)  # a person at a browser
            return await _error(*refusal, close=True)(scope, receive, send)
        received, done, deadline = 0, False, None

        async def limited():
            nonlocal received, done, deadline
            if done:  # the body is in: what comes now is http.disconnect, awaited as long as it takes
                return await receive()
            loop = asyncio.get_running_loop()
            deadline = deadline or loop.time() + self.body_timeout
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > MAX_BODY:
                    raise BodyTooLarge()
                done = not message.get("more_body", False)
            return message

        quiet = path in ("/health", "/owner")  # polling them does not keep an owner alive
        if not quiet:
            self.owner.in_flight += 1
        try:
            await self.app(scope, limited, send)
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
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return 413, "too_large", f"request body over {MAX_BODY} bytes"
        return None


def create_app(ops: LocalOperations, *, token: str | None = None, on_stop=None) -> FastAPI:
    """The API over `ops`. `on_stop()` is called by POST /owner/stop (None: the route refuses)."""
    owner = ops.owner
    owner.last_activity = time.monotonic()
    owner.in_flight = 0
    app = FastAPI(title="memfs", version=__version__, default_response_class=OrjsonResponse,
                  description="Memories as JSON files, with semantic and keyword search.")
    app.add_middleware(Guard, token=token, owner=owner)
    metrics = Metrics(ops)
    app.add_middleware(RequestMetrics, counters=metrics.requests)  # outermost: 401s and 413s count too

    async def ready() -> None:
        # async: FastAPI runs a sync dependency in its threadpool, a second thread hop per request
        if not owner.ready:
            raise ApiError(503, "not_ready", "the startup reconcile is still running; try again shortly")

    guarded = [Depends(ready)]  # the token: Guard, before the body is read

    def local_path(request: Request, value: str | None) -> str | None:
        """A path on the owner's machine (another backup directory, an archive by path) is taken only
        over the Unix socket, from a local user; over TCP, backups are named within backups/."""
        if value is not None and not _on_unix_socket(request.scope):
            raise ApiError(422, "bad_request", "paths on the server are accepted only over its Unix socket; "
                                               "name a backup in its backups/ directory instead")
        return value

    from .sync.http import router as sync_router  # issue #20

    app.include_router(sync_router(ops, guarded, local_path))

    @app.exception_handler(ApiError)
    async def on_api_error(request, e: ApiError):
        return _error(e.status, e.code, e.message)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "value_error":  # a schema check in the core's words (inputs): say them as they are
            return _error(422, "bad_request", str(first.get("msg", "")).removeprefix("Value error, "))
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "bad_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request, e: StarletteHTTPException):
        codes = {404: "no_route", 405: "method_not_allowed", 408: "timeout", 413: "too_large"}
        return _error(e.status_code, codes.get(e.status_code, "http_error"), str(e.detail),
                      close=e.status_code in (408, 413))

    roots = [str(ops.layout.root), str(ops.layout.root.resolve())]

    def relative(message: str) -> str:
        """No absolute path of the store in a response (#15): the messages name files from its root."""
        return relative_to_root(message, roots)

    @app.exception_handler(MemfsError)
    async def on_memfs_error(request, e: MemfsError):
        return _error(e.http_status, e.code, relative(str(e)))

    @app.exception_handler(Exception)
    async def on_unexpected(request, e: Exception):
        error_id = secrets.token_hex(4)
        log.error("unexpected error %s in %s %s", error_id, request.method, request.url.path, exc_info=e)
        err = InternalError(f"unexpected error ({type(e).__name__}); the owner's log (data/logs/) has the "
                            f"details under error id {error_id}")
        return _error(err.http_status, err.code, str(err))

    app.include_router(web_router(ops, token))

    @app.get("/")
    def index(request: Request):
        if wants_html(request):  # a browser: the web page (memfs.web); scripts get the links below
            return page()
        return {"service": "memfs", "version": __version__,
                "links": {"health": "/health", "docs": "/docs", "openapi": "/openapi.json",
                          "memories": "/memories", "search": "/search", "stats": "/stats", "backups": "/backups"}}

    @app.get("/health")
    def health(request: Request):
        h = ops.health(details=bearer_ok(request.scope, token))
        return OrjsonResponse(h.to_dict(), status_code=200 if h.status == "ok" else 503)

    @app.get("/metrics", dependencies=guarded)
    def get_metrics():  # Prometheus text format; the token like every route (Guard)
        return PlainTextResponse(metrics.render(), media_type=METRICS_TYPE)

    @app.get("/owner")
    def status():
        return ops.status().to_dict()

    @app.post("/owner/stop", status_code=202)
    def stop():
        if on_stop is None:
            raise ApiError(409, "busy", "this owner cannot be stopped through the API")
        on_stop()
        return {"stopping": True}

    # -- memories -----------------------------------------------------------------------------------

    @app.post("/memories", status_code=201, dependencies=guarded)
    def add_memory(body: MemoryIn):
        r = ops.add(body.content, tags=body.tags, type=body.type, metadata=body.metadata,
                    allow_duplicate=body.allow_duplicate)
        return OrjsonResponse(r.to_dict(), status_code=200 if r.duplicate else 201)

    @app.get("/memories", dependencies=guarded)
    def list_memories(tag: list[str] = Query(default=[]), match: Literal["any", "all"] = "any",
                      type: str | None = None, since: When = None, until: When = None,
                      limit: PageLimit = 50, cursor: str | None = None):
        return OrjsonResponse(ops.list(filters(tag, match, type, since, until), limit=limit, cursor=cursor).to_dict())

    @app.get("/memories/{mem_id:path}", dependencies=guarded)
    def get_memory(mem_id: str):
        return OrjsonResponse(ops.get(mem_id).to_dict())

    @app.patch("/memories/{mem_id:path}", dependencies=guarded)
    def update_memory(mem_id: str, body: MemoryPatch):
        return OrjsonResponse(ops.update(mem_id, content=body.content, tags=body.tags, add_tags=body.add_tags,
                                         remove_tags=body.remove_tags, type=body.type,
                                         metadata=body.metadata).to_dict())

    @app.delete("/memories/{mem_id:path}", dependencies=guarded)
    def delete_memory(mem_id: str):
        removed = ops.remove(mem_id)
        return OrjsonResponse({"removed": removed.memory.id, "memory": removed.to_dict()})

    @app.post("/search", dependencies=guarded)
    def search(body: SearchIn):
        return OrjsonResponse(ops.search(body.query, k=body.k, mode=body.mode, filters=body.filters(),
                                         min_score=body.min_score).to_dict())

    # -- the store as a whole -----------------------------------------------------------------------

    @app.get("/revision", dependencies=guarded)
    def revision():
        return {"revision": ops.revision()}

    @app.get("/stats", dependencies=guarded)
    def stats():
        return OrjsonResponse(ops.stats().to_dict())

    @app.post("/reindex", dependencies=guarded)
    def reindex():
        return OrjsonResponse(ops.reindex().to_dict())

    @app.post("/validate", dependencies=guarded)
    def validate(request: Request, body: ValidateIn | None = None, backups: bool = False):
        body = body or ValidateIn(backups=backups)
        return OrjsonResponse(ops.validate(backups=body.backups or backups, fix=body.fix,
                                           backup_dir=local_path(request, body.backup_dir),
                                           identity_file=local_path(request, body.identity_file),
                                           passphrase_file=local_path(request, body.passphrase_file)).to_dict())

    # -- backups ------------------------------------------------------------------------------------

    @app.post("/backups", status_code=201, dependencies=guarded)
    def make_backup(request: Request, body: BackupIn | None = None):
        body = body or BackupIn()
        recipients = [r if r.startswith(("age1", "ssh-")) else local_path(request, r) for r in body.recipients]
        return OrjsonResponse(ops.backup(compression=body.compression, prune=body.prune, retention=body.retention(),
                                         backup_dir=local_path(request, body.backup_dir), recipients=recipients,
                                         passphrase_file=local_path(request, body.passphrase_file),
                                         copy_to=local_path(request, body.copy_to)).to_dict(), status_code=201)

    @app.get("/backups", dependencies=guarded)
    def get_backups(request: Request, verify: Literal["deep", "quick"] | None = None, keep_daily: int = 7,
                    keep_weekly: int = 4, keep_monthly: int = 12, keep_pre_restore: int = 3,
                    keep_pre_restore_days: int = 7, identity_file: str | None = None, backup_dir: str | None = None,
                    passphrase_file: str | None = None):
        retention = Retention(keep_daily, keep_weekly, keep_monthly, keep_pre_restore, keep_pre_restore_days)
        return OrjsonResponse(ops.list_backups(retention=retention, verify=verify,
                                               identity_file=local_path(request, identity_file),
                                               passphrase_file=local_path(request, passphrase_file),
                                               backup_dir=local_path(request, backup_dir)).to_dict())

    @app.post("/backups/prune", dependencies=guarded)
    def prune(request: Request, body: RetentionIn | None = None, dry_run: bool = False):
        body = body or RetentionIn()
        return OrjsonResponse(ops.prune(retention=body.retention(), dry_run=dry_run,
                                        backup_dir=local_path(request, body.backup_dir)).to_dict())

    @app.post("/backups/restore", dependencies=guarded)
    def restore(request: Request, body: RestoreIn):
        archive = body.archive if "/" not in body.archive else local_path(request, body.archive)
        return OrjsonResponse(ops.restore(archive, verify=body.verify, dry_run=body.dry_run,
                                          backup_dir=local_path(request, body.backup_dir),
                                          identity_file=local_path(request, body.identity_file),
                                          passphrase_file=local_path(request, body.passphrase_file)).to_dict())

    @app.post("/offsite/sync", dependencies=guarded)
    def offsite(request: Request, body: OffsiteIn):
        return OrjsonResponse(ops.offsite_sync(local_path(request, body.dest), retention=body.retention(), prune=body.prune,
                                               dry_run=body.dry_run,
                                               backup_dir=local_path(request, body.backup_dir)).to_dict())

    # -- in and out, key/value ------------------------------------------------------------------------

    @app.post("/export", dependencies=guarded)
    def export(body: ExportIn | None = None):
        """The export as the response body (spooled to a temp file: constant memory at any size)."""
        import tempfile

        from starlette.background import BackgroundTask
        from starlette.responses import FileResponse

        body = body or ExportIn()
        spool = tempfile.NamedTemporaryFile(prefix="memfs-export-", suffix=".json", delete=False)
        try:
            with spool:
                report = ops.export(spool, format=body.format, filter_tags=body.filter_tags,
                                    include_embeddings=body.include_embeddings)
        except BaseException:
            os.unlink(spool.name)
            raise
        return FileResponse(spool.name, media_type="application/json",
                            headers={"X-Memfs-Report": orjson.dumps(report.to_dict()).decode()},
                            background=BackgroundTask(os.unlink, spool.name))

    @app.post("/import", dependencies=guarded)
    def import_(request: Request, body: ImportIn):
        sources = [local_path(request, s) for s in body.sources]
        return OrjsonResponse(ops.import_sources(sources, format=body.format, dry_run=body.dry_run, dedup=body.dedup,
                                                 source_tag=body.source_tag, namespace=body.namespace).to_dict())

    @app.get("/import/history", dependencies=guarded)
    def import_history():
        return OrjsonResponse(ops.import_history())

    @app.post("/import/verify", dependencies=guarded)
    def import_verify(body: dict):
        return OrjsonResponse(ops.import_verify(str(body.get("record", ""))).to_dict())

    @app.put("/kv/{namespace}/{key:path}", dependencies=guarded)
    def kv_put(namespace: str, key: str, body: KVIn):
        return OrjsonResponse(ops.kv_set(key, body.value, namespace=namespace, ttl=body.ttl, expires_at=body.expires(),
                                         tags=body.tags).to_dict())

    @app.get("/kv/{namespace}/{key:path}", dependencies=guarded)
    def kv_get(namespace: str, key: str):
        return OrjsonResponse(ops.kv_get(key, namespace=namespace).to_dict())

    @app.get("/kv", dependencies=guarded)
    def kv_list(namespace: str = "default", all: bool = False, prefix: str | None = None,
                limit: int | None = Query(default=None, ge=1), offset: int = Query(default=0, ge=0)):
        items = ops.kv_list(namespace=None if all else namespace, prefix=prefix, limit=limit, offset=offset)
        return OrjsonResponse([i.to_dict() for i in items])

    @app.delete("/kv/{namespace}/{key:path}", dependencies=guarded)
    def kv_rm(namespace: str, key: str):
        return OrjsonResponse({"removed": ops.kv_rm(key, namespace=namespace)})

    @app.post("/backups/{name}/restore", dependencies=guarded)
    def restore_by_name(name: str, body: RestoreIn | None = None):
        """The older form of POST /backups/restore: a backup in backups/ by name."""
        verify = body.verify if body is not None else True
        if "/" in name:
            raise ApiError(422, "bad_request", "name a backup in backups/, e.g. memory_backup_20250101_020000.tar.gz")
        return OrjsonResponse(ops.restore(name, verify=verify).to_dict())

    # -- lookups and bulk removal (issue #10) -------------------------------------------------------

    @app.get("/find", dependencies=guarded)
    def find(content_hash: str = Query(max_length=200)):
        return OrjsonResponse(ops.find(content_hash=content_hash).to_dict())

    @app.post("/remove-matching", dependencies=guarded)
    def remove_matching(body: RemoveMatchingIn):
        return OrjsonResponse(ops.remove_matching(body.filters(), dry_run=body.dry_run, limit=body.limit).to_dict())

    # -- the knowledge graph (issue #22: memfs.graph) and MCP at /mcp (memfs.mcp_http) -------------

    @app.post("/graph/{action}", dependencies=guarded)
    def graph(action: str, body: dict[str, Any]):
        return OrjsonResponse(ops.graph(action, body))

    from .mcp_http import mount_mcp

    mount_mcp(app, ops, token=token, is_ready=lambda: owner.ready)
    return app
