"""The sync operations as a client of the owner (a mixin of memfs.remote.RemoteOperations; stdlib only)."""

from __future__ import annotations

import urllib.parse
from typing import Iterable

from .results import CompactResult, SyncResult, SyncStatus


def _body(dest, dry_run, recipients, identity_file, passphrase_file, rclone_config) -> dict:
    """POST /sync's and /sync/compact's body (memfs.sync.http.SyncIn)."""
    return {"dest": dest, "dry_run": dry_run, "recipients": list(recipients), "identity_file": identity_file,
            "passphrase_file": passphrase_file, "rclone_config": rclone_config}


class RemoteSyncOperations:
    def sync(self, dest: str, *, dry_run: bool = False, recipients: Iterable[str] = (),
             identity_file: str | None = None, passphrase_file: str | None = None,
             rclone_config: str | None = None, progress=None) -> SyncResult:
        return SyncResult.from_dict(self.request("POST", "/sync", _body(
            dest, dry_run, recipients, identity_file, passphrase_file, rclone_config)))

    def sync_compact(self, dest: str, *, dry_run: bool = False, recipients: Iterable[str] = (),
                     identity_file: str | None = None, passphrase_file: str | None = None,
                     rclone_config: str | None = None) -> CompactResult:
        return CompactResult.from_dict(self.request("POST", "/sync/compact", _body(
            dest, dry_run, recipients, identity_file, passphrase_file, rclone_config)))

    def sync_status(self) -> SyncStatus:
        return SyncStatus.from_dict(self.request("GET", "/sync/status"))

    def conflicts(self) -> list[dict]:
        return self.request("GET", "/conflicts")["conflicts"]

    def conflict(self, conflict_id: str) -> dict:
        return self.request("GET", f"/conflicts/{urllib.parse.quote(conflict_id, safe='')}")

    def resolve_conflict(self, conflict_id: str, *, keep: str = "winner", content: str | None = None) -> dict:
        return self.request("POST", f"/conflicts/{urllib.parse.quote(conflict_id, safe='')}/resolve",
                            {"keep": keep, "content": content})
