"""The operations (memfs.ops.Operations) in the process that owns the store.

Every feature a client can ask for is written here once; the CLI, manage_data.py, the HTTP routes and
the MCP tools reach it either directly (this process owns the store) or through the owner's socket
(memfs.remote), and get the same results and the same errors either way.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Iterable

from . import __version__, inputs
from .admin import AdminOperations, translated
from .transfer import TransferOperations
from .graph import GraphOperations
from .sync.operations import SyncOperations
from .documents import Memory
from .errors import BadRequestError, InvalidDocumentError, NotFoundError, io_error
from .filestore import Layout, fsync_dir
from .ops import Progress
from .owner import Owner
from .query import Filters, Mode
from .results import (AddResult, Health, ListPage, MemoryRecord,
                      OwnerStatus, ReconcileReport, RemoveResult, SearchResult, Stats)
from .inputs import MAX_K, MAX_PAGE, MAX_REMOVE  # the limits of every way in: memfs/inputs.py


def parse_cursor(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 12:
        raise BadRequestError(f"cursor {cursor[:40]!r} is not one this store gave out; start again without it")
    return int(cursor)


def _strings(values: Iterable[str], name: str) -> list[str]:
    """A list of strings (tags), or BadRequestError: a bare string would be taken letter by letter."""
    if isinstance(values, str):
        raise BadRequestError(f"{name} must be a list of strings, not one string")
    values = list(values)
    if not all(isinstance(v, str) for v in values):
        raise BadRequestError(f"{name} must be a list of strings")
    return values


def _check_filters(f: Filters) -> None:
    """Filter values are bound into SQL: they must be strings SQLite can take (no lone surrogates)."""
    for t in f.tags:
        inputs.check_lookup(t, "tag")
    if f.type is not None:
        inputs.check_lookup(f.type, "type")


def _readable(store, mem_id: str):
    """The catalog entry for `mem_id`; a row that no longer parses says which file and what to do."""
    try:
        return store.entry(mem_id)
    except InvalidDocumentError as e:
        path = store.catalog.path_for_id(mem_id)
        raise InvalidDocumentError(f"its indexed version no longer reads ({e.reason}); fix the file by hand "
                                   "or delete the memory", path) from None


def _remove_unreadable(store, mem_id: str, path: str) -> Memory:
    """Delete a memory whose catalog row cannot be parsed: file, row, vector (memfs.store.remove's steps)."""
    with store.mutex:
        row = store.catalog.db.execute("SELECT content FROM docs WHERE id = ?", (mem_id,)).fetchone()
        file = store.layout.memories / path
        file.unlink(missing_ok=True)
        fsync_dir(file.parent)
        with store.catalog.transaction():
            store.catalog.remove([mem_id])
        store.vectors.delete([mem_id])
    content = (row[0] if row and isinstance(row[0], str) else "")[:inputs.MAX_CONTENT_CHARS]
    return Memory(id=mem_id, content=content if inputs.is_unicode(content) and content.strip() else "(unreadable)")


class LocalOperations(AdminOperations, TransferOperations, GraphOperations, SyncOperations):
    """Operations over an Owner in this process. `close()` closes the owner when this object made it."""

    def __init__(self, owner: Owner, *, owns: bool = False):
        self.owner = owner
        self.layout = owner.layout
        self._owns = owns

    @classmethod
    def open(cls, where: Layout | Path | str, *, started_by: str = "command", watch: bool = False,
             lock_timeout: float = 2.0, **owner_options) -> "LocalOperations":
        """Own the store in this process for a while (a `--no-daemon` command, a test)."""
        owner = Owner(Layout.of(where), started_by=started_by, watch=watch, **owner_options)
        try:
            owner.start(lock_timeout)
        except (OSError, sqlite3.Error) as e:
            raise io_error(e) from e
        return cls(owner, owns=True)

    def close(self) -> None:
        if self._owns:
            self.owner.close()

    def __enter__(self) -> "LocalOperations":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- memories -----------------------------------------------------------------------------------

    @translated
    def add(self, content: str, *, tags: Iterable[str] = (), type: str = "note", metadata: dict | None = None,
            allow_duplicate: bool = False) -> AddResult:
        # The document's own rules and limits (memfs.inputs) are checked by documents.from_dict.
        with self.owner.using() as store:
            return store.add(content, tags=_strings(tags, "tags"), type=type, metadata=metadata,
                             allow_duplicate=allow_duplicate)

    @translated
    def get(self, mem_id: str) -> MemoryRecord:
        inputs.check_lookup(mem_id)
        with self.owner.using() as store:
            _readable(store, mem_id)
            return store.record(mem_id)  # the last good version, with a warning, while the file is invalid

    @translated
    def update(self, mem_id: str, *, content: str | None = None, tags: Iterable[str] | None = None,
               add_tags: Iterable[str] = (), remove_tags: Iterable[str] = (), type: str | None = None,
               metadata: dict | None = None) -> MemoryRecord:
        inputs.check_lookup(mem_id)
        if type is not None:  # stored as given: a blank type would write a file no reader takes (#15)
            if not isinstance(type, str) or not type.strip():
                raise InvalidDocumentError("'type' must be a non-empty string")
            type = type.strip()
        if metadata is not None and not isinstance(metadata, dict):
            raise InvalidDocumentError("'metadata' must be a JSON object")
        with self.owner.using() as store:
            _readable(store, mem_id)
            # Store.update writes through Memory.to_bytes, which reads the result back with the file
            # parser: whatever the merge produced, a file no reader takes is refused, not written.
            m = store.update(mem_id, content=content, tags=None if tags is None else _strings(tags, "tags"),
                             add_tags=_strings(add_tags, "add_tags"), remove_tags=_strings(remove_tags, "remove_tags"),
                             type=type, metadata=metadata)
            return MemoryRecord(m, store.catalog.path_for_id(m.id) or "")

    @translated
    def remove(self, mem_id: str) -> MemoryRecord:
        inputs.check_lookup(mem_id)
        with self.owner.using() as store:
            path = store.catalog.path_for_id(mem_id)
            try:
                return MemoryRecord(store.remove(mem_id), path or "")
            except InvalidDocumentError:
                if path is None:
                    raise
                # Trigger: the catalog row no longer parses (written before #15's rules, or by hand).
                # Why: any memory can always be deleted. Outcome: file, row and vector go unread.
                return MemoryRecord(_remove_unreadable(store, mem_id, path), path)

    @translated
    def list(self, filters: Filters = Filters(), *, limit: int = 50, cursor: str | None = None) -> ListPage:
        # #19: the owner's route refused 5000, this process took it; now every door refuses it here too
        if problem := inputs.count_problem("limit", limit, MAX_PAGE):
            raise BadRequestError(problem)
        offset = parse_cursor(cursor)
        _check_filters(filters)
        with self.owner.using() as store:
            entries = store.list(filters, limit=limit + 1, offset=offset)
        more = len(entries) > limit
        return ListPage([MemoryRecord(e.memory, e.path) for e in entries[:limit]],
                        str(offset + limit) if more else None)

    @translated
    def search(self, query: str, *, k: int = 5, mode: Mode = "hybrid", filters: Filters = Filters(),
               min_score: float | None = None) -> SearchResult:
        """The k best hits; with `min_score` None, nothing (and a note saying so) when none is a good
        match; with a `min_score` (0–1), only hits scoring at least that."""
        if problem := inputs.count_problem("k", k, MAX_K):
            raise BadRequestError(problem)
        inputs.check_query(query)
        _check_filters(filters)
        if not query.strip():
            raise BadRequestError("the query is empty; say what to look for")
        if mode not in ("semantic", "keyword", "hybrid"):
            raise BadRequestError(f"mode must be semantic, keyword or hybrid, not {mode!r}")
        if min_score is not None and not 0 <= min_score <= 1:
            raise BadRequestError(f"min_score must be between 0 and 1, not {min_score}")
        with self.owner.using() as store:
            return store.search_result(query, k=k, mode=mode, filters=filters, min_score=min_score)

    # -- the store as a whole -----------------------------------------------------------------------

    @translated
    def reindex(self, *, progress: Progress | None = None) -> ReconcileReport:
        with self.owner.using() as store:
            report = store.reconcile(verify_vectors=True, progress=progress)
            opened, self.owner.opened_report = self.owner.opened_report, None
            if opened is not None:
                report.absorb(opened)
            if store.vectors_outdated:  # made with older HNSW parameters (docs/search.md): rebuilt from its own vectors
                report.vectors_written += store.rebuild_vectors(progress)
            store.sweep_expired()  # expired key/value memories were hidden already; now their files go
            return report

    @translated
    def stats(self) -> Stats:
        from .sync.conflicts import count as conflict_count

        with self.owner.using() as store:
            return Stats(**store.stats(), conflicts=conflict_count(self.layout))

    def revision(self) -> str:
        with self.owner.using() as store:
            return store.revision()

    def health(self, details: bool = True) -> Health:
        from .sync.conflicts import count as conflict_count

        owner = self.owner
        loaded = bool(owner.embedder is not None and getattr(owner.embedder, "loaded", False))
        if not details:
            return Health("ok" if owner.ready else "starting", __version__, loaded)
        persistence = {"type": "filesystem", "writable": os.access(self.layout.data, os.W_OK)}
        if not owner.ready:
            return Health("starting", __version__, loaded, persistence)
        with owner.using() as store:
            # Chroma opens in the background after the startup file reconcile; until then (about a
            # second at 20k memories) its fields are null rather than /health waiting for it.
            vectors, chroma_ok = None, None
            if store.vectors.opened:
                try:
                    vectors, chroma_ok = store.vector_count(), True
                except Exception:  # the finding is that Chroma does not answer
                    chroma_ok = False
            index = {"chroma_ok": chroma_ok, "memories": store.catalog.count(), "vectors": vectors,
                     "last_reconcile": store.catalog.get_meta("last_reconcile"),
                     "invalid_files": len(store.catalog.invalid()), "embedded": store.embedder.embedded,
                     "sync_conflicts": conflict_count(self.layout)}
            if owner.watcher is not None:
                status = owner.watcher.status()
                index.update(watcher=status.observer, queue_depth=status.queue_depth, last_error=status.last_error,
                             watcher_batches=status.batches)
        return Health("ok", __version__, loaded, persistence, index)

    def status(self) -> OwnerStatus:
        o = self.owner
        idle_left = None
        if o.idle_exit is not None and getattr(o, "last_activity", None) is not None:
            idle_left = max(0.0, o.idle_exit - (time.monotonic() - o.last_activity))
        return OwnerStatus(True, pid=os.getpid(), started_by=o.started_by,
                           socket=str(o.socket) if o.socket else None, url=o.url,
                           since=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(o.started)),
                           uptime=time.time() - o.started, idle_exit=o.idle_exit, idle_left=idle_left,
                           ready=o.ready, model_loaded=self.health(details=False).model_loaded)

    # -- lookups and bulk removal (issue #10) -------------------------------------------------------

    @translated
    def find(self, *, content_hash: str) -> MemoryRecord:
        h = check_content_hash(content_hash)
        with self.owner.using() as store:
            mem_id = store.catalog.id_for_hash(h)
            if mem_id is None:
                raise NotFoundError(f"no memory with content hash {h}; search or list to find the memory")
            return store.record(mem_id)

    @translated
    def remove_matching(self, filters: Filters, *, dry_run: bool = True, limit: int = 1000) -> RemoveResult:
        if filters.empty:
            raise BadRequestError("give at least one filter (tags, type, since, until); "
                                  "removing every memory is not something one call does")
        if problem := inputs.count_problem("limit", limit, MAX_REMOVE):
            raise BadRequestError(problem)
        with self.owner.using() as store:
            ids = [e.memory.id for e in store.list(filters, limit=limit + 1)]
            if len(ids) > limit:
                raise BadRequestError(f"more than {limit} memories match; narrow the filters or raise the limit "
                                      "(nothing was removed)")
            if dry_run:
                return RemoveResult(ids, dry_run=True)
            removed = []
            for mem_id in ids:
                try:
                    store.remove(mem_id)
                except NotFoundError:
                    continue  # removed meanwhile by someone else: the outcome asked for
                removed.append(mem_id)
        return RemoveResult(removed, dry_run=False)


def check_content_hash(value: str) -> str:
    h = value.strip().lower() if isinstance(value, str) else ""
    if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
        raise BadRequestError(f"{str(value)[:80]!r} is not a content hash (64 hex digits, the SHA-256 of the "
                              "content); memory_get takes an id instead")
    return h
