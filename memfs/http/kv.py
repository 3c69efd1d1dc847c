"""Key/value entries: /kv/{namespace}/{key} (put, get, delete) and /kv (list), thin over the operations."""

from __future__ import annotations

from fastapi import APIRouter, Query

from ..schemas import KVIn
from .deps import GUARDED, Ops
from .errors import OrjsonResponse

router = APIRouter(dependencies=GUARDED)


@router.put("/kv/{namespace}/{key:path}")
def kv_put(namespace: str, key: str, body: KVIn, ops: Ops):
    return OrjsonResponse(ops.kv_set(key, body.value, namespace=namespace, ttl=body.ttl, expires_at=body.expires(),
                                     tags=body.tags).to_dict())


@router.get("/kv/{namespace}/{key:path}")
def kv_get(namespace: str, key: str, ops: Ops):
    return OrjsonResponse(ops.kv_get(key, namespace=namespace).to_dict())


@router.get("/kv")
def kv_list(ops: Ops, namespace: str = "default", all: bool = False, prefix: str | None = None,
            limit: int | None = Query(default=None, ge=1), offset: int = Query(default=0, ge=0)):
    items = ops.kv_list(namespace=None if all else namespace, prefix=prefix, limit=limit, offset=offset)
    return OrjsonResponse([i.to_dict() for i in items])


@router.delete("/kv/{namespace}/{key:path}")
def kv_rm(namespace: str, key: str, ops: Ops):
    return OrjsonResponse({"removed": ops.kv_rm(key, namespace=namespace)})
