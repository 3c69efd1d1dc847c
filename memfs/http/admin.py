"""The owner and the store as a whole: `/` (links, or the web page for a browser), /health, /metrics,
/owner, /owner/stop, /revision, /stats, /reindex and /validate.

/health is public (the Guard lets it through) and hides its details without the token; /owner and
/owner/stop answer during the startup reconcile, the rest wait for it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse

from .. import __version__
from ..metrics import CONTENT_TYPE as METRICS_TYPE
from ..schemas import ValidateIn
from ..web import page, wants_html
from .deps import GUARDED, Ops, local_path
from .errors import ApiError, OrjsonResponse
from .guard import bearer_ok

router = APIRouter()

LINKS = {"health": "/health", "docs": "/docs", "openapi": "/openapi.json", "memories": "/memories",
         "search": "/search", "stats": "/stats", "backups": "/backups"}


@router.get("/")
def index(request: Request):
    if wants_html(request):  # a browser: the web page (memfs.web); scripts get the links below
        return page()
    return {"service": "memfs", "version": __version__, "links": LINKS}


@router.get("/health")
def health(request: Request, ops: Ops):
    h = ops.health(details=bearer_ok(request.scope, request.app.state.token))
    return OrjsonResponse(h.to_dict(), status_code=200 if h.status == "ok" else 503)


@router.get("/metrics", dependencies=GUARDED)
def get_metrics(request: Request):  # Prometheus text format; the token like every route (Guard)
    return PlainTextResponse(request.app.state.metrics.render(), media_type=METRICS_TYPE)


@router.get("/owner")
def status(ops: Ops):
    return ops.status().to_dict()


@router.post("/owner/stop", status_code=202)
def stop(request: Request):
    on_stop = request.app.state.on_stop
    if on_stop is None:
        raise ApiError(409, "busy", "this owner cannot be stopped through the API")
    on_stop()
    return {"stopping": True}


@router.get("/revision", dependencies=GUARDED)
def revision(ops: Ops):
    return {"revision": ops.revision()}


@router.get("/stats", dependencies=GUARDED)
def stats(ops: Ops):
    return OrjsonResponse(ops.stats().to_dict())


@router.post("/reindex", dependencies=GUARDED)
def reindex(ops: Ops):
    return OrjsonResponse(ops.reindex().to_dict())


@router.post("/validate", dependencies=GUARDED)
def validate(request: Request, ops: Ops, body: ValidateIn | None = None, backups: bool = False):
    body = body or ValidateIn(backups=backups)
    return OrjsonResponse(ops.validate(backups=body.backups or backups, fix=body.fix,
                                       backup_dir=local_path(request, body.backup_dir),
                                       identity_file=local_path(request, body.identity_file),
                                       passphrase_file=local_path(request, body.passphrase_file)).to_dict())
