"""MemoryStore: the Python API over one root. Files are the truth; catalog and vectors follow them.

Every write goes file first (atomically), then catalog, then vectors. A crash between the steps leaves
an index that lags the files, and `reconcile` (run at every start) brings it level again.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from . import documents
from .catalog import Catalog, Entry
from .documents import DEFAULT_TYPE, Memory, normalize_tags, utcnow
from .embedder import Embedder, MiniLMEmbedder
from .errors import InvalidDocumentError, NotFoundError, StoreBusyError
from .filestore import (FileState, Layout, atomic_write, atomic_write_many, default_id_for, fsync_dir, new_relpath,
                        remove_stale_temps, scan, stat_paths)
from .limits import MAX_FILE_BYTES
from .lock import StoreLock
from .query import (MODES, Filters, Mode, QueryPlan, analyze, coverage, fused_score, is_good_match,
                    keyword_weight, matched, no_match_note, snippet)
from .results import AddResult, Hit, InvalidFile, MemoryRecord, ReconcileReport, SearchResult
from .vectors import EXACT_MAX, VectorIndex

ADDED_PER_DAY_DAYS = 30  # how far back stats count memories added per day

log = logging.getLogger("memfs")

# progress(phase, done, total): reconcile and bulk add report through this; the CLI draws a bar.
Progress = Callable[[str, int, int], None]

# How many documents go through one embed + index round in bulk work.
BULK_BATCH = 256
# How many vectors one Chroma upsert takes under the state lock; searches may run between two.
SYNC_ROUND = 64
# How much lower the model's encoding runs than request threads (_yield_to_requests).
EMBED_NICE = 10


class StoreMutex:
    """The store's state lock: a re-entrant lock that knows how deep its owner holds it.

    Searches, lists and every catalog or Chroma change take it; backup and validate hold it to keep
    writes out. The model's slow encoding never runs under it (issue #14, finding 4: a 5.5 MB file
    made every search wait 7 s): a writer steps out with `released()` while it waits for vectors, but
    only when it is the outermost holder. A caller that holds the lock around a write (a backup's
    reconcile) keeps it, so what it wanted excluded stays excluded.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._lock.acquire(blocking, timeout):
            return False
        self._owner = threading.get_ident()
        self._depth += 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()

    def held(self) -> bool:
        return self._owner == threading.get_ident()

    @contextlib.contextmanager
    def released(self):
        """Let others in for the duration, if this thread holds the lock exactly once."""
        if not (self.held() and self._depth == 1):
            yield
            return
        self.release()
        try:
            yield
        finally:
            self.acquire()


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


