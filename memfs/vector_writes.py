"""VectorWriter: brings Chroma level with the catalog's rows, encoding only content never embedded.

The catalog marks a row unsynced when its memory is written; this module encodes the content whose
vector is known neither to the embedding cache nor to the index (`known_vectors`; off the state lock,
at a lower CPU priority than requests), upserts the rows' vectors, marks them synced and lets the
cache drop what the index now holds, so each vector is kept once (memfs.embed_cache). With `defer`
on (an owner), a small write returns once its vectors are cached and searchable, and their Chroma
upsert follows, gathered with other writes' (`_defer`, `flush_soon`).
It also keeps `lagging` (some rows still wait for their vectors), checks Chroma's id set against the
catalog's, and rebuilds the vector index from its own vectors.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Sequence

import numpy as np

from .catalog import Catalog
from .documents import Memory
from .embedder import Embedder
from .lock import StoreMutex
from .ops import Progress
from .results import ReconcileReport
from .vectors import VectorIndex, holds

# How many documents go through one embed + index round in bulk work.
BULK_BATCH = 256
# How many vectors one Chroma upsert takes under the state lock; searches may run between two.
SYNC_ROUND = 64
# How much lower the model's encoding runs than request threads (_yield_to_requests).
EMBED_NICE = 10
# With `defer` on, a write of up to DEFER_MAX memories leaves its Chroma upsert to the flusher thread,
# which gathers the rows of writes in a row into one upsert: when DEFER_ROWS are waiting, or the oldest
# has waited DEFER_SECONDS. Chroma's upsert costs ~10 ms of CPU for one vector and ~1 ms each in a
# round of 16 (issue #26: a quarter of a single store's time). Rounds of 16, not 32: the upsert holds the
# GIL, and a search that lands on a round of 32 waited ~30 ms for it (bench_peer: p99 42 ms, 22 with 16).
DEFER_MAX = 16
DEFER_ROWS = 16
DEFER_SECONDS = 0.5

log = logging.getLogger("memfs")


def _yield_to_requests() -> None:
    """Run this thread (the writers' model encoding) at a lower CPU priority than the threads that
    answer requests (issue #14, finding 4). The model keeps every core busy while it encodes; at equal
    priority a keyword search, which needs a fraction of a millisecond, waited for a time slice (its
    p99 went from 0.6 to 4.8 ms with no lock involved). With nice +10 the kernel runs a search first;
    encoding still has every idle cycle. The model's worker threads are started by this thread and
    inherit its priority. Only on Linux, where the nice value belongs to the thread (elsewhere it
    would slow the whole process, searches included)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, min(19, os.getpriority(os.PRIO_PROCESS, 0) + EMBED_NICE))


class VectorWriter:
    """The store's vector writes; every method but `write` takes the state lock itself."""

    def __init__(self, catalog: Catalog, vectors: VectorIndex, embedder: Embedder, mutex: StoreMutex):
        self.catalog = catalog
        self.vectors = vectors
        self.embedder = embedder
        self.mutex = mutex
        self._embed_lock = threading.Lock()  # never take the state lock while holding it
        # Deferred upserts (`defer`, set by an owner): ids whose vectors are cached and in the exact
        # search's in-memory copy, so searches find them, but not yet in Chroma. Their catalog rows stay
        # unsynced until the flusher has upserted them: a crash before then is repaired by reconcile,
        # from the cache, like any unsynced row.
        self.defer = False
        self._soon: set[str] = set()
        self._soon_since = 0.0  # time.monotonic() when the oldest of _soon was deferred
        self._soon_cond = threading.Condition()
        self._flusher: threading.Thread | None = None
        self._closing = False
        # Ids a request's own write (a few memories, `write(may_defer=True)`) is giving vectors right
        # now: their rows are in the catalog, unsynced, while the request encodes them without the state
        # lock. The watcher's embedder leaves them to it, as it leaves _soon to the flusher; taking
        # them, it upserted each alone (~10 ms of Chroma's time) beside the request's own encode.
        self._writing: Counter[str] = Counter()  # counted: two updates of one memory may overlap
        self._few_encoder: ThreadPoolExecutor | None = None  # _encoder
        # Some rows are in the keyword index without their vectors yet (the watcher embeds behind it):
        # hybrid search then also ranks keyword hits for plain questions (issue #24, item 1).
        self.lagging = catalog.has_unsynced()

    def refresh_lag(self) -> None:
        """Note whether rows still wait for their vectors; the caller holds the state lock. A row
        waiting only for its deferred upsert is searchable already, so it does not count."""
        with self._soon_cond:
            soon = set(self._soon)
        self.lagging = self.catalog.has_unsynced(excluding=soon)

    def write(self, memories: Sequence[Memory] | None, progress: Progress | None = None, *,
              meanwhile: Callable[[], None] | None = None, phase: str = "embed",
              report: ReconcileReport | None = None, round_size: int = BULK_BATCH,
              keep_going: Callable[[], bool] | None = None, may_defer: bool = False) -> int:
        """Give Chroma the vectors it lacks: the given memories, or (None) every unsynced catalog row.

        A vector kept is reused (`known_vectors`); other content is encoded in rounds, longest first
        (the model pads a batch to its longest text), on a worker thread ahead of this one, so that
        `meanwhile()` (add_many's file writes, mostly waiting on the disk) and each round's upsert
        overlap the model instead of adding to it.

        The caller holds the state lock; it is let go while this thread waits for the model (issue
        #14, finding 4), so what is upserted is read again from the catalog once it is taken back:
        a row changed meanwhile is never marked synced with an old vector.

        `may_defer`: a request's own write (add, update), which with `defer` on and up to DEFER_MAX
        memories returns once they are searchable, their Chroma upsert following (`_defer`).
        """
        memories = sorted([e.memory for e in self.catalog.unsynced()] if memories is None else memories,
                          key=lambda m: len(m.content), reverse=True)
        few = may_defer and len(memories) <= DEFER_MAX
        defer = few and self.defer and self.vectors.mirror_loaded
        rounds = [memories[i:i + round_size] for i in range(0, len(memories), round_size)]
        todo = self._uncached_per_round(rounds)
        pool = self._encoder(few) if any(todo) else None

        def encode(n: int, texts: dict[str, str]) -> int:
            # A round not yet begun is not begun once told to stop: the model is free for what came.
            return 0 if n and keep_going is not None and not keep_going() else self._encode(texts)

        encoded = [pool.submit(encode, n, texts) if pool and texts else None for n, texts in enumerate(todo)]
        claimed = {m.id for m in memories} if few else set()
        with self._soon_cond:
            self._writing.update(claimed)
        try:
            if meanwhile:
                meanwhile()
            written = 0
            for n, (batch, future) in enumerate(zip(rounds, encoded)):
                if n and keep_going is not None and not keep_going():
                    break  # keep_going stays False once it is: the encodes after this one were skipped
                if future is not None:
                    with self.mutex.released():
                        encoded_now = future.result()
                    if report is not None:
                        report.embedded += encoded_now
                ids = [m.id for m in batch]
                written += self._defer(ids, report) if defer else self._sync(ids, report)
                if progress:
                    progress(phase, written, len(memories))
            self.catalog.reclaim()  # the cache's pages a bulk write dropped
            return written
        finally:
            with self._soon_cond:
                self._writing -= Counter(claimed)  # done, or failed: then the embedder or reconcile takes them
            for future in encoded:  # after an error: encode nothing more
                if future is not None:
                    future.cancel()
            if pool is not None and pool is not self._few_encoder:
                pool.shutdown()

    def _encoder(self, few: bool) -> ThreadPoolExecutor:
        """Where a write's rounds are encoded, ahead of the write and at lower priority than requests
        (_yield_to_requests). A request's own few memories go to one lasting thread: a thread made per
        call cost torch a new team of worker threads (~7 ms of a 25 ms single add). More get a thread
        of the call's own, so that a bulk's queued rounds never hold a request's store behind them."""
        if not few:
            return ThreadPoolExecutor(1, thread_name_prefix="memfs-embed", initializer=_yield_to_requests)
        with self._soon_cond:
            if self._few_encoder is None:
                self._few_encoder = ThreadPoolExecutor(1, thread_name_prefix="memfs-embed-few",
                                                       initializer=_yield_to_requests)
            return self._few_encoder

    def known_vectors(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Content hash -> this model's vector, for the content whose vector is kept: embeds nothing.

        From the embedding cache, which holds the vectors the index does not yet, then from the
        index (its in-memory copy when loaded) under a row with that content whose indexed vector
        is for that very content (the index's metadata says which content a vector is for)."""
        hashes = set(hashes)
        with self.mutex:
            found = self.catalog.cached_vectors(self.embedder.model_id, hashes)
            found.update(self._indexed_vectors(hashes - found.keys()))
        return found

    def _indexed_vectors(self, hashes: set[str]) -> dict[str, np.ndarray]:
        rows = self.catalog.indexed_rows(hashes) if hashes else []
        return self._held(rows) if rows else {}

    def _held(self, rows: list[tuple[str, str]]) -> dict[str, np.ndarray]:
        """Content hash -> vector, for those (hash, id) rows whose indexed vector is for that content."""
        held = self.vectors.stored(list({i for _, i in rows}))
        return {h: held[i][1] for h, i in rows if i in held and holds(held[i][0], h)}

    def _uncached_per_round(self, rounds: list[list[Memory]]) -> list[dict[str, str]]:
        """Per round: content hash -> text to encode, for content whose vector is not kept."""
        uncached = self.catalog.uncached(self.embedder.model_id, (m.content_hash for batch in rounds for m in batch))
        uncached -= self._indexed_vectors(uncached).keys()
        todo: list[dict[str, str]] = []
        for batch in rounds:
            todo.append({m.content_hash: m.content for m in batch if m.content_hash in uncached})
            uncached -= todo[-1].keys()  # a later round with the same content finds it cached by then
        return todo

    def _encode(self, texts: dict[str, str]) -> int:
        """Encode content (hash -> text) into the embedding cache, unless a writer did meanwhile.

        Serialised among writers, and run without the state lock: searches embed their query beside
        it. The cache is written here, before the next writer looks, so that one writer's content is
        never encoded again by another that was waiting for the model (the watcher seeing an add's file).
        """
        model = self.embedder.model_id
        with self._embed_lock:
            todo = {h: texts[h] for h in self.catalog.uncached(model, texts)}
            if todo:
                self.catalog.cache_vectors(model, dict(zip(todo, self.embedder.embed(list(todo.values())))))
            return len(todo)

    def _sync(self, ids: list[str], report: ReconcileReport | None = None) -> int:
        """Upsert the catalog's current rows for these ids that Chroma lacks; encode what is uncached."""
        model = self.embedder.model_id
        written = 0
        for _ in range(5):  # each round runs after a writer changed rows while we waited: rare
            entries = self.catalog.unsynced_among(ids)
            if not entries:
                break
            vectors = self.known_vectors(e.hash for e in entries)
            missing = {e.hash: e.memory.content for e in entries if e.hash not in vectors}
            if missing:
                with self.mutex.released():
                    encoded_now = self._encode(missing)
                if report is not None:
                    report.embedded += encoded_now
                continue
            for start in range(0, len(entries), SYNC_ROUND):
                if start:
                    with self.mutex.released():
                        time.sleep(0)  # let a waiting search in between rounds
                # Another writer may have got in while we stepped out: read these rows again.
                part = self.catalog.unsynced_among([e.memory.id for e in entries[start:start + SYNC_ROUND]])
                part = [e for e in part if e.hash in vectors]
                if part:
                    self.vectors.upsert([e.memory for e in part], np.stack([vectors[e.hash] for e in part]))
                    self.catalog.mark_synced([e.memory.id for e in part])
                    self.catalog.drop_cached(model, [e.hash for e in part])
                    written += len(part)
        return written

    def _defer(self, ids: list[str], report: ReconcileReport | None) -> int:
        """Make these rows searchable now (the in-memory copy) and leave Chroma to the flusher; rows
        whose vectors are not all cached take the usual way. The caller holds the state lock."""
        entries = self.catalog.unsynced_among(ids)
        vectors = self.known_vectors(e.hash for e in entries)
        if not entries or any(e.hash not in vectors for e in entries) or not self.vectors.mirror_upsert(
                [e.memory for e in entries], np.stack([vectors[e.hash] for e in entries])):
            return self._sync(ids, report)
        with self._soon_cond:
            if not self._soon:
                self._soon_since = time.monotonic()
            self._soon.update(e.memory.id for e in entries)
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="memfs-upsert", daemon=True)
                self._flusher.start()
            self._soon_cond.notify_all()
        return len(entries)

    def _flush_loop(self) -> None:
        while True:
            with self._soon_cond:
                while not self._closing:
                    if not self._soon:
                        self._soon_cond.wait()
                        continue
                    left = self._soon_since + DEFER_SECONDS - time.monotonic()
                    if len(self._soon) >= DEFER_ROWS or left <= 0:
                        break
                    self._soon_cond.wait(left)
                if self._closing and not self._soon:
                    return
            self.flush_soon()

    def flush_soon(self) -> None:
        """Upsert the deferred rows into Chroma now (takes the state lock). A failure leaves them
        unsynced in the catalog, where the watcher's embedder or the next reconcile finds them."""
        with self.mutex:
            with self._soon_cond:
                ids = sorted(self._soon)
                self._soon.clear()
            if ids:
                try:
                    self._sync(ids)
                except Exception:
                    log.exception("writing %d deferred vector(s) to Chroma failed; they stay unsynced, for "
                                  "the embedder or the next reconcile", len(ids))

    def close(self) -> None:
        """Stop the flusher once it has written what was deferred. Call without the state lock."""
        with self._soon_cond:
            self._closing = True
            self._soon_cond.notify_all()
            flusher = self._flusher
        if flusher is not None:
            flusher.join()
        self.flush_soon()
        if self._few_encoder is not None:
            self._few_encoder.shutdown()

    def verify(self, report: ReconcileReport, progress: Progress | None, embed: bool = True) -> None:
        """Check Chroma's id set against the catalog's: orphans go, missing rows are (re)embedded
        unless `embed` is False. The caller holds the state lock."""
        self.flush_soon()  # a deferred row is not missing: it is on its way
        in_chroma = self.vectors.ids()
        in_catalog = self.catalog.ids()
        missing = in_catalog - in_chroma
        orphans = in_chroma - in_catalog
        report.vectors_missing = len(missing)
        report.vectors_orphaned = len(orphans)
        self.vectors.delete(sorted(orphans))
        if missing:
            self.catalog.mark_unsynced(missing)
            if embed:
                report.vectors_written += self.write(None, progress=progress, report=report)
        self.catalog.drop_cached(self.embedder.model_id)

    def _claimed(self) -> set[str]:
        """Unsynced rows another writer is on: a deferred upsert (searchable already; the flusher writes
        it; the watcher's embedder taking it would only defer it again, round after round), and a
        request's own write under way (`_writing`)."""
        with self._soon_cond:
            return self._soon | set(self._writing)

    def pending(self) -> list[tuple[str, str, bool]]:
        """MemoryStore.pending_vectors, without the rows another writer is on (_claimed)."""
        with self.mutex:
            rows = self.catalog.unsynced_paths()
        claimed = self._claimed()
        return [r for r in rows if r[0] not in claimed] if claimed else rows

    def embed_pending(self, ids: list[str], *, round_size: int = BULK_BATCH,
                      keep_going: Callable[[], bool] | None = None) -> ReconcileReport:
        """MemoryStore.embed_pending."""
        report = ReconcileReport()
        report.embedded = 0
        started = time.monotonic()
        with self.mutex:
            claimed = self._claimed()
            entries = [e for e in self.catalog.unsynced_among(ids) if e.memory.id not in claimed]
            if entries:
                report.vectors_written = self.write([e.memory for e in entries], report=report,
                                                    round_size=round_size, keep_going=keep_going)
            self.refresh_lag()
        report.seconds = time.monotonic() - started
        return report

    def rebuild(self, progress: Progress | None = None) -> int:
        """MemoryStore.rebuild_vectors."""
        with self.mutex:
            self._cache_indexed()
            self.vectors.reset()
            self.catalog.mark_unsynced(self.catalog.ids())
            return self.write(None, progress=progress)

    def _cache_indexed(self) -> None:
        """Put the vectors the index holds for the catalog's rows into the embedding cache, so that
        making the index again embeds nothing; the rebuild's syncs then drop them from it again. An
        index that cannot be read is rebuilt by embedding what it held."""
        rows = self.catalog.indexed_rows()
        try:
            for start in range(0, len(rows), BULK_BATCH * 4):
                self.catalog.cache_vectors(self.embedder.model_id, self._held(rows[start:start + BULK_BATCH * 4]))
        except Exception as e:
            log.warning("could not read the vector index before rebuilding it (%s): what it held is embedded again", e)
