"""Memories one at a time and by match: /memories (add, list, get, update, delete), /find by content
hash and /remove-matching (issue #10). Thin over the operations (memfs.ops)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Query

from ..schemas import MemoryIn, MemoryPatch, PageLimit, RemoveMatchingIn, When, filters
from .deps import GUARDED, Ops
from .errors import OrjsonResponse

router = APIRouter(dependencies=GUARDED)


@router.post("/memories", status_code=201)
def add_memory(body: MemoryIn, ops: Ops):
    r = ops.add(body.content, tags=body.tags, type=body.type, metadata=body.metadata,
                allow_duplicate=body.allow_duplicate)
    return OrjsonResponse(r.to_dict(), status_code=200 if r.duplicate else 201)


@router.get("/memories")
def list_memories(ops: Ops, tag: list[str] = Query(default=[]), match: Literal["any", "all"] = "any",
                  type: str | None = None, since: When = None, until: When = None,
                  limit: PageLimit = 50, cursor: str | None = None):
    return OrjsonResponse(ops.list(filters(tag, match, type, since, until), limit=limit, cursor=cursor).to_dict())


@router.get("/memories/{mem_id:path}")
def get_memory(mem_id: str, ops: Ops):
    return OrjsonResponse(ops.get(mem_id).to_dict())


@router.patch("/memories/{mem_id:path}")
def update_memory(mem_id: str, body: MemoryPatch, ops: Ops):
    return OrjsonResponse(ops.update(mem_id, content=body.content, tags=body.tags, add_tags=body.add_tags,
                                     remove_tags=body.remove_tags, type=body.type,
                                     metadata=body.metadata).to_dict())


@router.delete("/memories/{mem_id:path}")
def delete_memory(mem_id: str, ops: Ops):
    removed = ops.remove(mem_id)
    return OrjsonResponse({"removed": removed.memory.id, "memory": removed.to_dict()})


@router.get("/find")
def find(ops: Ops, content_hash: str = Query(max_length=200)):
    return OrjsonResponse(ops.find(content_hash=content_hash).to_dict())


@router.post("/remove-matching")
def remove_matching(body: RemoveMatchingIn, ops: Ops):
    return OrjsonResponse(ops.remove_matching(body.filters(), dry_run=body.dry_run, limit=body.limit).to_dict())
