"""The HTTP API (FastAPI), thin over Owner and MemoryStore. OpenAPI at /docs and /openapi.json.

Errors are JSON: {"error": {"code": "not_found", "message": "…"}} with a fitting status. With a token
configured, every route but /health needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any, Literal

import orjson
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from . import __version__
from .backups import CorruptBackupError, list_backups, prune_summary
from .restore import restore_summary
from .documents import InvalidDocumentError
from .errors import MemfsError, NotFoundError, StoreBusyError
from .owner import Owner, backup_summary
from .query import Filters
from .retention import Policy
from .validate import validate as run_validation

MAX_BODY = 1 << 20  # bytes; a memory is text, not a file store
MAX_CONTENT = 256 * 1024  # characters


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        self.status, self.code, self.message = status, code, message


def _error(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class MemoryIn(BaseModel):
    content: str = Field(min_length=1, max_length=MAX_CONTENT)
    tags: list[str] = Field(default_factory=list, max_length=100)
    type: str = Field(default="note", min_length=1, max_length=100)
    metadata: dict[str, Any] = Field(default_factory=dict)
    allow_duplicate: bool = False


class MemoryPatch(BaseModel):
    content: str | None = Field(default=None, min_length=1, max_length=MAX_CONTENT)
    tags: list[str] | None = Field(default=None, max_length=100)
    add_tags: list[str] = Field(default_factory=list, max_length=100)
    remove_tags: list[str] = Field(default_factory=list, max_length=100)
    type: str | None = Field(default=None, min_length=1, max_length=100)
    metadata: dict[str, Any] | None = None


class SearchIn(BaseModel):
    query: str = Field(min_length=1, max_length=10_000)
    k: int = Field(default=5, ge=1, le=1000)
    mode: Literal["semantic", "keyword", "hybrid"] = "hybrid"
    tags: list[str] = Field(default_factory=list, max_length=100)
    match: Literal["any", "all"] = "any"
    type: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class BackupIn(BaseModel):
    compression: Literal["gz", "zst"] = "gz"
    prune: bool = True
    keep_daily: int = Field(default=7, ge=0)
    keep_weekly: int = Field(default=4, ge=0)
    keep_monthly: int = Field(default=12, ge=0)
    keep_pre_restore: int = Field(default=3, ge=0)


class RestoreIn(BaseModel):
    verify: bool = True


def _aware(t: datetime | None) -> datetime | None:
    from datetime import timezone

    return t if t is None or t.tzinfo else t.replace(tzinfo=timezone.utc)


class OrjsonResponse(JSONResponse):
    """orjson instead of the stdlib encoder. Routes on the hot path (search) return it directly, which
    also skips FastAPI's jsonable_encoder walk over every hit."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_NON_STR_KEYS)