class MemoryStore:
    """Open with `MemoryStore.open(root)`; use as a context manager or call `close()`."""

    def __init__(self, layout: Layout, catalog: Catalog, vectors: VectorIndex, embedder: Embedder,
                 lock: StoreLock | None):
        self.layout = layout
        self.catalog = catalog
        self.vectors = vectors
        self.embedder = embedder
        self.lock = lock
        self._mutex = StoreMutex()
        self._last_query: tuple[str, np.ndarray] | None = None  # search's one-entry query-vector cache
        self._embed_lock = threading.Lock()  # never take _mutex while holding it
        # Temp files older than this were left by a process that died mid-write: only the lock's holder
        # writes them, and we hold it since before now (issue #14, finding 6).
        self._opened_at = time.time()
        self._invalid_logged: frozenset = frozenset()  # what the last full reconcile's warning named
        # Some rows are in the keyword index without their vectors yet (the watcher embeds behind it):
        # hybrid search then also ranks keyword hits for plain questions (issue #24, item 1).
        self.vectors_lag = catalog.has_unsynced()

    @property
    def mutex(self) -> StoreMutex:
        """The state lock, for a caller that must keep writes out while it works (memfs.sync)."""
        return self._mutex

    def read_file(self, rel: str) -> Memory:
        """The memory in a file under memories/ as it is now (NotFoundError, InvalidDocumentError)."""
        return self._read(rel)

    # -- lifecycle ----------------------------------------------------------------------------------

    @classmethod
    def init(cls, root: Layout | Path | str) -> Layout:
        """Create the directory layout (idempotent)."""
        layout = Layout.of(root)
        layout.create()
        return layout

    @classmethod
    def open(cls, root: Layout | Path | str, *, create: bool = False, embedder: Embedder | None = None,
             chroma_url: str | None = None, lock_timeout: float = 0.0, url: str | None = None,
             lock: StoreLock | None = None) -> "MemoryStore":
        """Open the store at `root`, taking its lock (StoreBusyError if another process holds it).

        Pass `lock` when the caller already holds it (backup, restore): the store then uses it and
        leaves releasing it to the caller.
        """
        layout = Layout.of(root).require(create=create)
        owned = lock is None
        if owned:
            lock = StoreLock(layout.lock_file, url=url).acquire(lock_timeout)
        try:
            if any(layout.data.glob(".restore-*")):
                # Trigger: a restore was interrupted. Why: its staging may hold half of data/; only the
                # owner (memfs.owner.Owner.start) finishes it, once, before anything reads the parts.
                raise StoreBusyError(f"{layout.root} has an interrupted restore; any memfs command finishes it "
                                     "(or memfs.owner.Owner(...).start() from Python)")
            catalog = Catalog(layout.indexes / "catalog.sqlite")
        except BaseException:
            if owned:
                lock.release()
            raise
        return cls(layout, catalog, VectorIndex(layout.embeddings, chroma_url), embedder or MiniLMEmbedder(),
                   lock if owned else None)

    def close(self) -> None:
        with self._mutex:
            try:
                self.vectors.close()
                self.catalog.close()
            finally:  # even if closing fails (a full disk), the lock must not outlive the store
                if self.lock is not None:
                    self.lock.release()

    def __enter__(self) -> "MemoryStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- writes -------------------------------------------------------------------------------------

    def add(self, content: str, *, tags: Iterable[str] = (), type: str = DEFAULT_TYPE,
            metadata: dict | None = None, allow_duplicate: bool = False, **fields: Any) -> AddResult:
        """Store one memory. If the same content is already stored, return that one (duplicate=True)."""
        doc = {"content": content, "tags": list(tags), "type": type, "metadata": metadata or {}, **fields}
        return self.add_many([doc], allow_duplicate=allow_duplicate)[0]

    def add_many(self, docs: Iterable[dict], *, allow_duplicate: bool = False,
                 progress: Progress | None = None) -> list[AddResult]:
        """Store many memories, given as document dicts (DESIGN.md §3), embedding them in batches.

        Every document is parsed, and checked against the store, before any is written. Results follow
        the input's order (_write_vectors embeds them longest first).
        """
        now = utcnow()
        memories = [documents.from_dict(dict(doc), default_id=documents.new_id(), default_time=now) for doc in docs]
        results: list[AddResult | None] = [None] * len(memories)
        with self._mutex:
            fresh: list[int] = []
            stored_as: dict[str, int] = {}  # content hash -> the index stored for it in this call
            copies: dict[int, int] = {}  # index -> index of the same content stored in this call
            ids: set[str] = set()
            for i, m in enumerate(memories):
                if not allow_duplicate:
                    if m.content_hash in stored_as:
                        copies[i] = stored_as[m.content_hash]
                        continue
                    if existing := self._existing_with_content(m.content_hash):
                        results[i] = existing
                        continue
                if m.id in ids or self.catalog.get(m.id) is not None:
                    raise InvalidDocumentError(f"a memory with id {m.id!r} already exists; update it instead")
                ids.add(m.id)
                stored_as.setdefault(m.content_hash, i)
                fresh.append(i)
            for i, rel in zip(fresh, self._write_new([memories[i] for i in fresh], progress)):
                results[i] = AddResult(memories[i], rel, duplicate=False)
            for i, j in copies.items():
                results[i] = replace(results[j], duplicate=True)
        return results  # type: ignore[return-value]

    def _write_new(self, memories: list[Memory], progress: Progress | None) -> list[str]:
        """Files, catalog rows and vectors for memories checked to be new; returns their paths.

        Files and catalog rows come first, while the model already encodes. If the process dies before
        the vectors, reconcile finds those rows unsynced and embeds them.
        """
        rels: list[str] = []

        def write_files() -> None:
            for start in range(0, len(memories), BULK_BATCH):
                batch = memories[start:start + BULK_BATCH]
                batch_rels = [new_relpath(self.layout.memories, m.id, m.content, m.created_at) for m in batch]
                atomic_write_many([(self.layout.memories / rel, m.to_bytes()) for m, rel in zip(batch, batch_rels)])
                with self.catalog.transaction():
                    for m, rel in zip(batch, batch_rels):
                        self.catalog.put(m, rel, self._state(rel))
                rels.extend(batch_rels)

        self._write_vectors(memories, progress, meanwhile=write_files, phase="add")
        return rels

    def _existing_with_content(self, h: str) -> AddResult | None:
        mem_id = self.catalog.id_for_hash(h)
        if mem_id is None:
            return None
        entry = self.catalog.get(mem_id)
        return AddResult(entry.memory, entry.path, duplicate=True)

    def update(self, mem_id: str, *, content: str | None = None, tags: Iterable[str] | None = None,
               add_tags: Iterable[str] = (), remove_tags: Iterable[str] = (), type: str | None = None,
               metadata: dict | None = None) -> Memory:
        """Change a memory in place. `metadata` is merged into the existing metadata."""
        with self._mutex:
            entry = self._entry(mem_id)
            m = self._read(entry.path)
            new_tags = list(m.tags if tags is None else tags) + list(add_tags)
            removed = set(remove_tags)
            changes: dict[str, Any] = {
                "tags": normalize_tags(t for t in new_tags if t not in removed),
                "updated_at": utcnow(),
            }
            if content is not None:
                if not content.strip():
                    raise InvalidDocumentError("'content' is empty")
                changes["content"] = content
            if type is not None:
                changes["type"] = type
            if metadata:
                changes["metadata"] = {**m.metadata, **metadata}
            new = m.replace(**changes)
            atomic_write(self.layout.memories / entry.path, new.to_bytes())
            with self.catalog.transaction():
                self.catalog.put(new, entry.path, self._state(entry.path))
            self._write_vectors([new])
            return new

    def remove(self, mem_id: str) -> Memory:
        """Delete the memory's file and its index entries. Returns what was removed."""
        with self._mutex:
            entry = self._entry(mem_id)
            path = self.layout.memories / entry.path
            path.unlink(missing_ok=True)
            fsync_dir(path.parent)
            with self.catalog.transaction():
                self.catalog.remove([mem_id])
            self.vectors.delete([mem_id])
            return entry.memory

    # -- reads --------------------------------------------------------------------------------------

    def get(self, mem_id: str) -> Memory:
        """The memory as its file says now, or its last good version while the file is invalid."""
        return self.record(mem_id).memory

    def record(self, mem_id: str) -> MemoryRecord:
        """The memory and its path; while its file is invalid, unreadable or gone, the last good version
        with a `warning` saying why (issue #14, finding 5: get gave 422 or 500 where search served it).

        A file that parses is read as it is now, so an edit the watcher has not indexed yet shows.
        """
        with self._mutex:
            entry = self._entry(mem_id)
        try:
            m = self._read(entry.path)
        except NotFoundError:
            # The file is the truth: gone means deleted (the watcher drops the row in a moment), not a
            # version to serve.
            raise NotFoundError(f"no memory with id {mem_id!r}: its file {entry.path} was deleted") from None
        except InvalidDocumentError as e:
            warning = f"{entry.path} is invalid ({e.reason}): it no longer reads; this is its last good version"
        except OSError as e:
            warning = f"{entry.path} is unreadable ({e.strerror or e}); this is its last good version"
        else:
            if m.id == mem_id:
                _refuse_expired(m)
                return MemoryRecord(m, entry.path)
            warning = f"{entry.path} now holds id {m.id!r}; this is the last version with id {mem_id!r}"
        _refuse_expired(entry.memory)
        return MemoryRecord(entry.memory, entry.path, warning)

    def path_of(self, mem_id: str) -> Path:
        return self.layout.memories / self._entry(mem_id).path

    def list(self, filters: Filters = Filters(), *, limit: int | None = None, offset: int = 0) -> list[Entry]:
        """Memories passing the filters, newest first."""
        with self._mutex:
            return self.catalog.list(filters, limit, offset)

    def search(self, query: str, *, k: int = 5, mode: Mode = "hybrid", filters: Filters = Filters(),
               min_score: float | None = None) -> list[Hit]:
        """The k best memories for `query`, best first; with `min_score`, only those scoring at least
        that. Filters apply before the cut in every mode. Never decides "no good match" on its own:
        `search_result` does."""
        return self.search_result(query, k=k, mode=mode, filters=filters,
                                  min_score=0.0 if min_score is None else min_score).hits

    def search_result(self, query: str, *, k: int = 5, mode: Mode = "hybrid", filters: Filters = Filters(),
                      min_score: float | None = None) -> SearchResult:
        """Search, and say so (`note`, no hits) when nothing is a good match, instead of listing the k
        least bad memories.

        With `min_score` None the cut is automatic (query.is_good_match): the best hit must be similar
        enough to the query or contain one of its names, identifiers or quoted phrases. With a
        `min_score` (0–1, compared with Hit.score) that is the cut; 0 lists everything found.
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        if mode not in MODES:
            raise ValueError(f"mode must be semantic, keyword or hybrid, not {mode!r}")
        with self._mutex:
            self._last_query = None
            plan = analyze(query)
            hits = self._ranked(plan, k, mode, filters)
        if not hits:
            if not self.catalog.count():
                return SearchResult([], "no memory is stored")
            if mode == "keyword":
                return SearchResult([], f"no memory contains any of: {', '.join(t.text for t in plan.terms) or query!r}")
            return SearchResult([], None if filters.empty else "no memory matches the filters")
        if min_score is not None:
            kept = [h for h in hits if h.score >= min_score]
            note = None if kept else f"no hit scores {min_score:g} or more (best: {hits[0].score:.2f})"
            return SearchResult(kept, note)
        if not is_good_match(hits[0], plan):
            return SearchResult([], no_match_note(query, hits[0]))
        return SearchResult(hits, None)

    def _ranked(self, plan: QueryPlan, k: int, mode: Mode, filters: Filters) -> list[Hit]:
        """Every figure for the k best, in the mode's order (docs/search.md)."""
        weights = self.catalog.term_weights(plan)
        lagging = mode == "hybrid" and self.vectors_lag
        if mode == "hybrid" and keyword_weight(plan) == 0 and not lagging:
            # A plain question is ranked by meaning alone (docs/search.md): no keyword round trip.
            # While some rows still wait for their vectors, those are found by keyword (below).
            mode = "semantic"
        if mode == "semantic":
            sims = dict(self._semantic(plan.text, k, filters))
            ranks = {i: {"semantic": r} for r, i in enumerate(sims, 1)}
        else:
            depth = k if mode == "keyword" else max(4 * k, 40)
            kw_ids = self.catalog.keyword(plan, filters, depth)
            ranks = {i: {"keyword": r} for r, i in enumerate(kw_ids, 1)}
            sims = {}
            if mode == "hybrid":
                sims = dict(self._semantic(plan.text, depth, filters))
                for r, i in enumerate(sims, 1):
                    ranks.setdefault(i, {})["semantic"] = r
                sims.update(self._similarities([i for i in kw_ids if i not in sims], plan.text))
        # Which terms a memory holds is read from its text. In hybrid mode, when the keyword index
        # returned fewer than `depth`, it returned every memory holding any term: the rest hold none.
        readable = set(kw_ids) if mode == "hybrid" and len(kw_ids) < depth else set(ranks)
        entries = self.catalog.get_many(list(readable))
        found = {i: matched(plan, e.memory.content) for i, e in entries.items()}
        scored = []
        for mem_id in ranks:
            if mem_id not in entries and mem_id in readable:
                continue  # removed from the catalog since the index answered
            terms = found.get(mem_id, ())
            cover = coverage(terms, weights)
            sim = sims.get(mem_id)
            if mode == "semantic":
                score = max(0.0, sim or 0.0)
            elif mode == "keyword":
                score = cover
            elif sim is None and lagging:
                score = cover  # no vector yet (issue #24, item 1): its keyword score stands in
            else:
                score = fused_score(sim, cover, plan.exact)
            scored.append(((-score, ranks[mem_id].get("keyword", 1 << 30), mem_id), score, sim, terms))
        scored.sort(key=lambda x: x[0])
        top = scored[:k]
        entries.update(self.catalog.get_many([o[2] for o, *_ in top if o[2] not in entries]))
        hits = []
        now = utcnow()
        for (_, _, mem_id), score, sim, found_terms in top:
            entry = entries.get(mem_id)
            if entry is None or _expired(entry.memory, now):  # gone at once; the sweep removes the file
                continue
            terms = tuple(t.text for t in found_terms)
            hits.append(Hit(entry.memory, round(score, 4), entry.path, ranks[mem_id],
                            None if sim is None else round(min(1.0, max(0.0, sim)), 4), terms, len(hits) + 1,
                            snippet(entry.memory.content, terms)))
        return hits

    def warm(self) -> None:
        """Load what the first search would otherwise wait for: the model, and the vectors exact
        search holds in memory. An owner runs this in the background once it serves (issue #12)."""
        self.embedder.embed(["warm-up"])
        with self._mutex:
            if self.vectors.count() <= EXACT_MAX:
                self.vectors.load()

    @property
    def vectors_outdated(self) -> bool:
        """The vector index was built with older, less exact HNSW parameters (vectors.HNSW)."""
        with self._mutex:
            return self.vectors.outdated

    def rebuild_vectors(self, progress: Progress | None = None) -> int:
        """Make the vector index again with today's parameters, from the embedding cache (content never
        embedded is embedded). The migration `memfs reindex` runs when `vectors_outdated`."""
        with self._mutex:
            self.vectors.reset()
            self.catalog.mark_unsynced(self.catalog.ids())
            return self._write_vectors(None, progress=progress)

    def _semantic(self, query: str, k: int, filters: Filters) -> list[tuple[str, float]]:
        if self.catalog.count() == 0:
            return []
        vector = self._query_vector(query)
        return self.vectors.query(vector, k, filters)

    def _query_vector(self, query: str) -> np.ndarray:
        # A hybrid search needs the query's vector twice (index, keyword-only candidates): embed once.
        cached = self._last_query
        if cached is not None and cached[0] == query:
            return cached[1]
        vector = self.embedder.embed_query(query)
        self._last_query = (query, vector)
        return vector

    def _similarities(self, ids: list[str], query: str) -> dict[str, float]:
        """Exact cosine similarity to the query for memories the vector index did not return (found by
        keyword only), from the embedding cache: no model call, no index call."""
        if not ids:
            return {}
        entries = self.catalog.get_many(ids)
        vectors = self.catalog.cached_vectors(self.embedder.model_id, (e.hash for e in entries.values()))
        q = self._query_vector(query)
        return {i: float(vectors[e.hash] @ q) for i, e in entries.items() if e.hash in vectors}

    def stats(self) -> dict:
        with self._mutex:
            db = self.catalog.db
            types = dict(db.execute("SELECT type, count(*) FROM docs GROUP BY type ORDER BY 2 DESC"))
            tags = db.execute("SELECT count(DISTINCT tag) FROM doc_tags").fetchone()[0]
            top_tags = dict(db.execute("SELECT tag, count(*) FROM doc_tags GROUP BY tag ORDER BY 2 DESC, 1 LIMIT 50"))
            content_bytes = db.execute("SELECT coalesce(sum(length(CAST(content AS BLOB))), 0) FROM docs").fetchone()[0]
            return {
                "root": str(self.layout.root),
                "memories": self.catalog.count(),
                "types": types,
                "distinct_tags": tags,
                "tags": top_tags,
                "content_bytes": content_bytes,
                "invalid_files": len(self.catalog.invalid()),
                "vectors": self.vectors.count(),
                "embedding_cache": self.catalog.cache_size(),
                "model": self.embedder.model_id,
                "last_reconcile": self.catalog.get_meta("last_reconcile"),
                "disk_bytes": {d.name: _du(d) for d in (self.layout.memories, self.layout.embeddings,
                                                         self.layout.indexes)},
                "added_per_day": dict(db.execute(
                    "SELECT date(created_ts, 'unixepoch'), count(*) FROM docs WHERE created_ts >= ?"
                    " GROUP BY 1 ORDER BY 1", (time.time() - ADDED_PER_DAY_DAYS * 86400,))),
            }

    def revision(self) -> str:
        """A value that changes whenever a memory is added, changed (by any client or by hand, once
        indexed) or removed: live views poll it instead of the memories. One indexed SQL pass."""
        with self._mutex:
            row = self.catalog.db.execute(
                "SELECT count(*), coalesce(max(updated_ts), 0), coalesce(sum(mtime_ns % 1000003), 0),"
                " coalesce(sum(ino % 1000003), 0), coalesce(sum(size), 0) FROM docs").fetchone()
        return "-".join(str(v) for v in row)

    # -- reconcile ----------------------------------------------------------------------------------

    def reconcile(self, *, paths: Iterable[str] | None = None, verify_vectors: bool = True,
                  progress: Progress | None = None, reread: Iterable[str] = (), embed: bool = True) -> ReconcileReport:
        """Bring catalog and vectors level with the files; re-embed only content never embedded before.

        Files whose size, mtime, inode and ctime match the catalog are not read. An unreadable or
        invalid file is reported and skipped; its last good version stays indexed (never "unreadable
        means deleted"), also when it is moved. With `verify_vectors`, Chroma's id set is checked
        against the catalog's. With `paths` (relative to memories/), only those paths are looked at:
        the watcher's way. `reread` paths are read whatever their state (`validate --fix`: a file
        whose content differs from the catalog's although its state matches).

        Files refused as duplicates of an id are read again once no file holds that id any more, in
        the same call and wherever they lie (issue #14, finding 1: `cp a b; rm a` lost the memory).
        A full reconcile also removes temp files older than this store's opening (finding 6).

        `embed=False` (the watcher's way, issue #24 item 1): files reach the catalog and the keyword
        index and stale vectors go, but nothing is encoded; the rows stay unsynced for `embed_pending`.
        """
        started = time.monotonic()
        # A watcher batch's files are read and parsed before the state lock is taken: searches need
        # that lock, and a burst of 1,000 dropped files took ~100 ms to read (issue #14, finding 4).
        # Under the lock, a file whose state still matches is not read again.
        early = self._read_ahead(set(paths) | set(reread)) if paths is not None else {}
        with self._mutex, _gc_paused():
            report = ReconcileReport()
            # What this call encoded; the embedder's own counter also counts other writers' work,
            # which runs while this one waits for the model without the lock.
            report.embedded = 0
            reread = set(reread)
            if paths is None:
                temps: list[tuple[str, float]] = []
                files = scan(self.layout.memories, temps)
                self._remove_stale_temps(temps)
                scope: set[str] | None = None
            else:
                scope = set(paths) | reread
                files = stat_paths(self.layout.memories, scope)
            if reread - files.keys():
                files.update(stat_paths(self.layout.memories, reread - files.keys()))
            report.scanned = len(files)
            with self.catalog.transaction():
                stale = self._reconcile_files(files, scope, reread, report, progress, early)
                # Refused duplicates whose id lost its file: read them again (bounded: each round
                # either gives such a file its id or records the id's new holder).
                for _ in range(3):
                    orphans = set(self.catalog.orphaned_duplicates())
                    if not orphans:
                        break
                    more = stat_paths(self.layout.memories, orphans)
                    files.update(more)
                    stale += self._reconcile_files(more, orphans, orphans, report, progress)
            self.vectors.delete(stale)
            if embed:
                report.vectors_written += self._write_vectors(None, progress=progress, report=report)
            if verify_vectors:
                self._verify_vectors(report, progress, embed)
            self.vectors_lag = self.catalog.has_unsynced()
            report.invalid = [InvalidFile(i.path, i.reason) for i in self.catalog.invalid()]
            report.seconds = time.monotonic() - started
            if paths is None:  # a full reconcile; the watcher's path batches are not one
                self.catalog.set_meta("last_reconcile", documents.format_time(utcnow()))
                invalid_now = frozenset((i.path, i.reason) for i in report.invalid)
                # Said once per change, not at every periodic reconcile (issue #24, item 5).
                if report.invalid and invalid_now != self._invalid_logged:
                    log.warning("%d invalid memory file(s), e.g. %s: %s", len(report.invalid),
                                report.invalid[0].path, report.invalid[0].reason)
                self._invalid_logged = invalid_now
            return report

    def _remove_stale_temps(self, temps: list[tuple[str, float]]) -> None:
        removed = remove_stale_temps(self.layout.memories, temps, self._opened_at)
        if removed:
            log.warning("removed %d temp file(s) left by an interrupted write, e.g. %s", len(removed), removed[0])

    def _read_ahead(self, rels: set[str]) -> dict[str, tuple[FileState, Memory | Exception]]:
        """Parse the files among `rels` that differ from their catalog rows, without the state lock:
        path -> (state before the read, memory or the error reading it raised)."""
        files = stat_paths(self.layout.memories, rels)
        indexed = self.catalog.file_index(files)  # the catalog's own lock suffices for a read
        early: dict[str, tuple[FileState, Memory | Exception]] = {}
        for rel, st in files.items():
            if rel in indexed and indexed[rel][1] == st:
                continue
            try:
                early[rel] = (st, self._read(rel))
            except (InvalidDocumentError, NotFoundError, OSError) as e:
                early[rel] = (st, e)
        return early

    def _reconcile_files(self, files: dict[str, FileState], scope: set[str] | None, reread: set[str],
                         report: ReconcileReport, progress: Progress | None,
                         early: dict[str, tuple[FileState, Memory | Exception]] | None = None) -> list[str]:
        """One pass over `files` (all of them, or those under `scope`). Returns ids whose vectors go."""
        in_scope: Callable[[str], bool] = (lambda p: True) if scope is None else scope.__contains__  # noqa: E731
        # The watcher's batches look up only their own paths: a full index read per batch would
        # cost ~0.3 s at 20k memories.
        indexed = self.catalog.file_index(scope)
        known_invalid = {i.path: i for i in self.catalog.invalid() if in_scope(i.path)}
        self.catalog.forget_invalid([p for p in known_invalid if p not in files])
        to_read = [p for p, st in files.items()
                   if p in reread
                   or (p not in indexed or indexed[p][1] != st) and (
                       p not in known_invalid or known_invalid[p].state != st
                       # Trigger: chmod 000, then chmod 644. Why: a file once unreadable must be
                       # tried again, whatever changed. Outcome: it is indexed once readable (#14, 2).
                       or known_invalid[p].reason.startswith("unreadable"))]
        gone_paths = {p for p in indexed if p not in files}
        present = {p for p in indexed if p in files or not in_scope(p)}
        return self._apply_files(sorted(to_read), files, indexed, present, gone_paths, known_invalid,
                                 report, progress, early or {})

    def _apply_files(self, to_read: list[str], files: dict[str, FileState],
                     indexed: dict[str, tuple[str, FileState]], present: set[str], gone_paths: set[str],
                     known_invalid: dict, report: ReconcileReport, progress: Progress | None,
                     early: dict[str, tuple[FileState, Memory | Exception]]) -> list[str]:
        """Index what changed on disk. Returns the ids whose vectors must go."""
        parsed: dict[str, Memory] = {}
        failed: list[str] = []
        for n, rel in enumerate(to_read, 1):
            m = self._parse_file(rel, files[rel], early.get(rel))
            if isinstance(m, Memory):
                parsed[rel] = m
            elif m is not None:
                failed.append(rel)
            if progress and (n % 500 == 0 or n == len(to_read)):
                progress("read", n, len(to_read))

        def owner(mem_id: str) -> str | None:
            """The file that keeps this id: one not re-read (or found invalid: it keeps serving its
            last good version), still on disk (or outside the paths looked at)."""
            path = self.catalog.path_for_id(mem_id)
            if path is None or path in parsed or (path in indexed and path not in present):
                return None
            if self.catalog.invalid_at(path) is not None:
                return None  # a last good version gives way to a valid file that says the same id
            return path

        claimed: dict[str, str] = {}
        for rel, m in parsed.items():
            other = claimed.get(m.id) or owner(m.id)
            if other is not None:
                self.catalog.set_invalid(rel, files[rel], f"duplicate id {m.id!r}: also used by {other}; "
                                                          "give one of them another 'id'", dup_id=m.id)
            else:
                claimed[m.id] = rel
        gone = {indexed[p][0] for p in gone_paths}
        # A file that now carries another id (e.g. `mv a.json b.json` over b) ends b's old id there.
        gone |= {indexed[rel][0] for rel, m in parsed.items() if rel in indexed and indexed[rel][0] != m.id}
        # Trigger: a folder holding an invalid file is renamed. Why: its row's old path is gone and
        # the file at the new path does not parse. Outcome: the last good version follows the file
        # (same inode) to its new path instead of being dropped (issue #14, finding 5).
        followed: set[str] = set()
        for rel in failed:
            if rel in indexed:
                continue
            for old in gone_paths:
                mem_id, old_state = indexed[old]
                was = known_invalid.get(old)
                if mem_id in claimed or mem_id in followed:
                    continue
                if files[rel].ino == old_state.ino or (was is not None and files[rel].same_file(was.state)):
                    self.catalog.move_row(mem_id, rel)
                    followed.add(mem_id)
                    report.moved += 1
                    break
        gone -= followed
        # A removed file whose id reappears at another path was moved, not removed.
        removed = sorted(gone - claimed.keys())
        self.catalog.remove(removed)
        report.removed += len(removed)
        # Moved rows let go of their old paths first, so two files swapping names cannot collide.
        path_of = {i: self.catalog.path_for_id(i) for i in claimed}
        self.catalog.release_paths([i for i, rel in claimed.items() if path_of[i] not in (None, rel)])
        for mem_id, rel in claimed.items():
            m = parsed[rel]
            before = self.catalog.get(mem_id)
            if before is not None and before.memory == m:
                self.catalog.set_state(mem_id, rel, files[rel])
                report.moved += path_of.get(mem_id) != rel
            else:
                removed += self.catalog.put(m, rel, files[rel])
                if before is None:
                    report.added += 1
                else:
                    report.updated += 1
        return removed

    def _parse_file(self, rel: str, state: FileState,
                    early: tuple[FileState, Memory | Exception] | None = None) -> Memory | str | None:
        """The file's memory; or the reason it is invalid, recorded; or None if it vanished meanwhile.
        `early` is what _read_ahead found, used if the file has not changed since."""
        try:
            if early is None or early[0] != state:
                return self._read(rel)
            if isinstance(early[1], Exception):
                raise early[1]
            return early[1]
        except InvalidDocumentError as e:
            reason = e.reason
        except NotFoundError:
            return None  # removed between the stat and the read: the next event or reconcile sees it
        except OSError as e:
            reason = f"unreadable: {e.strerror or e}"
        self.catalog.set_invalid(rel, state, reason)
        return reason

    def _verify_vectors(self, report: ReconcileReport, progress: Progress | None, embed: bool = True) -> None:
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
                report.vectors_written += self._write_vectors(None, progress=progress, report=report)

    def pending_vectors(self) -> list[tuple[str, str, bool]]:
        """(id, path, new) of every row whose vector is missing or out of date; `new`: it never had one."""
        with self._mutex:
            return self.catalog.unsynced_paths()

    def embed_pending(self, ids: list[str], *, round_size: int = BULK_BATCH,
                      keep_going: Callable[[], bool] | None = None) -> ReconcileReport:
        """Encode and index the vectors these rows lack (those still unsynced when the lock is taken),
        in rounds of `round_size`, each encoded while the one before is written. The watcher's embedding
        worker calls this, most urgent first; `keep_going()`, asked between rounds, ends the call early
        (rows not reached stay unsynced for the next)."""
        report = ReconcileReport()
        report.embedded = 0
        started = time.monotonic()
        with self._mutex:
            entries = self.catalog.unsynced_among(ids)
            if entries:
                report.vectors_written = self._write_vectors([e.memory for e in entries], report=report,
                                                             round_size=round_size, keep_going=keep_going)
            self.vectors_lag = self.catalog.has_unsynced()
        report.seconds = time.monotonic() - started
        return report

    # -- vectors ------------------------------------------------------------------------------------

    def _write_vectors(self, memories: Sequence[Memory] | None, progress: Progress | None = None, *,
                       meanwhile: Callable[[], None] | None = None, phase: str = "embed",
                       report: ReconcileReport | None = None, round_size: int = BULK_BATCH,
                       keep_going: Callable[[], bool] | None = None) -> int:
        """Give Chroma the vectors it lacks: the given memories, or (None) every unsynced catalog row.

        Vectors come from the cache by content hash. Content never seen is encoded in rounds, longest
        first (the model pads each batch to its longest text), on a worker thread that runs ahead of
        this one, so `meanwhile()` (add_many's file writes, which mostly wait on the disk) and each
        round's Chroma upsert overlap the model instead of adding to it.

        The caller holds the state lock; it is let go while this thread waits for the model (issue
        #14, finding 4), so what is upserted is read again from the catalog once it is taken back:
        a row changed meanwhile is never marked synced with an old vector.
        """
        if memories is None:
            memories = [e.memory for e in self.catalog.unsynced()]
        memories = sorted(memories, key=lambda m: len(m.content), reverse=True)
        rounds = [memories[i:i + round_size] for i in range(0, len(memories), round_size)]
        model = self.embedder.model_id
        uncached = self.catalog.uncached(model, (m.content_hash for m in memories))
        todo: list[dict[str, str]] = []  # per round: content hash -> text to encode
        for batch in rounds:
            todo.append({m.content_hash: m.content for m in batch if m.content_hash in uncached})
            uncached -= todo[-1].keys()  # a later round with the same content finds it cached by then
        pool = ThreadPoolExecutor(1, thread_name_prefix="memfs-embed", initializer=_yield_to_requests) \
            if any(todo) else None
        def encode(n: int, texts: dict[str, str]) -> int:
            # A round not yet begun is not begun once told to stop: the model is free for what came.
            return 0 if n and keep_going is not None and not keep_going() else self._encode(texts)

        encoded = [pool.submit(encode, n, texts) if pool and texts else None for n, texts in enumerate(todo)]
        try:
            if meanwhile:
                meanwhile()
            written = 0
            for n, (batch, texts, future) in enumerate(zip(rounds, todo, encoded)):
                if n and keep_going is not None and not keep_going():
                    break  # keep_going stays False once it is: the encodes after this one were skipped
                if future is not None:
                    with self._mutex.released():
                        encoded_now = future.result()
                    if report is not None:
                        report.embedded += encoded_now
                written += self._sync_vectors([m.id for m in batch], report)
                if progress:
                    progress(phase, written, len(memories))
            return written
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)  # after an error: encode nothing more

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

    def _sync_vectors(self, ids: list[str], report: ReconcileReport | None = None) -> int:
        """Upsert the catalog's current rows for these ids that Chroma lacks; encode what is uncached."""
        model = self.embedder.model_id
        written = 0
        for _ in range(5):  # each round runs after a writer changed rows while we waited: rare
            entries = self.catalog.unsynced_among(ids)
            if not entries:
                break
            vectors = self.catalog.cached_vectors(model, (e.hash for e in entries))
            missing = {e.hash: e.memory.content for e in entries if e.hash not in vectors}
            if missing:
                with self._mutex.released():
                    encoded_now = self._encode(missing)
                if report is not None:
                    report.embedded += encoded_now
                continue
            for start in range(0, len(entries), SYNC_ROUND):
                if start:
                    with self._mutex.released():
                        time.sleep(0)  # let a waiting search in between rounds
                # Another writer may have got in while we stepped out: read these rows again.
                part = self.catalog.unsynced_among([e.memory.id for e in entries[start:start + SYNC_ROUND]])
                part = [e for e in part if e.hash in vectors]
                if part:
                    self.vectors.upsert([e.memory for e in part], np.stack([vectors[e.hash] for e in part]))
                    self.catalog.mark_synced([e.memory.id for e in part])
                    written += len(part)
        return written

    # -- key/value and expiry (issue #13; the logic is in kv.py) ----------------------------------

    def kv_set(self, key: str, value: Any, **options: Any):
        """Store `value` (any JSON value) under (namespace, key); see kv.kv_set."""
        from . import kv

        return kv.kv_set(self, key, value, **options)

    def kv_get(self, key: str, **options: Any):
        from . import kv

        return kv.kv_get(self, key, **options)

    def kv_list(self, **options: Any):
        from . import kv

        return kv.kv_list(self, **options)

    def kv_rm(self, key: str, **options: Any):
        from . import kv

        return kv.kv_rm(self, key, **options)

    def sweep_expired(self, now: datetime | None = None) -> list[Memory]:
        """Remove the files of expired memories, logging each; returns what was removed."""
        from . import kv

        return kv.sweep_expired(self, now)

    def _rewrite(self, mem_id: str, **changes: Any) -> Memory:
        """Replace fields of a stored memory (file, catalog row, vector), keeping its id and path."""
        with self._mutex:
            entry = self._entry(mem_id)
            new = self._read(entry.path).replace(**changes)
            atomic_write(self.layout.memories / entry.path, new.to_bytes())
            with self.catalog.transaction():
                self.catalog.put(new, entry.path, self._state(entry.path))
            self._write_vectors([new])
            return new

    # -- helpers ------------------------------------------------------------------------------------

    def _entry(self, mem_id: str) -> Entry:
        entry = self.catalog.get(mem_id)
        if entry is None:
            raise NotFoundError(f"no memory with id {mem_id!r}; `memfs list` shows the ids")
        return entry

    def _read(self, rel: str) -> Memory:
        path = self.layout.memories / rel
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                # Refused before reading: a 5 GB file dropped in must not be read into memory.
                documents.check_file_size(st.st_size)
                data = f.read(MAX_FILE_BYTES + 1)
            mtime = datetime.fromtimestamp(st.st_mtime, timezone.utc)
        except FileNotFoundError:
            raise NotFoundError(f"{path} is gone; run `memfs reindex` to bring the index up to date") from None
        except InvalidDocumentError as e:
            e.path = str(path)
            e.args = (f"{path}: {e.reason}",)
            raise
        try:
            return documents.from_bytes(data, default_id=default_id_for(rel), default_time=mtime)
        except InvalidDocumentError as e:
            e.path = str(path)
            e.args = (f"{path}: {e.reason}",)
            raise

    def _state(self, rel: str) -> FileState:
        return FileState.of((self.layout.memories / rel).stat())


def _expired(m: Memory, now: datetime) -> bool:
    return m.expires_at is not None and m.expires_at <= now


def _refuse_expired(m: Memory) -> None:
    if _expired(m, utcnow()):
        raise NotFoundError(f"memory {m.id!r} expired at {documents.format_time(m.expires_at)}")


@contextlib.contextmanager
def _gc_paused():
    """Reconcile builds ~5 small objects per file; in a process that also holds the model and Chroma,
    each full collection those allocations trigger walks that whole heap (measured: a 20k-file
    reconcile took 0.5–0.8 s alone, 1.3 s in a process with a big heap). Nothing here makes cycles."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _du(directory: Path) -> int:
    total = 0
    for p in directory.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass
    return total
