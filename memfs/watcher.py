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

import ctypes
import ctypes.util
import errno
import gc
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from .filestore import is_ignored_path
from .results import ReconcileReport
from .store import MemoryStore

log = logging.getLogger("memfs.watcher")


# Rows one embedding round takes: the longest an edit waits behind work already being encoded.
EMBED_BATCH = 16
# Rounds of a bulk copy taken in one call, each encoded while the one before is written (a round of
# 32 at a time cost a third of the throughput); a hand edit ends the call at the next round.
BULK_ROUNDS = 32
# Texts encoded before the embedder, once idle, gives the memory it grew back (give_back_memory).
TRIM_AFTER = 256
# While a person edits beside a bulk copy (a round of hand edits went before the copy's rows in the
# last PERSON_WINDOW seconds), the copy goes on in rounds of PERSON_ROUND: their next edit then waits
# behind a quarter of a round, not a whole one. Once they stop, full rounds come back.
PERSON_WINDOW = 10.0
PERSON_ROUND = 4


@dataclass
class WatcherStatus:
    running: bool
    observer: str
    queue_depth: int  # paths (and full looks) waiting, plus memories waiting for their vectors
    batches: int
    events: int
    last_error: str | None
    last_reconcile: float | None  # time.time() of the last full reconcile
    invalid: list[dict] = field(default_factory=list)
    embedding: int = 0  # memories indexed by keyword whose vectors are still to come

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class WatcherStopped:
    """What `Watcher.stop` left: nothing, or vectors handed over to the next start (never lost: their
    rows stay unsynced in the catalog, and every reconcile embeds unsynced rows)."""
    finished: bool  # both workers ended; False only if a timeout ran out first
    paths_left: int
    vectors_left: int

    def message(self) -> str:
        if not self.finished:
            return (f"the indexer did not finish in time ({self.paths_left} path(s) not applied); "
                    "the next start's reconcile picks them up")
        if self.vectors_left:
            return (f"every change indexed; {self.vectors_left} memories still lack a vector, which the next "
                    "start embeds (keyword search finds them meanwhile)")
        return "every change indexed and embedded"


