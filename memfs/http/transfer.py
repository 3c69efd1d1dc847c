"""In and out: POST /export (the export as the response body), POST /import, GET /import/history and
POST /import/verify. Sources named by path are taken only over the Unix socket (deps.local_path)."""

from __future__ import annotations

import os
import tempfile

import orjson
from fastapi import APIRouter, Request
from starlette.background import BackgroundTask
from starlette.responses import FileResponse

from ..schemas import ExportIn, ImportIn
from .deps import GUARDED, Ops, local_path
from .errors import OrjsonResponse

router = APIRouter(dependencies=GUARDED)


@router.post("/export")
def export(ops: Ops, body: ExportIn | None = None):
    """The export as the response body (spooled to a temp file: constant memory at any size)."""
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


@router.post("/import")
def import_(request: Request, body: ImportIn, ops: Ops):
    sources = [local_path(request, s) for s in body.sources]
    return OrjsonResponse(ops.import_sources(sources, format=body.format, dry_run=body.dry_run, dedup=body.dedup,
                                             source_tag=body.source_tag, namespace=body.namespace).to_dict())


@router.get("/import/history")
def import_history(ops: Ops):
    return OrjsonResponse(ops.import_history())


@router.post("/import/verify")
def import_verify(body: dict, ops: Ops):
    return OrjsonResponse(ops.import_verify(str(body.get("record", ""))).to_dict())
