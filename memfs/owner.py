"""The one process that owns a data directory (DESIGN.md §4): lock, store, watcher, and the swaps that
must pause every request while they run (backup snapshot, restore). Nothing here knows about HTTP;
`memfs.http` serves an Owner's operations, `memfs.local` implements them.

An owner is started by `memfs serve`, `memfs watch`, or on demand by a client (`memfs owner`, hidden);
`--no-daemon` commands make a short-lived one without a watcher. Whoever takes the lock finishes an
interrupted restore first, once, before opening the store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterator

from .restore import finish_interrupted_restore
from .embedder import Embedder
from .filestore import Layout
from .lock import StoreLock
from .store import MemoryStore

log = logging.getLogger("memfs.owner")

# Unix socket paths are limited to 108 bytes (sun_path); a deep store root gets one under the runtime dir.
_SUN_PATH_MAX = 107


def socket_path(layout: Layout) -> Path:
    """Where the owner of this store listens: data/memfs.sock, or a short path if that is too long."""
    path = layout.data / "memfs.sock"
    if len(os.fsencode(path)) <= _SUN_PATH_MAX:
        return path
    import hashlib
    import tempfile

    runtime = Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / f"memfs-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    return runtime / (hashlib.sha256(os.fsencode(layout.data.resolve())).hexdigest()[:20] + ".sock")


class Owner:
    def __init__(self, layout: Layout, *, started_by: str, watch: bool = True, polling: bool = False,
                 reconcile_every: float = 300.0, embedder: Embedder | None = None, url: str | None = None,
                 socket: Path | None = None, idle_exit: float | None = None, level_on_open: bool = True,
                 open_store: bool = True):
        self.layout = layout
        self.started_by = started_by
        self.watch = watch
        self.polling = polling
        self.reconcile_every = reconcile_every
        self.embedder = embedder
        self.url = url
        self.socket = socket
        self.idle_exit = idle_exit
        self.level_on_open = level_on_open  # without a watcher: reconcile (stat-only) when opening
        # False: take the lock but open the store only after a swap (a restore must work when the
        # current indexes are damaged beyond opening).
        self.open_store = open_store
        self.started = time.time()
        self.lock: StoreLock | None = None
        self.store: MemoryStore | None = None
        self.watcher = None
        # True from the moment the lock is ours (never reset): from then a stop asked for is the
        # orderly one, acted on once the store is open; before, it ends the wait (daemon.StopRequest).
        self.owned = False
        self.opened_report = None  # what the reconcile on opening did (no watcher), until taken
        self._swap = threading.RLock()  # held while the store is replaced (restore) or snapshotted

    def start(self, lock_timeout: float = 2.0) -> "Owner":
        """Take the lock (StoreBusyError if taken), finish an interrupted restore, open the store."""
        if self.open_store:
            self.layout.create()
        else:  # the lock lives in data/; what opening would create is left to the operation (validate)
            self.layout.data.mkdir(parents=True, exist_ok=True)
        record = {"started_by": self.started_by, "socket": str(self.socket) if self.socket else None,
                  "idle_exit": self.idle_exit}
        try:
            # Inside the guard: a stop that ends the wait just as the lock is ours releases it, logged
            # (or, landing before the assignment, leaves it to the process's exit, and neither is logged).
            self.lock = StoreLock(self.layout.lock_file, url=self.url, **record).acquire(lock_timeout)
            log.info("owner pid %d took the lock (%s) at %.6f", os.getpid(), self.started_by, time.time())
            # From here a stop waits for the store to open: one raised in the middle of opening could
            # close the store under a watcher whose threads had started but were not yet recorded.
            self.owned = True
            for note in finish_interrupted_restore(self.layout):
                log.warning(note)
            if self.open_store:
                self._open()
        except BaseException:  # a failed open, or a stop that ended the wait for the lock
            try:
                self.close()  # the watcher (if it started) stopped, the store closed, the release logged
            except Exception:  # logged; the stop or the error that ended the start is what the caller sees
                log.exception("closing the store after its start was stopped or failed")
            raise
        return self

    def _open(self) -> None:
        self.store = MemoryStore.open(self.layout, lock=self.lock, embedder=self.embedder)
        self.embedder = self.store.embedder
        if self.watch:
            from .watcher import Watcher

            self.watcher = Watcher(self.store, polling=self.polling, reconcile_every=self.reconcile_every).start()
            # An owner serves agents' single stores: each returns once searchable, and the Chroma
            # upserts of several follow as one (VectorWriter.defer; the rows stay unsynced till then).
            self.store.writer.defer = True
        elif self.level_on_open:
            # Pick up hand edits made since the last run; kept for the command's own report.
            self.opened_report = self.store.reconcile(verify_vectors=False)

    def _close_store(self) -> str:
        """Stop the watcher (waiting for its batch: never close the store under it), close the store;
        returns what the watcher left, for the stop message."""
        left = "the store was not open"
        if self.watcher is not None:
            stopped = self.watcher.stop()
            self.watcher = None
            left = stopped.message()
            log.info("watcher stopped: %s", left)
            if not stopped.finished:
                return left  # a thread still uses the store; the process exit ends it
        elif self.store is not None:
            left = "every change applied"
        if self.store is not None:
            self.store.close()
            self.store = None
        return left

    def close(self) -> str:
        """Apply pending changes, close everything, release the lock. Returns what was done with the
        pending work (issue #24, item 2: the message said "applied" for work that was cut off)."""
        left = "the store was not open"
        with self._swap:
            try:
                left = self._close_store()
            finally:
                if self.lock is not None and self.lock.held:
                    log.info("owner pid %d released the lock at %.6f", os.getpid(), time.time())
                    self.lock.release()
        return left

    @contextlib.contextmanager
    def using(self) -> Iterator[MemoryStore]:
        """The store, for one request; waits while a restore swaps it or a backup snapshots it."""
        with self._swap:
            yield self.store

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[MemoryStore]:
        """The store with every other request and the indexer paused (backup snapshot, validate)."""
        with self._swap, self.store.mutex:
            yield self.store

    @contextlib.contextmanager
    def swapping(self) -> Iterator[None]:
        """Close the store (requests wait), let the caller replace data/, then open it again.

        If the caller fails (an archive refused: nothing changed), the store is reopened as it was, and
        a failure to reopen it is logged, never put in the place of the caller's own error.
        """
        with self._swap:
            was_open = self.store is not None
            self._close_store()
            try:
                yield
            except BaseException:
                if was_open:
                    try:
                        self._reopen()
                    except Exception:
                        log.exception("could not reopen the store after a failed swap")
                raise
            self._reopen()

    def _reopen(self) -> None:
        for note in finish_interrupted_restore(self.layout):
            log.warning(note)
        self._open()

    @property
    def ready(self) -> bool:
        """True once the startup reconcile has finished."""
        if self.store is None:
            return False
        return self.watcher is None or bool(self.watcher.reports)

    def wait_until_indexed(self, timeout: float = 600.0) -> int:
        """After a swap: wait for the watcher's first reconcile; returns how many texts it embedded."""
        if self.watcher is None:
            return 0
        self.watcher.idle.wait(timeout)
        return self.watcher.embedded

    def busy(self) -> bool:
        """Work an idle exit must not cut short: paths queued, a batch being applied, vectors to embed."""
        return self.watcher is not None and self.watcher.busy()
