"""The one process that owns a data directory (DESIGN.md §4): lock, store, watcher, and the operations
that must pause indexing while they run (backup, restore). `memfs serve` wraps this in HTTP; nothing
here knows about HTTP.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from pathlib import Path
from typing import Iterator

from .backups import BackupFile, apply_prune, clean_leftovers, create_backup, plan_prune, prune_backups
from .restore import RestoreResult, finish_interrupted_restore, restore_backup
from .embedder import Embedder
from .filestore import Layout
from .lock import StoreLock
from .retention import Policy
from .store import MemoryStore
from .watcher import Watcher

log = logging.getLogger("memfs.owner")


def take_backup(store: MemoryStore, *, backup_dir: Path | None = None, compression: str = "gz",
                policy: Policy = Policy(), keep_pre_restore: int = 3, prune: bool = True,
                progress=None) -> tuple[BackupFile, list[BackupFile]]:
    """A consistent backup of an open store: writes wait (they do not fail) until the snapshot is taken.

    Catalog and vectors are levelled with the files first, so restoring the archive embeds nothing.
    """
    backup_dir = backup_dir or store.layout.backups
    with store._mutex:
        clean_leftovers(store.layout, backup_dir)
        store.reconcile(verify_vectors=True)
        made = create_backup(store.layout, backup_dir=backup_dir, compression=compression, progress=progress)
    # The backup just made is never a candidate, whatever the clock or the policy says.
    plan = [i for i in plan_prune(backup_dir, policy, keep_pre_restore) if i.backup.path != made.path]
    pruned = apply_prune(plan) if prune else []
    return made, pruned


def backup_summary(made: BackupFile, pruned: list[BackupFile]) -> dict:
    return {"backup": str(made.path), "name": made.name, "size": made.size, "md5": str(made.md5_path),
            "pruned": [str(b.path) for b in pruned]}


class Owner:
    def __init__(self, root: Path | str, *, url: str | None = None, polling: bool = False,
                 reconcile_every: float = 300.0, embedder: Embedder | None = None):
        self.layout = Layout(Path(root))
        self.url = url
        self.polling = polling
        self.reconcile_every = reconcile_every
        self.embedder = embedder
        self.lock: StoreLock | None = None
        self.store: MemoryStore | None = None
        self.watcher: Watcher | None = None
        self._swap = threading.RLock()  # held while the store is being replaced (restore)

    def start(self) -> "Owner":
        """Take the lock (StoreBusyError if taken), open the store, start following the files."""
        self.layout.create()
        self.lock = StoreLock(self.layout.lock_file, url=self.url).acquire()
        try:
            self._open()
        except BaseException:
            self.lock.release()
            raise
        return self

    def _open(self) -> None:
        self.store = MemoryStore.open(self.layout.root, lock=self.lock, embedder=self.embedder)
        self.embedder = self.store.embedder
        self.watcher = Watcher(self.store, polling=self.polling, reconcile_every=self.reconcile_every).start()

    def _close_store(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
        if self.store is not None:
            self.store.close()

    def close(self) -> None:
        """Apply pending changes, close everything, release the lock."""
        with self._swap:
            self._close_store()
            if self.lock is not None:
                self.lock.release()

    @contextlib.contextmanager
    def using(self) -> Iterator[MemoryStore]:
        """The store, for one request; waits while a restore swaps it or a backup snapshots it."""
        with self._swap:
            yield self.store

    @property
    def ready(self) -> bool:
        """True once the startup reconcile has finished."""
        return self.watcher is not None and bool(self.watcher.reports)

    def backup(self, **options) -> tuple[BackupFile, list[BackupFile]]:
        """take_backup while serving; requests wait for the snapshot instead of failing."""
        with self._swap:
            return take_backup(self.store, **options)

    def prune(self, *, backup_dir: Path | None = None, policy: Policy = Policy(), keep_pre_restore: int = 3,
              dry_run: bool = False):
        return prune_backups(backup_dir or self.layout.backups, policy, keep_pre_restore, dry_run)

    def restore(self, archive: BackupFile, *, verify_md5: bool = True) -> tuple[RestoreResult, int]:
        """Swap the data for the archive's and reload, without a restart. Returns (result, embedded)."""
        with self._swap:
            self._close_store()
            try:
                result = restore_backup(self.layout, archive, verify_md5=verify_md5)
            finally:
                finish_interrupted_restore(self.layout)
                self._open()
            self.watcher.idle.wait(600)
            return result, self.watcher.reports[0].embedded if self.watcher.reports else 0
