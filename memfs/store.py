"""MemoryStore: the Python API over one root. Files are the truth; catalog and vectors follow them.

Every write goes file first (atomically), then catalog, then vectors. A crash between the steps leaves
an index that lags the files, and `reconcile` (run at every start) brings it level again.

This module is the facade: opening and closing, writes, reads and stats. It delegates the vector
writes to memfs.vector_writes, searches to memfs.ranking, and reconcile to memfs.reconcile.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from . import documents, kv
from .catalog import Catalog, Entry
from .documents import DEFAULT_TYPE, Memory, normalize_tags, utcnow
from .embedder import Embedder, MiniLMEmbedder
from .errors import InvalidDocumentError, NotFoundError, StoreBusyError
from .filestore import FileState, Layout, atomic_write, atomic_write_many, default_id_for, fsync_dir, new_relpath
from .limits import MAX_FILE_BYTES
from .lock import StoreLock, StoreMutex
from .ops import Progress
from .query import Filters, Mode
from .ranking import Searcher
from .reconcile import Reconciler
from .results import AddResult, Hit, MemoryRecord, ReconcileReport, SearchResult
from .vector_writes import BULK_BATCH, VectorWriter
from .vectors import EXACT_MAX, VectorIndex

if TYPE_CHECKING:
    import numpy as np

ADDED_PER_DAY_DAYS = 30  # how far back stats count memories added per day


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
        self.writer = VectorWriter(catalog, vectors, embedder, self._mutex)
        self.searcher = Searcher(catalog, vectors, embedder, self._mutex, self.writer)
        self.reconciler = Reconciler(layout.memories, catalog, vectors, self._mutex, self.writer, self.read_file)

    @property
    def mutex(self) -> StoreMutex:
        """The state lock, for a caller that must keep writes out while it works (memfs.sync)."""
        return self._mutex

    def read_file(self, rel: str) -> Memory:
        """The memory in a file under memories/ as it is now (NotFoundError, InvalidDocumentError)."""
        path = self.layout.memories / rel
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                # Refused before reading: a 5 GB file dropped in must not be read into memory.
                documents.check_file_size(st.st_size)
                data = f.read(MAX_FILE_BYTES + 1)
            mtime = datetime.fromtimestamp(st.st_mtime, timezone.utc)
            return documents.from_bytes(data, default_id=default_id_for(rel), default_time=mtime)
        except FileNotFoundError:
            raise NotFoundError(f"{path} is gone; run `memfs reindex` to bring the index up to date") from None
        except InvalidDocumentError as e:  # too big, or not a memory document: named by its path
            e.path = str(path)
            e.args = (f"{path}: {e.reason}",)
            raise

    # -- lifecycle ----------------------------------------------------------------------------------

    @classmethod
    def init(cls, root: Layout | Path | str) -> Layout:
        """Create the directory layout (idempotent)."""
        layout = Layout.of(root)
        layout.create()
        return layout

    @classmethod
    def open(cls, root: Layout | Path | str, *, create: bool = False, embedder: Embedder | None = None,
             lock_timeout: float = 0.0, url: str | None = None,
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
        return cls(layout, catalog, VectorIndex(layout.embeddings), embedder or MiniLMEmbedder(),
                   lock if owned else None)

    def close(self) -> None:
        try:
            self.writer.close()  # deferred upserts written first (it takes the state lock itself)
        except Exception:  # they stay unsynced in the catalog: the next open's reconcile writes them
            logging.getLogger("memfs").exception("writing the deferred vectors at close failed")
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
        the input's order (VectorWriter.write embeds them longest first).
        """
        now = utcnow()
        memories = [documents.from_dict(dict(doc), default_id=documents.new_id(), default_time=now) for doc in docs]
        return self.add_memories(memories, allow_duplicate=allow_duplicate, progress=progress)

    def add_memories(self, memories: list[Memory], *, allow_duplicate: bool = False,
                     progress: Progress | None = None) -> list[AddResult]:
        """add_many for memories already parsed from their documents (documents.from_dict): an import
        checks each record as it plans, and does not parse it again to write it."""
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

        self.writer.write(memories, progress, meanwhile=write_files, phase="add", may_defer=True)
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
            entry = self.entry(mem_id)
            m = self.read_file(entry.path)
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
            self._write_memory(new, entry.path)
            return new

    def rewrite(self, mem_id: str, **changes: Any) -> Memory:
        """Replace fields of a stored memory (file, catalog row, vector), keeping its id and path."""
        with self._mutex:
            entry = self.entry(mem_id)
            new = self.read_file(entry.path).replace(**changes)
            self._write_memory(new, entry.path)
            return new

    def _write_memory(self, new: Memory, rel: str) -> None:
        """Replace the memory in the file at `rel`, then its catalog row, then its vector."""
        atomic_write(self.layout.memories / rel, new.to_bytes())
        with self.catalog.transaction():
            self.catalog.put(new, rel, self._state(rel))
        self.writer.write([new], may_defer=True)

    def remove(self, mem_id: str) -> Memory:
        """Delete the memory's file and its index entries. Returns what was removed."""
        with self._mutex:
            entry = self.entry(mem_id)
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
            entry = self.entry(mem_id)
        try:
            m = self.read_file(entry.path)
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
        return self.layout.memories / self.entry(mem_id).path

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
        return self.searcher.search_result(query, k, mode, filters, min_score)

    def warm(self) -> None:
        """Load what the first search would otherwise wait for: the model, and the vectors exact
        search holds in memory. An owner runs this in the background once it serves (issue #12).
        The real model is loaded and run once without counting a text as embedded (health's
        `embedded` counts memories' and queries' texts)."""
        load = getattr(self.embedder, "load", None)  # plumbing tests' fake embedders have none
        if load is not None:
            load()
        else:
            self.embedder.embed(["warm-up"])
        with self._mutex:
            if self.vectors.count() <= EXACT_MAX:
                self.vectors.load()

    def vector_count(self) -> int:
        """Vectors in Chroma, once the upserts an owner deferred are written (so it matches what
        searches find)."""
        with self._mutex:
            self.writer.flush_soon()
            return self.vectors.count()

    @property
    def vectors_outdated(self) -> bool:
        """The vector index was built with older, less exact HNSW parameters (vectors.HNSW)."""
        with self._mutex:
            return self.vectors.outdated

    def rebuild_vectors(self, progress: Progress | None = None) -> int:
        """Make the vector index again with today's parameters, from the vectors it held (what it
        lacked is embedded). The migration `memfs reindex` runs when `vectors_outdated`."""
        return self.writer.rebuild(progress)

    def vectors_for(self, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        """Content hash -> the vector kept for that content, embedding nothing (a hash with no
        vector kept is left out): what exports and sync pushes carry."""
        return self.writer.known_vectors(hashes)

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
                "vectors": self.vector_count(),
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

    # -- reconcile and vectors (memfs.reconcile, memfs.vector_writes) -------------------------------

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
        return self.reconciler.run(paths=paths, verify_vectors=verify_vectors, progress=progress,
                                   reread=reread, embed=embed)

    def pending_vectors(self) -> list[tuple[str, str, bool]]:
        """(id, path, new) of every row whose vector is missing or out of date; `new`: it never had one.
        A row whose vector is searchable and only its Chroma upsert deferred (VectorWriter.defer) is not
        listed."""
        return self.writer.pending()

    def embed_pending(self, ids: list[str], *, round_size: int = BULK_BATCH,
                      keep_going: Callable[[], bool] | None = None) -> ReconcileReport:
        """Encode and index the vectors these rows lack (those still unsynced when the lock is taken),
        in rounds of `round_size`, each encoded while the one before is written. The watcher's embedding
        worker calls this, most urgent first; `keep_going()`, asked between rounds, ends the call early
        (rows not reached stay unsynced for the next)."""
        return self.writer.embed_pending(ids, round_size=round_size, keep_going=keep_going)

    # -- key/value and expiry (issue #13; the logic is in kv.py) ----------------------------------

    def kv_set(self, key: str, value: Any, **options: Any):
        """Store `value` (any JSON value) under (namespace, key); see kv.kv_set."""
        return kv.kv_set(self, key, value, **options)

    def kv_get(self, key: str, **options: Any):
        return kv.kv_get(self, key, **options)

    def kv_list(self, **options: Any):
        return kv.kv_list(self, **options)

    def kv_rm(self, key: str, **options: Any):
        return kv.kv_rm(self, key, **options)

    def sweep_expired(self, now: datetime | None = None) -> list[Memory]:
        """Remove the files of expired memories, logging each; returns what was removed."""
        return kv.sweep_expired(self, now)

    # -- helpers ------------------------------------------------------------------------------------

    def entry(self, mem_id: str) -> Entry:
        """The memory's catalog row (NotFoundError if none)."""
        entry = self.catalog.get(mem_id)
        if entry is None:
            raise NotFoundError(f"no memory with id {mem_id!r}; `memfs list` shows the ids")
        return entry

    def _state(self, rel: str) -> FileState:
        return FileState.of((self.layout.memories / rel).stat())


def _refuse_expired(m: Memory) -> None:
    if kv.expired(m, utcnow()):
        raise NotFoundError(f"memory {m.id!r} expired at {documents.format_time(m.expires_at)}")


def _du(directory: Path) -> int:
    total = 0
    for p in directory.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            pass
    return total
