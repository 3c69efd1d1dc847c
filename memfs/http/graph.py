"""The knowledge graph (issue #22: memfs.graph): POST /graph/{action}, thin over the operations."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from .deps import GUARDED, Ops
from .errors import OrjsonResponse

router = APIRouter(dependencies=GUARDED)


@router.post("/graph/{action}")
def graph(action: str, body: dict[str, Any], ops: Ops):
    return OrjsonResponse(ops.graph(action, body))
