"""MemoryStore: the Python API over one root. Files are the truth; catalog and vectors follow them.

Every write goes file first (atomically), then catalog, then vectors. A crash between the steps leaves
an index that lags the files, and `reconcile` (run at every start) brings it level again.
"""

from __future__ import annotations

import contextlib
import gc
import logging
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
from .errors import InvalidDocumentError, NotFoundError, StoreNotInitializedError
from .filestore import FileState, Layout, atomic_write, atomic_write_many, default_id_for, fsync_dir, new_relpath, scan, stat_paths
from .lock import StoreLock
from .query import Filters, Hit, Mode, reciprocal_rank_fusion
from .results import AddResult, InvalidFile, ReconcileReport
from .vectors import VectorIndex

log = logging.getLogger("memfs")

# progress(phase, done, total): reconcile and bulk add report through this; the CLI draws a bar.
Progress = Callable[[str, int, int], None]

# How many documents go through one embed + index round in bulk work.
BULK_BATCH = 256


class MemoryStore:
    """Open with `MemoryStore.open(root)`; use as a context manager or call `close()`."""

    def __init__(self, layout: Layout, catalog: Catalog, vectors: VectorIndex, embedder: Embedder,
                 lock: StoreLock | None):
        self.layout = layout
        self.catalog = catalog
        self.vectors = vectors
        self.embedder = embedder
        self.lock = lock
        self._mutex = threading.RLock()

    # -- lifecycle ----------------------------------------------------------------------------------

    @classmethod
    def init(cls, root: Path | str) -> Layout:
        """Create the directory layout (idempotent)."""
        layout = Layout(Path(root))
        layout.create()
        return layout

    @classmethod
    def open(cls, root: Path | str, *, create: bool = False, embedder: Embedder | None = None,
             chroma_url: str | None = None, lock_timeout: float = 0.0, url: str | None = None,
             lock: StoreLock | None = None) -> "MemoryStore":
        """Open the store at `root`, taking its lock (StoreBusyError if another process holds it).

        Pass `lock` when the caller already holds it (backup, restore): the store then uses it and
        leaves releasing it to the caller.
        """
        layout = Layout(Path(root))
        if create:
            layout.create()
        elif not layout.memories.is_dir():
            raise StoreNotInitializedError(
                f"no memfs store at {layout.root} (missing {layout.memories}); run `memfs init` first "
                "or point --root / MEMFS_ROOT at an existing store")
        owned = lock is None
        if owned:
            lock = StoreLock(layout.lock_file, url=url).acquire(lock_timeout)
        try:
            from .backup import finish_interrupted_restore

            for note in finish_interrupted_restore(layout):
                log.warning(note)
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
        """The memory as its file says now."""
        with self._mutex:
            m = self._read(self._entry(mem_id).path)
            if m.expires_at is not None and m.expires_at <= utcnow():  # gone at once; the sweep removes it
                raise NotFoundError(f"memory {mem_id!r} expired at {documents.format_time(m.expires_at)}")
            return m

    def path_of(self, mem_id: str) -> Path:
        return self.layout.memories / self._entry(mem_id).path

    def list(self, filters: Filters = Filters(), *, limit: int | None = None, offset: int = 0) -> list[Entry]:
        """Memories passing the filters, newest first."""
        with self._mutex:
            return self.catalog.list(filters, limit, offset)

    def search(self, query: str, *, k: int = 5, mode: Mode = "hybrid", filters: Filters = Filters()) -> list[Hit]:
        """The k best memories for `query`. Filters apply before the cut in every mode."""
        if k < 1:
            raise ValueError("k must be at least 1")
        with self._mutex:
            if mode == "semantic":
                ranked = [(i, s, {"semantic": r}) for r, (i, s) in enumerate(self._semantic(query, k, filters), 1)]
            elif mode == "keyword":
                ranked = [(i, s, {"keyword": r}) for r, (i, s) in enumerate(self._keyword(query, k, filters), 1)]
            elif mode == "hybrid":
                depth = max(4 * k, 40)
                ranked = reciprocal_rank_fusion({
                    "semantic": [i for i, _ in self._semantic(query, depth, filters)],
                    "keyword": [i for i, _ in self._keyword(query, depth, filters)],
                })[:k]
            else:
                raise ValueError(f"mode must be semantic, keyword or hybrid, not {mode!r}")
            entries = self.catalog.get_many([i for i, _, _ in ranked])
            now = utcnow()
            return [Hit(entries[i].memory, score, entries[i].path, ranks)
                    for i, score, ranks in ranked if i in entries and not _expired(entries[i].memory, now)]

    def _semantic(self, query: str, k: int, filters: Filters) -> list[tuple[str, float]]:
        if self.catalog.count() == 0:
            return []
        vector = self.embedder.embed([query])[0]
        return self.vectors.query(vector, k, filters)

    def _keyword(self, query: str, k: int, filters: Filters) -> list[tuple[str, float]]:
        # BM25 scores are not comparable across queries; a rank-based score keeps the output honest.
        return [(i, 1.0 / r) for r, i in enumerate(self.catalog.keyword(query, filters, k), 1)]

    def stats(self) -> dict:
        with self._mutex:
            db = self.catalog.db
            types = dict(db.execute("SELECT type, count(*) FROM docs GROUP BY type ORDER BY 2 DESC"))
            tags = db.execute("SELECT count(DISTINCT tag) FROM doc_tags").fetchone()[0]
            content_bytes = db.execute("SELECT coalesce(sum(length(CAST(content AS BLOB))), 0) FROM docs").fetchone()[0]
            return {
                "root": str(self.layout.root),
                "memories": self.catalog.count(),
                "types": types,
                "distinct_tags": tags,
                "content_bytes": content_bytes,
                "invalid_files": len(self.catalog.invalid()),
                "vectors": self.vectors.count(),
                "embedding_cache": self.catalog.cache_size(),
                "model": self.embedder.model_id,
                "last_reconcile": self.catalog.get_meta("last_reconcile"),
                "disk_bytes": {d.name: _du(d) for d in (self.layout.memories, self.layout.embeddings,
                                                         self.layout.indexes)},
            }

    # -- reconcile ----------------------------------------------------------------------------------

    def reconcile(self, *, paths: Iterable[str] | None = None, verify_vectors: bool = True,
                  progress: Progress | None = None) -> ReconcileReport:
        """Bring catalog and vectors level with the files; re-embed only content never embedded before.

        Files whose size, mtime and inode match the catalog are not read. An unreadable or invalid
        file is reported and skipped; its last good version stays indexed (never "unreadable means
        deleted"). With `verify_vectors`, Chroma's id set is checked against the catalog's.
        With `paths` (relative to memories/), only those paths are looked at: the watcher's way.
        """
        started = time.monotonic()
        with self._mutex, _gc_paused():
            report = ReconcileReport()
            embedded_before = self.embedder.embedded
            if paths is None:
                files = scan(self.layout.memories)
                in_scope: Callable[[str], bool] = lambda p: True  # noqa: E731
            else:
                scope = set(paths)
                files = stat_paths(self.layout.memories, scope)
                in_scope = scope.__contains__
            report.scanned = len(files)
            # The watcher's batches look up only their own paths: a full index read per batch would
            # cost ~0.3 s at 20k memories.
            indexed = self.catalog.file_index(None if paths is None else scope)
            known_invalid = {i.path: i.state for i in self.catalog.invalid()}
            self.catalog.forget_invalid([p for p in known_invalid if in_scope(p) and p not in files])
            to_read = [p for p, st in files.items()
                       if (p not in indexed or indexed[p][1] != st) and known_invalid.get(p) != st]
            gone = {indexed[p][0] for p in indexed if in_scope(p) and p not in files}
            present = {p for p in indexed if p in files or not in_scope(p)}
            with self.catalog.transaction():
                stale = self._apply_files(sorted(to_read), files, indexed, present, gone, report, progress)
            self.vectors.delete(stale)
            report.vectors_written += self._write_vectors(None, progress=progress)
            if verify_vectors:
                self._verify_vectors(report, progress)
            report.invalid = [InvalidFile(i.path, i.reason) for i in self.catalog.invalid()]
            report.embedded = self.embedder.embedded - embedded_before
            report.seconds = time.monotonic() - started
            if paths is None:  # a full reconcile; the watcher's path batches are not one
                self.catalog.set_meta("last_reconcile", documents.format_time(utcnow()))
                if report.invalid:
                    log.warning("%d invalid memory file(s), e.g. %s: %s", len(report.invalid),
                                report.invalid[0].path, report.invalid[0].reason)
            return report

    def _apply_files(self, to_read: list[str], files: dict[str, FileState],
                     indexed: dict[str, tuple[str, FileState]], present: set[str], gone: set[str],
                     report: ReconcileReport, progress: Progress | None) -> list[str]:
        """Index what changed on disk. Returns the ids whose vectors must go."""
        parsed: dict[str, Memory] = {}
        for n, rel in enumerate(to_read, 1):
            m = self._parse_file(rel, files[rel])
            if m is not None:
                parsed[rel] = m
            if progress and (n % 500 == 0 or n == len(to_read)):
                progress("read", n, len(to_read))
        def owner(mem_id: str) -> str | None:
            """The file that keeps this id: one not re-read (or found invalid: it keeps serving its
            last good version), still on disk (or outside the paths looked at)."""
            path = self.catalog.path_for_id(mem_id)
            if path is None or path in parsed or (path in indexed and path not in present):
                return None
            return path

        claimed: dict[str, str] = {}
        for rel, m in parsed.items():
            other = claimed.get(m.id) or owner(m.id)
            if other is not None:
                self.catalog.set_invalid(rel, files[rel], f"duplicate id {m.id!r}: also used by {other}; "
                                                          "give one of them another 'id'")
            else:
                claimed[m.id] = rel
        # A file that now carries another id (e.g. `mv a.json b.json` over b) ends b's old id there.
        gone |= {indexed[rel][0] for rel, m in parsed.items() if rel in indexed and indexed[rel][0] != m.id}
        # A removed file whose id reappears at another path was moved, not removed.
        removed = sorted(gone - claimed.keys())
        self.catalog.remove(removed)
        report.removed = len(removed)
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

    def _parse_file(self, rel: str, state: FileState) -> Memory | None:
        try:
            return self._read(rel)
        except InvalidDocumentError as e:
            self.catalog.set_invalid(rel, state, e.reason)
        except OSError as e:
            self.catalog.set_invalid(rel, state, f"unreadable: {e.strerror or e}")
        return None

    def _verify_vectors(self, report: ReconcileReport, progress: Progress | None) -> None:
        in_chroma = self.vectors.ids()
        in_catalog = self.catalog.ids()
        missing = in_catalog - in_chroma
        orphans = in_chroma - in_catalog
        report.vectors_missing = len(missing)
        report.vectors_orphaned = len(orphans)
        self.vectors.delete(sorted(orphans))
        if missing:
            self.catalog.mark_unsynced(missing)
            report.vectors_written += self._write_vectors(None, progress=progress)

    # -- vectors ------------------------------------------------------------------------------------

    def _write_vectors(self, memories: Sequence[Memory] | None, progress: Progress | None = None, *,
                       meanwhile: Callable[[], None] | None = None, phase: str = "embed") -> int:
        """Give Chroma the vectors it lacks: the given memories, or (None) every unsynced catalog row.

        Vectors come from the cache by content hash. Content never seen is encoded in rounds, longest
        first (the model pads each batch to its longest text), on a worker thread that runs ahead of
        this one, so `meanwhile()` (add_many's file writes, which mostly wait on the disk) and each
        round's Chroma upsert overlap the model instead of adding to it.
        """
        if memories is None:
            memories = [e.memory for e in self.catalog.unsynced()]
        memories = sorted(memories, key=lambda m: len(m.content), reverse=True)
        rounds = [memories[i:i + BULK_BATCH] for i in range(0, len(memories), BULK_BATCH)]
        model = self.embedder.model_id
        uncached = self.catalog.uncached(model, (m.content_hash for m in memories))
        todo: list[dict[str, str]] = []  # per round: content hash -> text to encode
        for batch in rounds:
            todo.append({m.content_hash: m.content for m in batch if m.content_hash in uncached})
            uncached -= todo[-1].keys()  # a later round with the same content finds it cached by then
        pool = ThreadPoolExecutor(1, thread_name_prefix="memfs-embed") if any(todo) else None
        encoded = [pool.submit(self.embedder.embed, list(texts.values())) if pool and texts else None for texts in todo]
        try:
            if meanwhile:
                meanwhile()
            written = 0
            for batch, texts, future in zip(rounds, todo, encoded):
                if future is not None:
                    self.catalog.cache_vectors(model, dict(zip(texts, future.result())))
                vectors = self.catalog.cached_vectors(model, (m.content_hash for m in batch))
                self.vectors.upsert(batch, np.stack([vectors[m.content_hash] for m in batch]))
                self.catalog.mark_synced([m.id for m in batch])
                written += len(batch)
                if progress:
                    progress(phase, written, len(memories))
            return written
        finally:
            if pool:
                pool.shutdown(cancel_futures=True)  # after an error: encode nothing more

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
            data = path.read_bytes()
            mtime = datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
        except FileNotFoundError:
            raise NotFoundError(f"{path} is gone; run `memfs reindex` to bring the index up to date") from None
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
