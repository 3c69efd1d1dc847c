"""The extended-memory service's HTTP API on memfs (issue #13), for the clients that already call it.

Routes and shapes follow that service (sutazai/sutazaiapp
docker/mcp-services/extended-memory-persistent/server.py and its docs'
EXTENDED_MEMORY_PERSISTENCE_MIGRATION.md), so its curl examples work unchanged:

    POST   /store           {"key", "value"}  -> {"status": "stored", "key", "persisted": true, "timestamp"}
    GET    /retrieve/{key}                   -> {"status": "found", "key", "value", "source"} | {"status": "not_found", "key"}
    GET    /list?limit&offset                -> {"keys", "metadata": [...], "total_count", "limit", "offset", "has_more"}
    DELETE /clear?confirm=true               -> {"status": "cleared", "timestamp"}   (400 without confirm)
    GET    /stats                            -> {"statistics", "most_accessed", "least_accessed", "recently_accessed", ...}
    POST   /backup                           -> {"status": "backup_created", "path", "timestamp"}
    GET    /health                           -> {"status": "healthy", "service", "version", "persistence": {...}, "statistics"}

Values are any JSON value; the service's extras stay optional (`namespace`, `ttl` in the body of
/store). Keys live in one memfs namespace (default "default"), so its values are ordinary memories:
searchable, backed up, exported. `source` is always "database": memfs keeps no second copy in
memory that could disagree with the files. Errors keep the service's `{"detail": ...}` shape, with
memfs's `{"error": {"code", "message"}}` beside it, and are JSON for every failure (#19).

Every route goes through the operations interface (memfs.ops), like every other door: the same
limits (memfs.inputs), the same errors. Its `/backup` does not prune: a backup asked for here is
never deleted by the next one made seconds later (#19; retention runs with `memfs backup`).
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any, Callable

from fastapi import APIRouter, Body, FastAPI, Query

from .. import __version__
from ..errors import BadRequestError, NotFoundError
from ..schemas import ExtendedStoreIn, validated
from .errors import ErrorStyle, install_error_handlers

SERVICE = "extended-memory"
# The service answers 400 to a bad request, with its `detail` beside memfs's `error`.
SERVICE_STYLE = ErrorStyle(bad_request=400, detail=True, close_unread=False)
DEFAULT_NAMESPACE = "default"


def _now() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat()


def _stamp(t: datetime | None) -> str | None:
    return t.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ") if t else None


# -- the routes' logic, as plain functions over the operations ----------------------------------------

def store_value(ops, data: Any, *, namespace: str = DEFAULT_NAMESPACE) -> dict:
    if not isinstance(data, dict) or not data.get("key"):
        raise BadRequestError("Key is required")
    body = validated(ExtendedStoreIn, data)
    ops.kv_set(body.key, body.value, namespace=body.namespace or namespace, ttl=body.ttl)
    return {"status": "stored", "key": body.key, "persisted": True, "timestamp": _now()}


def retrieve_value(ops, key: str, *, namespace: str = DEFAULT_NAMESPACE) -> dict:
    try:
        item = ops.kv_get(key, namespace=namespace)
    except NotFoundError:
        return {"status": "not_found", "key": key}
    out = {"status": "found", "key": key, "value": item.value, "source": "database"}
    if item.warning:
        out["warning"] = item.warning
    return out


def list_keys(ops, limit: int = 100, offset: int = 0, *, namespace: str = DEFAULT_NAMESPACE) -> dict:
    items = ops.kv_list(namespace=namespace)
    # The service lists the most recently used first.
    items.sort(key=lambda i: (i.accessed_at or i.updated_at), reverse=True)
    page = items[offset:offset + limit]
    meta = [{"key": i.key, "type": i.type, "created_at": _stamp(i.created_at), "updated_at": _stamp(i.updated_at),
             "accessed_at": _stamp(i.accessed_at or i.updated_at), "access_count": i.access_count} for i in page]
    return {"keys": [m["key"] for m in meta], "metadata": meta, "total_count": len(items), "limit": limit,
            "offset": offset, "has_more": offset + limit < len(items)}


def clear_all(ops, confirm: bool, *, namespace: str = DEFAULT_NAMESPACE) -> dict:
    if not confirm:
        raise BadRequestError("Confirmation required. Pass confirm=true to clear all memory.")
    for item in ops.kv_list(namespace=namespace):
        try:
            ops.kv_rm(item.key, namespace=namespace)
        except NotFoundError:
            pass
    return {"status": "cleared", "timestamp": _now()}


def statistics(ops, data_path: str, *, namespace: str = DEFAULT_NAMESPACE) -> dict:
    items = ops.kv_list(namespace=namespace)
    counts = [i.access_count for i in items]
    by_count = sorted(items, key=lambda i: (-i.access_count, i.key))
    recent = sorted(items, key=lambda i: (i.accessed_at or i.updated_at), reverse=True)
    return {
        "statistics": {"total_items": len(items), "total_accesses": sum(counts) if counts else None,
                       "avg_accesses": sum(counts) / len(counts) if counts else None,
                       "max_accesses": max(counts) if counts else None},
        "most_accessed": [{"key": i.key, "count": i.access_count} for i in by_count[:10]],
        "least_accessed": [{"key": i.key, "count": i.access_count} for i in list(reversed(by_count))[:10]],
        "recently_accessed": [{"key": i.key, "accessed_at": _stamp(i.accessed_at or i.updated_at)}
                              for i in recent[:10]],
        "cache_size": 0,
        "database_path": data_path,
    }


def health(ops, data_path: str, *, namespace: str = DEFAULT_NAMESPACE) -> dict:
    index = ops.health().index or {}
    return {
        "status": "healthy", "service": SERVICE, "version": __version__, "timestamp": _now(),
        "persistence": {"enabled": True, "type": "memfs (JSON files; SQLite catalog; Chroma vectors)",
                        "path": data_path.rstrip("/") + "/memories", "initialized": index.get("last_reconcile")},
        "statistics": {"memory_items": len(ops.kv_list(namespace=namespace)), "cache_enabled": False,
                       "cache_items": 0},
    }


def backup(ops, root: str) -> dict:
    b = ops.backup(prune=False)  # #19: a second /backup once pruned the first one's, made 12 s before
    return {"status": "backup_created", "path": os.path.join(root, b.backup), "timestamp": _now()}


def index() -> dict:
    return {"service": SERVICE, "version": __version__,
            "links": {"store": "/store", "retrieve": "/retrieve/{key}", "list": "/list", "clear": "/clear",
                      "stats": "/stats", "backup": "/backup", "health": "/health"}}


def extended_memory_router(get_ops: Callable[[], Any], root: str, *, namespace: str = DEFAULT_NAMESPACE,
                           include_health: bool = True) -> APIRouter:
    """An APIRouter with the extended-memory routes over the operations `get_ops()` returns.

    `root`: the store's root directory, whose paths the service reports. `include_health=False`
    leaves `/health` to the host app."""
    r = APIRouter(tags=["extended-memory"])
    data_path = os.path.join(root, "data")

    @r.get("/")
    def index_route() -> dict:
        return index()

    @r.post("/store")
    def store_route(data: Any = Body(...)) -> dict:
        return store_value(get_ops(), data, namespace=namespace)

    @r.get("/retrieve/{key:path}")
    def retrieve_route(key: str) -> dict:
        return retrieve_value(get_ops(), key, namespace=namespace)

    @r.get("/list")
    def list_route(limit: int = Query(100, ge=0), offset: int = Query(0, ge=0)) -> dict:
        return list_keys(get_ops(), limit, offset, namespace=namespace)

    @r.delete("/clear")
    def clear_route(confirm: bool = False) -> dict:
        return clear_all(get_ops(), confirm, namespace=namespace)

    @r.get("/stats")
    def stats_route() -> dict:
        return statistics(get_ops(), data_path, namespace=namespace)

    @r.post("/backup")
    def backup_route() -> dict:
        return backup(get_ops(), root)

    if include_health:
        @r.get("/health")
        def health_route() -> dict:
            return health(get_ops(), data_path, namespace=namespace)

    return r


def extended_memory_app(get_ops: Callable[[], Any], root: str, **options) -> FastAPI:
    """The routes as an app whose every failure is JSON: the service's 400 for a refused value,
    memfs's codes in `error` (#19: `{"ttl": 1e300}` and `{"namespace": {}}` were 500 text/plain)."""
    app = FastAPI(title="memfs: extended-memory API")
    app.include_router(extended_memory_router(get_ops, root, **options))
    install_error_handlers(app, SERVICE_STYLE)
    return app