def create_app(owner: Owner, *, token: str | None = None) -> FastAPI:
    app = FastAPI(title="memfs", version=__version__, default_response_class=OrjsonResponse,
                  description="Memories as JSON files, with semantic and keyword search.")

    def auth(request: Request) -> None:
        if token is None:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token (set Authorization: Bearer …)")

    def ready() -> None:
        if not owner.ready:
            raise ApiError(503, "not_ready", "the startup reconcile is still running; try again shortly")

    guarded = [Depends(auth), Depends(ready)]

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return _error(413, "too_large", f"request body over {MAX_BODY} bytes")
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def on_api_error(request, e: ApiError):
        return _error(e.status, e.code, e.message)

    @app.exception_handler(RequestValidationError)
    async def on_invalid(request, e: RequestValidationError):
        first = e.errors()[0] if e.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return _error(422, "invalid_request", f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(MemfsError)
    async def on_memfs_error(request, e: MemfsError):
        if isinstance(e, NotFoundError):
            return _error(404, "not_found", str(e))
        if isinstance(e, (InvalidDocumentError, CorruptBackupError)):
            return _error(422, "invalid", str(e))
        if isinstance(e, StoreBusyError):
            return _error(409, "busy", str(e))
        return _error(500, "failed", str(e))

    @app.exception_handler(OSError)
    async def on_os_error(request, e: OSError):
        import errno

        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            return _error(507, "no_space", f"no space left on the device holding {owner.layout.root}; nothing was lost")
        return _error(500, "io_error", f"{e}")

    @app.get("/", dependencies=[Depends(auth)])
    def index() -> dict:
        return {"service": "memfs", "version": __version__, "root": str(owner.layout.root),
                "links": {"health": "/health", "docs": "/docs", "openapi": "/openapi.json",
                          "memories": "/memories", "search": "/search", "stats": "/stats", "backups": "/backups"}}

    @app.get("/health")
    def health():
        import os

        data = owner.layout.data
        body: dict[str, Any] = {
            "status": "ok" if owner.ready else "starting", "version": __version__,
            "persistence": {"type": "filesystem", "path": str(data), "writable": os.access(data, os.W_OK)},
        }
        if owner.ready:
            with owner.using() as store:
                status = owner.watcher.status()
                # Chroma opens in the background after the startup file reconcile; until then (about a
                # second at 20k memories) its fields are null rather than /health waiting for it.
                vectors, chroma_ok = None, None
                if store.vectors.opened:
                    try:
                        vectors, chroma_ok = store.vectors.count(), True
                    except Exception:  # the finding is that Chroma does not answer
                        chroma_ok = False
                body["index"] = {"chroma_ok": chroma_ok, "memories": store.catalog.count(), "vectors": vectors,
                                 "watcher": status.observer, "queue_depth": status.queue_depth,
                                 "last_reconcile": store.catalog.get_meta("last_reconcile"),
                                 "last_error": status.last_error, "invalid_files": status.invalid}
                body["statistics"] = {"embedded": store.embedder.embedded, "watcher_batches": status.batches}
        return JSONResponse(body, status_code=200 if owner.ready else 503)

    @app.post("/memories", status_code=201, dependencies=guarded)
    def add_memory(body: MemoryIn):
        with owner.using() as store:
            r = store.add(body.content, tags=body.tags, type=body.type, metadata=body.metadata,
                          allow_duplicate=body.allow_duplicate)
        return JSONResponse(r.to_dict(), status_code=200 if r.duplicate else 201)

    @app.get("/memories", dependencies=guarded)
    def list_memories(tag: list[str] = Query(default=[]), match: Literal["any", "all"] = "any",
                      type: str | None = None, since: datetime | None = None, until: datetime | None = None,
                      limit: int = Query(default=50, ge=1, le=1000), cursor: str | None = None):
        offset = int(cursor) if cursor and cursor.isdigit() else 0
        filters = Filters(tags=tuple(tag), match=match, type=type, since=_aware(since), until=_aware(until))
        with owner.using() as store:
            entries = store.list(filters, limit=limit + 1, offset=offset)
        more = len(entries) > limit
        return {"memories": [{"path": e.path, **e.memory.to_dict()} for e in entries[:limit]],
                "next_cursor": str(offset + limit) if more else None}

    @app.get("/memories/{mem_id:path}", dependencies=guarded)
    def get_memory(mem_id: str):
        with owner.using() as store:
            return {"path": str(store.path_of(mem_id)), **store.get(mem_id).to_dict()}

    @app.patch("/memories/{mem_id:path}", dependencies=guarded)
    def update_memory(mem_id: str, body: MemoryPatch):
        with owner.using() as store:
            return store.update(mem_id, content=body.content, tags=body.tags, add_tags=body.add_tags,
                                remove_tags=body.remove_tags, type=body.type, metadata=body.metadata).to_dict()

    @app.delete("/memories/{mem_id:path}", dependencies=guarded)
    def delete_memory(mem_id: str):
        with owner.using() as store:
            removed = store.remove(mem_id)
        return OrjsonResponse({"removed": removed.id, "memory": removed.to_dict()})

    @app.post("/search", dependencies=guarded)
    def search(body: SearchIn):
        filters = Filters(tags=tuple(body.tags), match=body.match, type=body.type,
                          since=_aware(body.since), until=_aware(body.until))
        with owner.using() as store:
            hits = store.search(body.query, k=body.k, mode=body.mode, filters=filters)
        return OrjsonResponse({"hits": [h.to_dict() for h in hits]})

    @app.get("/stats", dependencies=guarded)
    def stats():
        with owner.using() as store:
            return store.stats()

    @app.post("/reindex", dependencies=guarded)
    def reindex():
        with owner.using() as store:
            return store.reconcile(verify_vectors=True).to_dict()

    @app.post("/backups", status_code=201, dependencies=guarded)
    def make_backup(body: BackupIn | None = None):
        body = body or BackupIn()
        made, pruned = owner.backup(compression=body.compression, prune=body.prune, keep_pre_restore=body.keep_pre_restore,
                                    policy=Policy(body.keep_daily, body.keep_weekly, body.keep_monthly))
        return backup_summary(made, pruned)

    @app.post("/backups/prune", dependencies=guarded)
    def prune(body: BackupIn | None = None, dry_run: bool = False):
        body = body or BackupIn()
        plan, _ = owner.prune(policy=Policy(body.keep_daily, body.keep_weekly, body.keep_monthly),
                              keep_pre_restore=body.keep_pre_restore, dry_run=dry_run)
        return prune_summary(plan, dry_run)

    @app.get("/backups", dependencies=guarded)
    def get_backups():
        backups, leftovers = list_backups(owner.layout.backups)
        return {"backups": [{"name": b.name, "kind": b.kind, "created": b.created.isoformat(), "size": b.size,
                             "checksum": b.checksum_state()} for b in backups],
                "incomplete": [str(p) for p in leftovers]}

    @app.post("/backups/{name}/restore", dependencies=guarded)
    def restore(name: str, body: RestoreIn | None = None):
        from .backups import BackupFile

        archive = BackupFile.parse(owner.layout.backups / name)
        if archive is None or not archive.path.is_file():
            raise NotFoundError(f"no backup named {name!r} in {owner.layout.backups}")
        result, embedded = owner.restore(archive, verify_md5=(body or RestoreIn()).verify)
        with owner.using(), owner.store._mutex:
            problems = run_validation(owner.layout).problems
        return restore_summary(result, embedded, problems)

    @app.post("/validate", dependencies=guarded)
    def validate(backups: bool = False):
        with owner.using(), owner.store._mutex:
            return run_validation(owner.layout, backups=backups).to_dict()

    return app
