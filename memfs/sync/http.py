"""The sync and conflict-inbox routes (one router, included by memfs.http.app.create_app).

    POST /sync                          {dest, dry_run, recipients, identity_file, passphrase_file, rclone_config}
    POST /sync/compact                  (the same body)
    GET  /sync/status
    GET  /conflicts
    GET  /conflicts/{id}
    POST /conflicts/{id}/resolve        {keep: winner|loser|merge, content}

Like backups, a sync names files on the owner's machine (a folder remote, key files): those are taken
only over the Unix socket (`local_path`).
"""

from __future__ import annotations

from typing import Callable

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field


class SyncIn(BaseModel):
    dest: str = Field(min_length=1, max_length=4096)
    dry_run: bool = False
    recipients: list[str] = Field(default_factory=list, max_length=100)
    identity_file: str | None = Field(default=None, max_length=4096)
    passphrase_file: str | None = Field(default=None, max_length=4096)
    rclone_config: str | None = Field(default=None, max_length=4096)


class ResolveIn(BaseModel):
    keep: str = Field(default="winner", max_length=10)
    content: str | None = None


def router(ops, guarded: list, local_path: Callable[[Request, str | None], str | None]) -> APIRouter:
    r = APIRouter()

    def remote_args(request: Request, body: SyncIn) -> dict:
        return dict(dry_run=body.dry_run, recipients=body.recipients,
                    identity_file=local_path(request, body.identity_file),
                    passphrase_file=local_path(request, body.passphrase_file),
                    rclone_config=local_path(request, body.rclone_config))

    @r.post("/sync", dependencies=guarded)
    def sync(request: Request, body: SyncIn):
        return ops.sync(local_path(request, body.dest), **remote_args(request, body)).to_dict()

    @r.post("/sync/compact", dependencies=guarded)
    def compact(request: Request, body: SyncIn):
        return ops.sync_compact(local_path(request, body.dest), **remote_args(request, body)).to_dict()

    @r.get("/sync/status", dependencies=guarded)
    def status():
        return ops.sync_status().to_dict()

    @r.get("/conflicts", dependencies=guarded)
    def listing():
        return {"conflicts": ops.conflicts()}

    @r.get("/conflicts/{conflict_id}", dependencies=guarded)
    def show(conflict_id: str):
        return ops.conflict(conflict_id)

    @r.post("/conflicts/{conflict_id}/resolve", dependencies=guarded)
    def resolve(conflict_id: str, body: ResolveIn):
        return ops.resolve_conflict(conflict_id, keep=body.keep, content=body.content)

    return r
