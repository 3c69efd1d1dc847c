"""The operations (memfs.ops.Operations) in the process that owns the store.

Every feature a client can ask for is written here once; the CLI, manage_data.py, the HTTP routes and
the MCP tools reach it either directly (this process owns the store) or through the owner's socket
(memfs.remote), and get the same results and the same errors either way.
"""

from __future__ import annotations

import functools
import os
import shutil
import sqlite3
import time
from pathlib import Path
from typing import Iterable

from . import __version__, inputs
from .backup import (BackupFile, apply_prune, clean_leftovers, create_backup, list_backups, plan_prune, prune_backups,
                     restore_backup, verify_and_extract)
from .documents import Memory
from .errors import BadRequestError, InvalidDocumentError, NotFoundError, io_error
from .filestore import Layout, fsync_dir
from .ops import Progress, Retention
from .owner import Owner
from .query import Filters, Mode
from .results import (AddResult, BackupInfo, BackupList, BackupResult, Health, ListPage, MemoryRecord,
                      OwnerStatus, Problem, PruneEntry, PruneResult, ReconcileReport, RestoreSummary,
                      SearchResult, Stats, ValidationResult)
from .retention import Policy


MAX_K = 1000  # hits one search may return


def _translated(fn):
    """OSError / sqlite3.Error -> a MemfsError with advice, so every way in reports it the same."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (OSError, sqlite3.Error) as e:
            raise io_error(e) from e
    return wrapper


def relative_to_root(layout: Layout, path: Path) -> str:
    """A path as responses show it: relative to the store root when inside it (no absolute paths leak)."""
    try:
        return str(Path(path).resolve().relative_to(layout.root.resolve()))
    except ValueError:
        return str(path)


def parse_cursor(cursor: str | None) -> int:
    if cursor is None or cursor == "":
        return 0
    if not isinstance(cursor, str) or not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 12:
        raise BadRequestError(f"cursor {str(cursor)[:40]!r} is not one this store gave out; start again without it")
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
        return store._entry(mem_id)
    except InvalidDocumentError as e:
        path = store.catalog.path_for_id(mem_id)
        raise InvalidDocumentError(f"its indexed version no longer reads ({e.reason}); fix the file by hand "
                                   "or delete the memory", path) from None


def _remove_unreadable(store, mem_id: str, path: str) -> Memory:
    """Delete a memory whose catalog row cannot be parsed: file, row, vector (memfs.store.remove's steps)."""
    with store._mutex:
        row = store.catalog.db.execute("SELECT content FROM docs WHERE id = ?", (mem_id,)).fetchone()
        file = store.layout.memories / path
        file.unlink(missing_ok=True)
        fsync_dir(file.parent)
        with store.catalog.transaction():
            store.catalog.remove([mem_id])
        store.vectors.delete([mem_id])
    content = (row[0] if row and isinstance(row[0], str) else "")[:inputs.MAX_CONTENT_CHARS]
    return Memory(id=mem_id, content=content if inputs.is_unicode(content) and content.strip() else "(unreadable)")


class LocalOperations:
    """Operations over an Owner in this process. `close()` closes the owner when this object made it."""

    def __init__(self, owner: Owner, *, owns: bool = False):
        self.owner = owner
        self.layout = owner.layout
        self._owns = owns

    @classmethod
    def open(cls, root: Path | str, *, started_by: str = "command", watch: bool = False,
             lock_timeout: float = 2.0, **owner_options) -> "LocalOperations":
        """Own the store in this process for a while (a `--no-daemon` command, a test)."""
        owner = Owner(Layout(Path(root)), started_by=started_by, watch=watch, **owner_options)
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

    @_translated
    def add(self, content: str, *, tags: Iterable[str] = (), type: str = "note", metadata: dict | None = None,
            allow_duplicate: bool = False) -> AddResult:
        # The document's own rules and limits (memfs.inputs) are checked by documents.from_dict.
        with self.owner.using() as store:
            return store.add(content, tags=_strings(tags, "tags"), type=type, metadata=metadata,
                             allow_duplicate=allow_duplicate)

    @_translated
    def get(self, mem_id: str) -> MemoryRecord:
        inputs.check_lookup(mem_id)
        with self.owner.using() as store:
            entry = _readable(store, mem_id)
            try:
                return MemoryRecord(store.get(mem_id), entry.path)
            except InvalidDocumentError as e:  # the file broke since: serve what list and search serve
                return MemoryRecord(entry.memory, entry.path, f"the file no longer reads ({e.reason}); this is "
                                                              "its last good version: fix the file by hand")

    @_translated
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

    @_translated
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

    @_translated
    def list(self, filters: Filters = Filters(), *, limit: int = 50, cursor: str | None = None) -> ListPage:
        if limit < 1:
            raise BadRequestError("limit must be at least 1")
        offset = parse_cursor(cursor)
        _check_filters(filters)
        with self.owner.using() as store:
            entries = store.list(filters, limit=limit + 1, offset=offset)
        more = len(entries) > limit
        return ListPage([MemoryRecord(e.memory, e.path) for e in entries[:limit]],
                        str(offset + limit) if more else None)

    @_translated
    def search(self, query: str, *, k: int = 5, mode: Mode = "hybrid", filters: Filters = Filters()) -> SearchResult:
        if not isinstance(k, int) or not 1 <= k <= MAX_K:
            raise BadRequestError(f"k must be between 1 and {MAX_K}, not {str(k)[:30]}")
        inputs.check_query(query)
        _check_filters(filters)
        if not query.strip():
            raise BadRequestError("the query is empty; say what to look for")
        if mode not in ("semantic", "keyword", "hybrid"):
            raise BadRequestError(f"mode must be semantic, keyword or hybrid, not {mode!r}")
        with self.owner.using() as store:
            return SearchResult(store.search(query, k=k, mode=mode, filters=filters))

    # -- the store as a whole -----------------------------------------------------------------------

    @_translated
    def reindex(self, *, progress: Progress | None = None) -> ReconcileReport:
        with self.owner.using() as store:
            return store.reconcile(verify_vectors=True, progress=progress)

    @_translated
    def stats(self) -> Stats:
        with self.owner.using() as store:
            return Stats(**store.stats())

    def health(self, details: bool = True) -> Health:
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
                    vectors, chroma_ok = store.vectors.count(), True
                except Exception:  # the finding is that Chroma does not answer
                    chroma_ok = False
            index = {"chroma_ok": chroma_ok, "memories": store.catalog.count(), "vectors": vectors,
                     "last_reconcile": store.catalog.get_meta("last_reconcile"),
                     "invalid_files": len(store.catalog.invalid()), "embedded": store.embedder.embedded}
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

    # -- backups ------------------------------------------------------------------------------------

    def _backup_dir(self, backup_dir: str | None) -> Path:
        return Path(backup_dir) if backup_dir else self.layout.backups

    def _info(self, b: BackupFile, reasons: list[str], verify: bool) -> BackupInfo:
        return BackupInfo(b.name, relative_to_root(self.layout, b.path), b.kind,
                          b.created.strftime("%Y-%m-%dT%H:%M:%SZ"), b.size, b.compression,
                          b.checksum_state(verify), reasons)

    @_translated
    def backup(self, *, compression: str = "gz", prune: bool = True, retention: Retention = Retention(),
               backup_dir: str | None = None, progress: Progress | None = None) -> BackupResult:
        """A consistent backup: writes wait (they do not fail) until the snapshot is taken. Catalog and
        vectors are levelled with the files first, so restoring the archive embeds nothing."""
        if compression not in ("gz", "zst"):
            raise BadRequestError(f"compression must be gz or zst, not {compression!r}")
        directory = self._backup_dir(backup_dir)
        with self.owner.exclusive() as store:
            clean_leftovers(self.layout, directory)
            store.reconcile(verify_vectors=True)
            made = create_backup(self.layout, backup_dir=directory, compression=compression, progress=progress)
        # The backup just made is never a candidate, whatever the clock or the policy says.
        pruned = []
        if prune:
            pruned = apply_prune([i for i in plan_prune(directory, _policy(retention), retention.pre_restore)
                                  if i.backup.path != made.path])
        return BackupResult(relative_to_root(self.layout, made.path), made.name, made.size,
                            relative_to_root(self.layout, made.md5_path), [b.name for b in pruned])

    @_translated
    def list_backups(self, *, retention: Retention = Retention(), verify: bool = False,
                     backup_dir: str | None = None) -> BackupList:
        directory = self._backup_dir(backup_dir)
        plan = plan_prune(directory, _policy(retention), retention.pre_restore)
        _, leftovers = list_backups(directory)
        rows = [self._info(i.backup, list(i.decision.reasons) if i.decision.keep else ["would be pruned"], verify)
                for i in plan]
        return BackupList(relative_to_root(self.layout, directory), rows, [p.name for p in leftovers])

    @_translated
    def prune(self, *, retention: Retention = Retention(), dry_run: bool = False,
              backup_dir: str | None = None) -> PruneResult:
        plan, _ = prune_backups(self._backup_dir(backup_dir), _policy(retention), retention.pre_restore, dry_run)
        return PruneResult(dry_run, [PruneEntry(i.backup.name, i.decision.keep, list(i.decision.reasons))
                                     for i in plan])

    def _resolve(self, archive: str, backup_dir: str | None) -> BackupFile:
        directory = self._backup_dir(backup_dir)
        if archive == "latest":
            regular = [b for b in list_backups(directory)[0] if b.kind == "backup"]
            if not regular:
                raise NotFoundError(f"no backups in {relative_to_root(self.layout, directory)}; "
                                    "`manage_data.py backup` makes one")
            return regular[0]
        path = Path(archive)
        if not path.is_absolute() and not path.exists():
            path = directory / archive
        try:
            b = BackupFile.parse(path)
        except ValueError:  # a backup-like name with an impossible date (#15): no such backup
            b = None
        if b is None or not path.is_file():
            raise NotFoundError(f"{archive}: not a backup file (expected memory_backup_YYYYMMDD_HHMMSS.tar.gz or "
                                ".tar.zst); `manage_data.py list` shows what there is")
        return b

    @_translated
    def restore(self, archive: str, *, verify: bool = True, dry_run: bool = False, backup_dir: str | None = None,
                progress: Progress | None = None) -> RestoreSummary:
        """Verify the archive completely, save the current data as a pre-restore backup, swap, reindex."""
        b = self._resolve(archive, backup_dir)
        name = relative_to_root(self.layout, b.path)
        if dry_run:
            staging = self.layout.data / f".restore-dry-run-{time.time_ns()}"
            try:
                manifest = verify_and_extract(b, staging, verify_md5=verify, progress=progress)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return RestoreSummary(name, manifest.get("memory_count"), dry_run=True,
                                  created_at=manifest.get("created_at"))
        with self.owner.swapping():
            done = restore_backup(self.layout, b, verify_md5=verify, progress=progress)
        embedded = self.owner.wait_until_indexed()
        with self.owner.exclusive() as store:
            if self.owner.watcher is None:
                embedded = store.reconcile(verify_vectors=True).embedded
            problems = self._validate(False, None, None).problems
        return RestoreSummary(name, done.memory_count, embedded,
                              relative_to_root(self.layout, done.pre_restore.path) if done.pre_restore else None,
                              problems)

    def _validate(self, backups: bool, backup_dir: str | None, progress: Progress | None) -> ValidationResult:
        from .validate import validate as run_validation

        report = run_validation(self.layout, backups=backups,
                                backup_dir=Path(backup_dir) if backup_dir else None, progress=progress)
        return ValidationResult(report.ok, report.memory_files, report.seconds,
                                [Problem(p.check, p.path, p.message, p.fixable) for p in report.problems])

    @_translated
    def validate(self, *, backups: bool = False, fix: bool = False, backup_dir: str | None = None,
                 progress: Progress | None = None) -> ValidationResult:
        """Report every problem; with `fix`, repair what is derived (never a memory file) and re-check."""
        with self.owner.exclusive() as store:
            result = self._validate(backups, backup_dir, progress)
            if not fix or not any(p.fixable for p in result.problems):
                return result
            self.layout.create()
            clean_leftovers(self.layout, self._backup_dir(backup_dir))
            store.reconcile(verify_vectors=True)
            after = self._validate(backups, backup_dir, None)
        return ValidationResult(after.ok, after.memory_files, after.seconds, after.problems,
                                fixed=len(result.problems) - len(after.problems))


def _policy(r: Retention) -> Policy:
    for name in ("daily", "weekly", "monthly", "pre_restore"):
        if getattr(r, name) < 0:
            raise BadRequestError(f"keep-{name.replace('_', '-')} must be 0 or more")
    return Policy(r.daily, r.weekly, r.monthly)

