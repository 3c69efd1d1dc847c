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
memory that could disagree with the files. Errors keep the service's `{"detail": ...}` shape.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable

from fastapi import APIRouter, Body, HTTPException, Query

from . import __version__, kv
from .errors import InvalidDocumentError, NotFoundError

SERVICE = "extended-memory"


def _now() -> str:
    return datetime.now(timezone.utc).replace(tzinfo=None).isoformat()


def _stamp(t: datetime | None) -> str | None:
    return t.astimezone(timezone.utc).replace(tzinfo=None).isoformat(sep=" ") if t else None


# -- the routes' logic, as plain functions (the lead may call them from the operations layer) ------

def store_value(store, data: dict, *, namespace: str = kv.DEFAULT_NAMESPACE) -> dict:
    key = data.get("key") if isinstance(data, dict) else None
    if not key or not isinstance(key, str):
        raise HTTPException(status_code=400, detail="Key is required")
    ttl = data.get("ttl")
    try:
        kv.kv_set(store, key, data.get("value"), namespace=data.get("namespace") or namespace,
                  ttl=float(ttl) if ttl is not None else None)
    except (InvalidDocumentError, ValueError, TypeError) as e:
        raise HTTPException(status_code=400, detail=str(e)) from None
    return {"status": "stored", "key": key, "persisted": True, "timestamp": _now()}


def retrieve_value(store, key: str, *, namespace: str = kv.DEFAULT_NAMESPACE) -> dict:
    try:
        item = kv.kv_get(store, key, namespace=namespace)
    except NotFoundError:
        return {"status": "not_found", "key": key}
    out = {"status": "found", "key": key, "value": item.value, "source": "database"}
    if item.warning:
        out["warning"] = item.warning
    return out


def list_keys(store, limit: int = 100, offset: int = 0, *, namespace: str = kv.DEFAULT_NAMESPACE) -> dict:
    items = kv.kv_list(store, namespace=namespace)
    # The service lists the most recently used first.
    items.sort(key=lambda i: (i.accessed_at or i.updated_at), reverse=True)
    page = items[offset:offset + limit]
    meta = [{"key": i.key, "type": i.type, "created_at": _stamp(i.created_at), "updated_at": _stamp(i.updated_at),
             "accessed_at": _stamp(i.accessed_at or i.updated_at), "access_count": i.access_count} for i in page]
    return {"keys": [m["key"] for m in meta], "metadata": meta, "total_count": len(items), "limit": limit,
            "offset": offset, "has_more": offset + limit < len(items)}


def clear_all(store, confirm: bool, *, namespace: str = kv.DEFAULT_NAMESPACE) -> dict:
    if not confirm:
        raise HTTPException(status_code=400,
                            detail="Confirmation required. Pass confirm=true to clear all memory.")
    for item in kv.kv_list(store, namespace=namespace):
        try:
            kv.kv_rm(store, item.key, namespace=namespace)
        except NotFoundError:
            pass
    return {"status": "cleared", "timestamp": _now()}


def statistics(store, *, namespace: str = kv.DEFAULT_NAMESPACE) -> dict:
    items = kv.kv_list(store, namespace=namespace)
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
        "database_path": str(store.layout.data),
    }


def health(store, *, namespace: str = kv.DEFAULT_NAMESPACE) -> dict:
    return {
        "status": "healthy", "service": SERVICE, "version": __version__, "timestamp": _now(),
        "persistence": {"enabled": True, "type": "memfs (JSON files; SQLite catalog; Chroma vectors)",
                        "path": str(store.layout.memories),
                        "initialized": store.catalog.get_meta("last_reconcile")},
        "statistics": {"memory_items": len(kv.kv_list(store, namespace=namespace)), "cache_enabled": False,
                       "cache_items": 0},
    }


def default_backup(store) -> dict:
    from .backups import create_backup

    with store._mutex:
        b = create_backup(store.layout)
    return {"status": "backup_created", "path": str(b.path), "timestamp": _now()}


def extended_memory_router(get_store: Callable[[], Any], *, namespace: str = kv.DEFAULT_NAMESPACE,
                           backup: Callable[[Any], dict] | None = None, include_health: bool = True) -> APIRouter:
    """An APIRouter with the extended-memory routes over the store `get_store()` returns.

    `backup(store)` makes a backup (default: `backup.create_backup` under the store's mutex; the
    owner should pass its own, which pauses writes). `include_health=False` leaves `/health` to the
    host app (memfs's own /health already has a `persistence` block); mount with a prefix otherwise.
    """
    r = APIRouter(tags=["extended-memory"])
    do_backup = backup or default_backup

    @r.post("/store")
    def store_route(data: Any = Body(...)) -> dict:
        return store_value(get_store(), data, namespace=namespace)

    @r.get("/retrieve/{key:path}")
    def retrieve_route(key: str) -> dict:
        return retrieve_value(get_store(), key, namespace=namespace)

    @r.get("/list")
    def list_route(limit: int = Query(100, ge=0), offset: int = Query(0, ge=0)) -> dict:
        return list_keys(get_store(), limit, offset, namespace=namespace)

    @r.delete("/clear")
    def clear_route(confirm: bool = False) -> dict:
        return clear_all(get_store(), confirm, namespace=namespace)

    @r.get("/stats")
    def stats_route() -> dict:
        return statistics(get_store(), namespace=namespace)

    @r.post("/backup")
    def backup_route() -> dict:
        return do_backup(get_store())

    if include_health:
        @r.get("/health")
        def health_route() -> dict:
            return health(get_store(), namespace=namespace)

    return r