class Watcher:
    """Start with `start()`, stop with `stop()` (which applies what is still pending).

    Two workers (issue #24, item 1): the indexer puts each batch's files into the catalog and the
    keyword index without encoding anything, so an edit is searchable by keyword within a debounce
    and a catalog write, whatever is being embedded; the embedder then gives the rows their vectors
    in rounds of `embed_batch`, most urgent first (`next_round`): an edit never waits behind more
    than one round of a bulk copy.
    """

    def __init__(self, store: MemoryStore, *, polling: bool = False, debounce: float = 0.05,
                 reconcile_every: float = 300.0, batch_max: int = 2000, embed_batch: int = EMBED_BATCH):
        self.store = store
        self.polling = polling
        self.debounce = debounce
        self.reconcile_every = reconcile_every
        self.batch_max = batch_max
        self.embed_batch = embed_batch
        self._cond = threading.Condition()
        self._pending: dict[str, float] = {}  # relative path -> when it is due (debounced)
        self._full_due: float | None = None  # a full reconcile is due at this monotonic time
        self._stopping = False
        self._applying = True  # the indexer is applying a batch (from the start: the startup reconcile)
        self._embed_wanted = True  # the embedder should look for rows lacking vectors
        self._embedding = False  # the embedder is running a round
        self._vectors_pending = 0  # rows lacking vectors when the embedder last looked
        self._hand_edit = False  # the indexer applied what looks like a person's edit: re-plan the rounds
        self._person_at = float("-inf")  # when a hand edit last went before a bulk copy: see PERSON_WINDOW
        self._observer = None
        self._thread: threading.Thread | None = None
        self._embed_thread: threading.Thread | None = None
        self._events = 0
        self._batches = 0
        self._last_error: str | None = None
        self._last_full: float | None = None
        self.embedded = 0  # texts the embedder encoded since start
        self.reports: list[ReconcileReport] = []  # the last few, for status and tests
        self._logged_invalid: set[tuple[str, str]] = set()  # (path, reason) already in the log
        self.idle = threading.Event()  # set whenever nothing is pending, being applied or embedded

    # -- lifecycle ----------------------------------------------------------------------------------

    def start(self) -> "Watcher":
        self._observer = self._start_observer()
        self._thread = threading.Thread(target=self._run, name="memfs-watcher", daemon=True)
        self._thread.start()
        self._embed_thread = threading.Thread(target=self._embed_run, name="memfs-embedder", daemon=True)
        self._embed_thread.start()
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

    def stop(self, timeout: float | None = None) -> WatcherStopped:
        """Stop following. The indexer applies every pending path first; the embedder ends after its
        round and hands the rest over (issue #24, item 2: the store was closed under a running batch).
        Without a timeout this waits for both, so the caller may close the store afterwards."""
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in (self._thread, self._embed_thread):
            if thread is not None:
                thread.join(timeout)
        finished = not any(t is not None and t.is_alive() for t in (self._thread, self._embed_thread))
        with self._cond:
            paths_left = len(self._pending)
        vectors_left = len(self.store.pending_vectors()) if finished else self._vectors_pending
        return WatcherStopped(finished, paths_left, vectors_left)

    def __enter__(self) -> "Watcher":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_applied(self, timeout: float) -> bool:
        """Wait until every path seen so far is in the catalog (embedding may still go on)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending or self._full_due is not None or self._applying:
                left = deadline - time.monotonic()
                if left <= 0 or self._stopping:
                    return False
                self._cond.wait(min(left, 0.1))
            return True

    def busy(self) -> bool:
        """Anything queued, being applied or being embedded (an idle exit must wait for it)."""
        with self._cond:
            return bool(self._pending or self._full_due is not None or self._applying or self._embed_wanted
                        or self._embedding or self._vectors_pending)

    def status(self) -> WatcherStatus:
        with self._cond:
            depth = len(self._pending) + (self._full_due is not None) + self._applying
            embedding = self._vectors_pending
        return WatcherStatus(
            running=self._thread is not None and self._thread.is_alive(),
            observer="polling" if self.polling else "inotify",
            queue_depth=depth + embedding, batches=self._batches, events=self._events,
            last_error=self._last_error, last_reconcile=self._last_full,
            invalid=[{"path": i.path, "reason": i.reason} for i in self.store.catalog.invalid()],
            embedding=embedding,
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

    def _set_idle_if_idle(self) -> None:
        """Called holding _cond."""
        if not (self._pending or self._full_due is not None or self._applying or self._embed_wanted
                or self._embedding or self._vectors_pending):
            self.idle.set()

    # -- the indexer --------------------------------------------------------------------------------

    def _run(self) -> None:
        # Startup, after the observer started collecting: files first (what a hand edit needs), then
        # Chroma's id set, whose first open costs more than the whole file reconcile at 20k files.
        self._apply(None, verify_vectors=False)
        self._apply(None)
        next_periodic = time.monotonic() + self.reconcile_every
        while True:
            batch, full, last = self._next_batch(next_periodic)
            if full or time.monotonic() >= next_periodic:
                self._apply(None)
                next_periodic = time.monotonic() + self.reconcile_every
            elif batch:
                self._apply(batch)
            if last:
                return

    def _next_batch(self, next_periodic: float) -> tuple[list[str], bool, bool]:
        """Wait for due paths, a due full look, or stopping: (paths, full, stopping)."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self._stopping:
                    batch, full = list(self._pending), self._full_due is not None
                    self._pending.clear()
                    self._full_due = None
                    self._applying = bool(batch) or full
                    return batch, full, True
                due = [p for p, t in self._pending.items() if t <= now][: self.batch_max]
                full = self._full_due is not None and self._full_due <= now
                if due or full or now >= next_periodic:
                    for p in due:
                        del self._pending[p]
                    if full:
                        self._full_due = None
                    self._applying = True
                    return due, full, False
                self._set_idle_if_idle()
                deadlines = list(self._pending.values()) + [next_periodic]
                if self._full_due is not None:
                    deadlines.append(self._full_due)
                self._cond.wait(max(0.0, min(deadlines) - now))

    def _apply(self, paths: list[str] | None, verify_vectors: bool = True) -> None:
        try:
            self._index(paths, verify_vectors)
        finally:
            with self._cond:
                self._applying = False
                if paths and by_hand(paths):
                    self._hand_edit = True
                self._embed_wanted = True  # new rows, or vectors found missing, or a retry after an error
                self._cond.notify_all()

    def _index(self, paths: list[str] | None, verify_vectors: bool) -> None:
        try:
            report = self.store.reconcile(paths=paths, verify_vectors=verify_vectors and paths is None, embed=False)
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
        if changed:
            log.info("indexed %d change(s): %d added, %d updated, %d moved, %d removed in %.2fs",
                     changed, report.added, report.updated, report.moved, report.removed, report.seconds)
        # Each invalid file is logged when it is found, not again at every full reconcile (issue #24, 5).
        now_invalid = {(bad.path, bad.reason) for bad in report.invalid}
        for path, reason in sorted(now_invalid - self._logged_invalid):
            log.warning("invalid memory file %s: %s", path, reason)
        self._logged_invalid = now_invalid

    # -- the embedder -------------------------------------------------------------------------------

    def _embed_run(self) -> None:
        pause = 0.0  # after a failed or fruitless round: wait before the next, growing to 30 s
        since_trim = 0  # texts encoded since the memory was last given back
        while True:
            if since_trim >= TRIM_AFTER and not self._embed_wanted:  # a bulk embedding just ended
                give_back_memory()
                since_trim = 0
            with self._cond:
                while not self._embed_wanted and not self._stopping:
                    self._set_idle_if_idle()
                    self._cond.wait()
                if self._stopping:
                    return
                self._embed_wanted = False
                self._embedding = True
            try:
                before = self.embedded
                progressed = self._embed_round()
                since_trim += self.embedded - before
                pause = 0.0 if progressed else min(30.0, max(1.0, pause * 2))
            except Exception as e:  # a broken model must not end the embedder; the rows stay unsynced
                self._last_error = f"{type(e).__name__}: {e}"
                log.exception("embedding failed; trying again")
                pause = min(30.0, max(1.0, pause * 2))
            with self._cond:
                self._embedding = False
                if self._vectors_pending:
                    self._embed_wanted = True
                    if pause:
                        self._cond.wait(pause)  # stop() wakes it
                self._cond.notify_all()

    def _embed_round(self) -> bool:
        """Embed the most urgent rows lacking vectors; False if there was work but none got done."""
        pending = self.store.pending_vectors()
        with self._cond:
            self._vectors_pending = len(pending)
        if not pending:
            return True
        ids = next_round(pending, self.embed_batch)
        with self._cond:
            self._hand_edit = False
        keep_going, size = None, self.embed_batch
        if len(ids) < min(self.embed_batch, len(pending)):  # hand edits went before a bulk copy
            self._person_at = time.monotonic()
        else:
            if len(ids) >= self.embed_batch:  # no hand edit waits: a bulk copy, several rounds in one call
                ids = next_round(pending, self.embed_batch * BULK_ROUNDS)
                keep_going = lambda: not (self._hand_edit or self._stopping)  # noqa: E731
            if time.monotonic() - self._person_at < PERSON_WINDOW:  # the copy's tail too: up to 15 rows
                size = min(size, PERSON_ROUND)
        report = self.store.embed_pending(ids, round_size=size, keep_going=keep_going)
        self.embedded += report.embedded
        with self._cond:
            self._vectors_pending = max(0, len(pending) - report.vectors_written)
        if report.vectors_written:
            log.info("embedded %d memories (%d encoded) in %.2fs; %d to go", report.vectors_written,
                     report.embedded, report.seconds, self._vectors_pending)
        return report.vectors_written > 0


