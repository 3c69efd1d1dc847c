"""Search: POST /search (semantic, keyword or hybrid, with filters), thin over the operations."""

from __future__ import annotations

from fastapi import APIRouter

from ..schemas import SearchIn
from .deps import GUARDED, Ops
from .errors import OrjsonResponse

router = APIRouter(dependencies=GUARDED)


@router.post("/search")
def search(body: SearchIn, ops: Ops):
    return OrjsonResponse(ops.search(body.query, k=body.k, mode=body.mode, filters=body.filters(),
                                     min_score=body.min_score).to_dict())
