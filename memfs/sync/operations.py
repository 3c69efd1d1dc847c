"""Sync and the conflict inbox as operations (memfs.ops), in the process that owns the store. A mixin of
LocalOperations, like memfs.admin: it uses `self.owner` and `self.layout`.

Key files and the rclone config are paths on the owner's machine (as for backups): the server takes
them only from a local client.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

from ..admin import translated
from ..errors import BadRequestError, StoreBusyError
from . import conflicts
from .results import CompactResult, SyncResult, SyncStatus

_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def _sync_lock(root: Path) -> threading.Lock:
    with _locks_guard:
        return _locks.setdefault(str(root.resolve()), threading.Lock())


class SyncOperations:
    # Overridable by tests (skewed clocks) and by `serve --sync` (nothing else sets it).
    sync_clock = staticmethod(time.time)

    @translated
    def sync(self, dest: str, *, dry_run: bool = False, recipients: Iterable[str] = (),
             identity_file: str | None = None, passphrase_file: str | None = None,
             rclone_config: str | None = None, progress=None) -> SyncResult:
        """Exchange changes with the remote DEST (a folder or an rclone remote); see docs/sync.md."""
        with self._engine(dest, dry_run, recipients, identity_file, passphrase_file, rclone_config,
                          progress) as engine:
            report = engine.run(dry_run=dry_run)
        return SyncResult(**report.to_dict(), conflicts_open=conflicts.count(self.layout))

    @translated
    def sync_compact(self, dest: str, *, dry_run: bool = False, recipients: Iterable[str] = (),
                     identity_file: str | None = None, passphrase_file: str | None = None,
                     rclone_config: str | None = None) -> CompactResult:
        """Replace this replica's own old objects on DEST by one base object (memfs.sync.compact)."""
        from .compact import Compactor

        with self._engine(dest, dry_run, recipients, identity_file, passphrase_file, rclone_config) as engine:
            return Compactor(engine).run(dry_run=dry_run)

    @contextmanager
    def _engine(self, dest, dry_run, recipients, identity_file, passphrase_file, rclone_config, progress=None):
        """A SyncEngine for DEST, under this store's one sync lock (a sync and a compaction of one store
        never run at once); a failure is noted as the remote's last error."""
        from .engine import SyncEngine
        from .objects import read_keys
        from .remotes import open_remote
        from .state import SyncState

        if recipients and not identity_file:
            raise BadRequestError("--encrypt with recipients also needs --identity FILE, to read what the other "
                                  "replicas pushed")
        codec = read_keys(recipients=recipients, identity_file=identity_file, passphrase_file=passphrase_file)
        remote = open_remote(dest, rclone_config=Path(rclone_config) if rclone_config else None)
        lock = _sync_lock(self.layout.root)
        if not lock.acquire(timeout=0.5):
            raise StoreBusyError(f"a sync of {self.layout.root} is already running; wait for it (memfs sync status)")
        try:
            state = SyncState(self.layout, clock=self.sync_clock)
            try:
                with self.owner.using() as store:
                    try:
                        yield SyncEngine(store, remote, codec, state, progress=progress)
                    except Exception as e:
                        if not dry_run:
                            state.note(remote.where, error=str(e)[:500])
                        raise
            finally:
                state.close()
        finally:
            lock.release()

    @translated
    def sync_status(self) -> SyncStatus:
        """Peers seen, last push/pull, lag, pending changes and conflicts, the last error, per remote."""
        from .state import SyncState

        state = SyncState(self.layout)
        try:
            remotes = []
            for r in state.remotes():
                peers = state.peers(r["remote"])
                for p in peers:
                    p["lag_seconds"] = (max(0.0, time.time() - int(p["hlc"].split(".")[0]) / 1000)
                                        if p.get("hlc") else None)
                r["peers"] = peers
                r["queued_batches"] = len(state.queued(r["remote"]))
                remotes.append(r)
            pending = self._pending_changes(state)
            return SyncStatus(state.replica, remotes, pending, conflicts.count(self.layout))
        finally:
            state.close()

    def _pending_changes(self, state) -> int | None:
        from .engine import SyncEngine

        if not state.remotes():
            return None
        with self.owner.using() as store:
            engine = SyncEngine.__new__(SyncEngine)
            engine.store, engine.state = store, state
            return len(engine.local_changes()[0])

    # -- the conflict inbox ---------------------------------------------------------------------------

    @translated
    def conflicts(self) -> list[dict]:
        return conflicts.listing(self.layout)

    @translated
    def conflict(self, conflict_id: str) -> dict:
        return conflicts.get(self.layout, conflict_id)

    @translated
    def resolve_conflict(self, conflict_id: str, *, keep: str = "winner", content: str | None = None) -> dict:
        """Keep the winner (as it is), the loser (written back as the memory's new version), or `content`
        (a merge you wrote). The resolution reaches every replica with the next sync."""
        from .state import SyncState

        if keep not in ("winner", "loser", "merge"):
            raise BadRequestError(f"keep must be winner, loser or merge, not {keep!r}")
        if (keep == "merge") != (content is not None):
            raise BadRequestError("give the merged content with keep=merge (and only then)")
        c = conflicts.get(self.layout, conflict_id)
        mem_id, loser = c["memory"], c["loser"]
        if keep == "loser":
            self._write_back(mem_id, loser)
        elif keep == "merge":
            self._write_back(mem_id, {**loser, "deleted": False,
                                      "doc": {**(loser.get("doc") or c["winner"].get("doc") or {}),
                                              "content": content}})
        state = SyncState(self.layout)
        try:
            with state.tx():
                state.resolve_locally(mem_id, loser["v"])
        finally:
            state.close()
        conflicts.drop(self.layout, conflict_id)
        return {"conflict": conflict_id, "memory": mem_id, "kept": keep}

    def _write_back(self, mem_id: str, version: dict) -> None:
        from .versions import delete_file, memory_from, write_memory

        with self.owner.using() as store:
            with store.mutex:
                path = store.catalog.path_for_id(mem_id)
                if version.get("deleted"):
                    if path is not None:
                        delete_file(store, path)
                        store.reconcile(paths=[path], verify_vectors=False)
                    return
                from ..documents import utcnow

                m = memory_from(version["doc"], mem_id).replace(updated_at=utcnow())
                rel = write_memory(store, m, path)
                store.reconcile(paths=[rel], verify_vectors=False)
