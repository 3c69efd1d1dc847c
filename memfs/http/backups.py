"""Backups: /backups (make, list), /backups/prune, /backups/restore, /backups/{name}/restore (the older
form) and /offsite/sync. A path on the owner's machine is taken only over the Unix socket (deps.local_path);
over TCP a backup is named within backups/."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request

from ..ops import Retention
from ..schemas import BackupIn, OffsiteIn, RestoreIn, RetentionIn
from .deps import GUARDED, Ops, local_path
from .errors import ApiError, OrjsonResponse

router = APIRouter(dependencies=GUARDED)


@router.post("/backups", status_code=201)
def make_backup(request: Request, ops: Ops, body: BackupIn | None = None):
    body = body or BackupIn()
    recipients = [r if r.startswith(("age1", "ssh-")) else local_path(request, r) for r in body.recipients]
    return OrjsonResponse(ops.backup(compression=body.compression, prune=body.prune, retention=body.retention(),
                                     backup_dir=local_path(request, body.backup_dir), recipients=recipients,
                                     passphrase_file=local_path(request, body.passphrase_file),
                                     copy_to=local_path(request, body.copy_to)).to_dict(), status_code=201)


@router.get("/backups")
def get_backups(request: Request, ops: Ops, verify: Literal["deep", "quick"] | None = None, keep_daily: int = 7,
                keep_weekly: int = 4, keep_monthly: int = 12, keep_pre_restore: int = 3,
                keep_pre_restore_days: int = 7, identity_file: str | None = None, backup_dir: str | None = None,
                passphrase_file: str | None = None):
    retention = Retention(keep_daily, keep_weekly, keep_monthly, keep_pre_restore, keep_pre_restore_days)
    return OrjsonResponse(ops.list_backups(retention=retention, verify=verify,
                                           identity_file=local_path(request, identity_file),
                                           passphrase_file=local_path(request, passphrase_file),
                                           backup_dir=local_path(request, backup_dir)).to_dict())


@router.post("/backups/prune")
def prune(request: Request, ops: Ops, body: RetentionIn | None = None, dry_run: bool = False):
    body = body or RetentionIn()
    return OrjsonResponse(ops.prune(retention=body.retention(), dry_run=dry_run,
                                    backup_dir=local_path(request, body.backup_dir)).to_dict())


@router.post("/backups/restore")
def restore(request: Request, body: RestoreIn, ops: Ops):
    archive = body.archive if "/" not in body.archive else local_path(request, body.archive)
    return OrjsonResponse(ops.restore(archive, verify=body.verify, dry_run=body.dry_run,
                                      backup_dir=local_path(request, body.backup_dir),
                                      identity_file=local_path(request, body.identity_file),
                                      passphrase_file=local_path(request, body.passphrase_file)).to_dict())


@router.post("/backups/{name}/restore")
def restore_by_name(name: str, ops: Ops, body: RestoreIn | None = None):
    """The older form of POST /backups/restore: a backup in backups/ by name."""
    verify = body.verify if body is not None else True
    if "/" in name:
        raise ApiError(422, "bad_request", "name a backup in backups/, e.g. memory_backup_20250101_020000.tar.gz")
    return OrjsonResponse(ops.restore(name, verify=verify).to_dict())


@router.post("/offsite/sync")
def offsite(request: Request, body: OffsiteIn, ops: Ops):
    return OrjsonResponse(ops.offsite_sync(local_path(request, body.dest), retention=body.retention(), prune=body.prune,
                                           dry_run=body.dry_run,
                                           backup_dir=local_path(request, body.backup_dir)).to_dict())
