"""The live indexer: follow data/memories/ with watchdog and keep the indexes level with the files.

Startup order matters: the observer starts collecting events first, then a full reconcile runs, then
the collected events are applied, so an edit made during the startup scan is not lost.

Events only say *which paths* to look at; what to do is decided by `MemoryStore.reconcile(paths=…)`,
the same code as a full reconcile, from what is on disk when it looks. So a vim atomic save (a temp
file renamed over the target), `sed -i`, a `git checkout` of hundreds of files, or several writes per
save all end the same way: the path's current content is indexed once. A file whose size, mtime, ctime and
inode match the catalog is not read, which is also why the store's own writes are not re-embedded.

Events can be lost (inotify queue overflow is dropped silently, gorakhargosh/watchdog #654; bind
mounts miss events). Directory events and a cheap periodic reconcile (stat only, nothing re-read
when nothing changed) recover from that; `polling=True` uses watchdog's PollingObserver instead.
A `chmod` comes as an attrib event from inotify; the PollingObserver compares only size, mtime and
inode, so with polling a permission fix is seen by the periodic reconcile (issue #14, finding 2).
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .filestore import is_ignored_path
from .results import ReconcileReport
from .store import MemoryStore

log = logging.getLogger("memfs.watcher")


@dataclass
class WatcherStatus:
    running: bool
    observer: str
    queue_depth: int
    batches: int
    events: int
    last_error: str | None
    last_reconcile: float | None  # time.time() of the last full reconcile
    invalid: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Watcher:
    """Start with `start()`, stop with `stop()` (which applies what is still pending)."""

    def __init__(self, store: MemoryStore, *, polling: bool = False, debounce: float = 0.05,
                 reconcile_every: float = 300.0, batch_max: int = 2000):
        self.store = store
        self.polling = polling
        self.debounce = debounce
        self.reconcile_every = reconcile_every
        self.batch_max = batch_max
        self._cond = threading.Condition()
        self._pending: dict[str, float] = {}  # relative path -> when it is due (debounced)
        self._full_due: float | None = None  # a full reconcile is due at this monotonic time
        self._stopping = False
        self._observer = None
        self._thread: threading.Thread | None = None
        self._events = 0
        self._batches = 0
        self._last_error: str | None = None
        self._last_full: float | None = None
        self.reports: list[ReconcileReport] = []  # the last few, for status and tests
        self.idle = threading.Event()  # set whenever nothing is pending or being applied

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> "Watcher":
        self._observer = self._start_observer()
        self._thread = threading.Thread(target=self._run, name="memfs-watcher", daemon=True)
        self._thread.start()
        return self

    def _start_observer(self):
        from watchdog.observers import Observer
        from watchdog.observers.polling import PollingObserver

        root = str(self.store.layout.memories)
        handler = _Handler(self)
        if not self.polling:
            observer = Observer()
            observer.schedule(handler, root, recursive=True)
            try:
                observer.start()
                return observer
            except OSError as e:
                # Trigger: the inotify watch or instance limit is reached (ENOSPC / EMFILE).
                # Why: the kernel refuses more watches; nothing would be followed. Outcome: poll.
                if e.errno not in (errno.ENOSPC, errno.EMFILE):
                    raise
                log.warning("inotify limit reached (%s); falling back to polling. Raise "
                            "fs.inotify.max_user_watches to use inotify", e)
                self.polling = True
        observer = PollingObserver(timeout=1.0)
        observer.schedule(handler, root, recursive=True)
        observer.start()
        return observer

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop following; apply what is pending first (the next start's reconcile catches anything else)."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> "Watcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def status(self) -> WatcherStatus:
        with self._cond:
            depth = len(self._pending) + (self._full_due is not None)
        return WatcherStatus(
            running=self._thread is not None and self._thread.is_alive(),
            observer="polling" if self.polling else "inotify",
            queue_depth=depth, batches=self._batches, events=self._events, last_error=self._last_error,
            last_reconcile=self._last_full,
            invalid=[{"path": i.path, "reason": i.reason} for i in self.store.catalog.invalid()],
        )

    # -- events in ----------------------------------------------------------------------------------

    def notify(self, paths: list[str], *, full: bool = False) -> None:
        """Queue paths (relative to memories/) to be looked at once they have been quiet a moment."""
        due = time.monotonic() + self.debounce
        with self._cond:
            self._events += 1
            for p in paths:
                self._pending[p] = due
            if full:
                self._full_due = due
            self.idle.clear()
            self._cond.notify_all()

    def _rel(self, path: str | bytes) -> str | None:
        if isinstance(path, bytes):
            path = path.decode("utf-8", "surrogateescape")
        try:
            return Path(path).relative_to(self.store.layout.memories).as_posix()
        except ValueError:
            return None  # moved out of the tree: only the source side concerns us

    # -- the worker ---------------------------------------------------------------------------------

    def _run(self) -> None:
        # Startup, after the observer started collecting: files first (what a hand edit needs), then
        # Chroma's id set, whose first open costs more than the whole file reconcile at 20k files.
        self._apply(None, verify_vectors=False)
        self._apply(None)
        next_periodic = time.monotonic() + self.reconcile_every
        draining = False
        while True:
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._stopping:
                        draining = True
                        batch, full = list(self._pending), self._full_due is not None
                        self._pending.clear()
                        self._full_due = None
                        break
                    due = [p for p, t in self._pending.items() if t <= now][: self.batch_max]
                    full = self._full_due is not None and self._full_due <= now
                    if due or full or now >= next_periodic:
                        for p in due:
                            del self._pending[p]
                        if full:
                            self._full_due = None
                        batch = due
                        break
                    if not self._pending and self._full_due is None:
                        self.idle.set()
                    deadlines = list(self._pending.values()) + [next_periodic]
                    if self._full_due is not None:
                        deadlines.append(self._full_due)
                    self._cond.wait(max(0.0, min(deadlines) - now))
            if full or time.monotonic() >= next_periodic:
                self._apply(None)
                next_periodic = time.monotonic() + self.reconcile_every
            elif batch:
                self._apply(batch)
            # Not `if self._stopping`: a stop that came while a batch was being applied must still
            # drain what is pending (issue #23: SIGTERM left 491 of 600 queued files to the next start).
            if draining:
                return

    def _apply(self, paths: list[str] | None, verify_vectors: bool = True) -> None:
        try:
            report = self.store.reconcile(paths=paths, verify_vectors=verify_vectors and paths is None)
        except Exception as e:  # the watcher must outlive any one bad batch; the next reconcile retries
            self._last_error = f"{type(e).__name__}: {e}"
            log.exception("indexing %s failed", "the store" if paths is None else f"{len(paths)} path(s)")
            time.sleep(0.5)
            if paths:
                with self._cond:
                    self._full_due = time.monotonic() + 5.0  # recover by a full reconcile soon
            return
        self._batches += 1
        if paths is None:
            self._last_full = time.time()
            try:  # files of expired key/value memories go at each full reconcile (issue #13; logged)
                self.store.sweep_expired()
            except Exception:
                log.exception("the expiry sweep failed; the next full reconcile tries again")
        self.reports = (self.reports + [report])[-20:]
        changed = report.added + report.updated + report.moved + report.removed
        if changed or report.embedded:
            log.info("indexed %d change(s): %d added, %d updated, %d moved, %d removed; %d embedded in %.2fs",
                     changed, report.added, report.updated, report.moved, report.removed, report.embedded,
                     report.seconds)
        for bad in report.invalid:
            if paths is None or bad.path in paths:
                log.warning("invalid memory file %s: %s", bad.path, bad.reason)


class _Handler:
    """watchdog's callback interface, reduced to: which paths changed, or is a full look needed."""

    def __init__(self, watcher: Watcher):
        self.w = watcher

    def dispatch(self, event) -> None:
        kind = event.event_type
        if kind in ("opened", "closed_no_write"):
            return
        paths = [self.w._rel(event.src_path)]
        if kind == "moved":
            paths.append(self.w._rel(event.dest_path))
        if event.is_directory:
            # A directory created, removed or moved: files inside may have come or gone without
            # events of their own (created before its watch existed). A full reconcile is stat-only.
            if kind in ("created", "deleted", "moved") and any(
                    p is not None and not any(c.startswith(".") for c in p.split("/")) for p in paths):
                self.w.notify([], full=True)
            return
        paths = [p for p in paths if p is not None and not is_ignored_path(p)]
        if paths:
            self.w.notify(paths)