def give_back_memory() -> None:
    """Return the heap a bulk embedding grew to the system (issue #24, item 5: an owner kept ~0.8 GB
    after indexing 10k files that a fresh owner does not need). The model's activations are freed
    to malloc, which keeps them; malloc_trim hands the free pages back."""
    gc.collect()
    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim with
        pass


# A folder with at most this many rows waiting holds a person's edit, not a bulk copy.
HAND_EDIT_FOLDER = 4


def by_hand(paths: list[str]) -> bool:
    """Whether a batch of changed paths holds what looks like a person's edit: a folder with only a
    few of them (a bulk copy or a checkout changes hundreds in a folder)."""
    per_folder: dict[str, int] = {}
    for p in paths:
        folder = p.rpartition("/")[0]
        per_folder[folder] = per_folder.get(folder, 0) + 1
    return min(per_folder.values()) <= HAND_EDIT_FOLDER


def next_round(pending: list[tuple[str, str, bool]], size: int) -> list[str]:
    """The ids to embed next, most urgent first. An edit made by a person touches a file or two in a
    folder; a bulk copy or a checkout fills folders with hundreds. So rows in folders with the fewest
    rows waiting go first, a changed memory before a new one, then by path. When such hand edits are
    waiting beside a bulk copy, the round holds them alone: it is short, so an edit's vector follows
    its text by at most the bulk round already running plus this small one (issue #24, item 1). A
    bulk copy is never starved: what a person does adds a handful of rows at a time."""
    waiting: dict[str, int] = {}
    for _, path, _ in pending:
        folder = path.rpartition("/")[0]
        waiting[folder] = waiting.get(folder, 0) + 1
    ranked = sorted(pending, key=lambda r: (waiting[r[1].rpartition("/")[0]], r[2], r[1]))
    by_hand = [r for r in ranked if waiting[r[1].rpartition("/")[0]] <= HAND_EDIT_FOLDER]
    chosen = by_hand if 0 < len(by_hand) < min(size, len(ranked)) else ranked[:size]
    return [mem_id for mem_id, _, _ in chosen]


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
