"""Reconciler: brings catalog and vectors level with the files under memories/ (DESIGN.md §3).

A full pass at every start (and periodically), and path batches from the watcher. Files whose state
(size, mtime, inode, ctime) matches the catalog are not read; an invalid or unreadable file is
recorded and its last good version stays indexed; a file refused as a duplicate id is read again once
its id lost its file. Vectors are written by the store's VectorWriter.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from . import documents
from .catalog import Catalog, Invalid
from .documents import Memory, utcnow
from .errors import InvalidDocumentError, NotFoundError
from .filestore import FileState, remove_stale_temps, scan, stat_paths
from .lock import StoreMutex
from .ops import Progress
from .results import InvalidFile, ReconcileReport
from .vector_writes import VectorWriter
from .vectors import VectorIndex

log = logging.getLogger("memfs")

# path -> (its state before the read, the memory or the error reading it raised): read before the lock
Early = dict[str, tuple[FileState, Memory | Exception]]


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


@dataclass
class _Pass:
    """One pass over some files: what is on disk, what the catalog says, and what the pass found."""
    files: dict[str, FileState]
    indexed: dict[str, tuple[str, FileState]]  # path -> (id, state) in the catalog
    present: set[str]  # indexed paths still on disk, or outside the paths looked at
    gone_paths: set[str]  # indexed paths no longer on disk
    known_invalid: dict[str, Invalid]
    report: ReconcileReport
    early: Early
    parsed: dict[str, Memory] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)  # read, and found invalid or unreadable
    claimed: dict[str, str] = field(default_factory=dict)  # id -> the parsed file that keeps it


class Reconciler:
    """The store's reconcile; `read` reads a memory file (MemoryStore.read_file)."""

    def __init__(self, memories: Path, catalog: Catalog, vectors: VectorIndex, mutex: StoreMutex,
                 writer: VectorWriter, read: Callable[[str], Memory]):
        self.memories = memories
        self.catalog = catalog
        self.vectors = vectors
        self.mutex = mutex
        self.writer = writer
        self.read = read
        # Temp files older than this were left by a process that died mid-write: only the lock's holder
        # writes them, and we hold it since before now (issue #14, finding 6).
        self.opened_at = time.time()
        self._invalid_logged: frozenset = frozenset()  # what the last full reconcile's warning named

    def run(self, *, paths: Iterable[str] | None, verify_vectors: bool, progress: Progress | None,
            reread: Iterable[str], embed: bool) -> ReconcileReport:
        """MemoryStore.reconcile."""
        started = time.monotonic()
        reread = set(reread)
        # A watcher batch's files are read and parsed before the state lock is taken: searches need
        # that lock, and a burst of 1,000 dropped files took ~100 ms to read (issue #14, finding 4).
        # Under the lock, a file whose state still matches is not read again.
        early = self.read_ahead(set(paths) | reread) if paths is not None else {}
        with self.mutex, _gc_paused():
            report = ReconcileReport()
            # What this call encoded; the embedder's own counter also counts other writers' work,
            # which runs while this one waits for the model without the lock.
            report.embedded = 0
            files, scope = self._stat(paths, reread)
            report.scanned = len(files)
            stale = self._reconcile_all(files, scope, reread, report, progress, early)
            self.vectors.delete(stale)
            if embed:
                report.vectors_written += self.writer.write(None, progress=progress, report=report)
            if verify_vectors:
                self.writer.verify(report, progress, embed)
            self.writer.refresh_lag()
            report.invalid = [InvalidFile(i.path, i.reason) for i in self.catalog.invalid()]
            report.seconds = time.monotonic() - started
            if paths is None:  # a full reconcile; the watcher's path batches are not one
                self._note_full_reconcile(report)
            return report

    def _stat(self, paths: Iterable[str] | None, reread: set[str]) -> tuple[dict[str, FileState], set[str] | None]:
        """The files to look at (every one, or `paths` and `reread`) with their states, and the scope."""
        if paths is None:
            temps: list[tuple[str, float]] = []
            files = scan(self.memories, temps)
            self._remove_stale_temps(temps)
            scope: set[str] | None = None
        else:
            scope = set(paths) | reread
            files = stat_paths(self.memories, scope)
        if reread - files.keys():
            files.update(stat_paths(self.memories, reread - files.keys()))
        return files, scope

    def _reconcile_all(self, files: dict[str, FileState], scope: set[str] | None, reread: set[str],
                       report: ReconcileReport, progress: Progress | None, early: Early) -> list[str]:
        """Index the files, then the refused duplicates whose id lost its file; returns ids whose vectors go."""
        with self.catalog.transaction():
            stale = self._reconcile_files(files, scope, reread, report, progress, early)
            # Refused duplicates whose id lost its file: read them again (bounded: each round
            # either gives such a file its id or records the id's new holder).
            for _ in range(3):
                orphans = set(self.catalog.orphaned_duplicates())
                if not orphans:
                    break
                more = stat_paths(self.memories, orphans)
                files.update(more)
                stale += self._reconcile_files(more, orphans, orphans, report, progress)
        return stale

    def _note_full_reconcile(self, report: ReconcileReport) -> None:
        self.catalog.set_meta("last_reconcile", documents.format_time(utcnow()))
        invalid_now = frozenset((i.path, i.reason) for i in report.invalid)
        # Said once per change, not at every periodic reconcile (issue #24, item 5).
        if report.invalid and invalid_now != self._invalid_logged:
            log.warning("%d invalid memory file(s), e.g. %s: %s", len(report.invalid),
                        report.invalid[0].path, report.invalid[0].reason)
        self._invalid_logged = invalid_now

    def _remove_stale_temps(self, temps: list[tuple[str, float]]) -> None:
        removed = remove_stale_temps(self.memories, temps, self.opened_at)
        if removed:
            log.warning("removed %d temp file(s) left by an interrupted write, e.g. %s", len(removed), removed[0])

    def read_ahead(self, rels: set[str]) -> Early:
        """Parse the files among `rels` that differ from their catalog rows, without the state lock:
        path -> (state before the read, memory or the error reading it raised)."""
        files = stat_paths(self.memories, rels)
        indexed = self.catalog.file_index(files)  # the catalog's own lock suffices for a read
        early: Early = {}
        for rel, st in files.items():
            if rel in indexed and indexed[rel][1] == st:
                continue
            try:
                early[rel] = (st, self.read(rel))
            except (InvalidDocumentError, NotFoundError, OSError) as e:
                early[rel] = (st, e)
        return early

    def _reconcile_files(self, files: dict[str, FileState], scope: set[str] | None, reread: set[str],
                         report: ReconcileReport, progress: Progress | None, early: Early | None = None) -> list[str]:
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
        p = _Pass(files, indexed, present={q for q in indexed if q in files or not in_scope(q)},
                  gone_paths={q for q in indexed if q not in files}, known_invalid=known_invalid,
                  report=report, early=early or {})
        return self._apply_files(sorted(to_read), p, progress)

    def _apply_files(self, to_read: list[str], p: _Pass, progress: Progress | None) -> list[str]:
        """Index what changed on disk. Returns the ids whose vectors must go."""
        self._parse_all(to_read, p, progress)
        self._claim_ids(p)
        gone = {p.indexed[q][0] for q in p.gone_paths}
        # A file that now carries another id (e.g. `mv a.json b.json` over b) ends b's old id there.
        gone |= {p.indexed[rel][0] for rel, m in p.parsed.items() if rel in p.indexed and p.indexed[rel][0] != m.id}
        gone -= self._follow_invalid_moves(p)
        # A removed file whose id reappears at another path was moved, not removed.
        removed = sorted(gone - p.claimed.keys())
        self.catalog.remove(removed)
        p.report.removed += len(removed)
        return removed + self._index_claimed(p)

    def _parse_all(self, to_read: list[str], p: _Pass, progress: Progress | None) -> None:
        for n, rel in enumerate(to_read, 1):
            m = self._parse_file(rel, p.files[rel], p.early.get(rel))
            if isinstance(m, Memory):
                p.parsed[rel] = m
            elif m is not None:
                p.failed.append(rel)
            if progress and (n % 500 == 0 or n == len(to_read)):
                progress("read", n, len(to_read))

    def _claim_ids(self, p: _Pass) -> None:
        """Each parsed file claims its id, unless another file keeps it: then it is a refused duplicate."""
        for rel, m in p.parsed.items():
            other = p.claimed.get(m.id) or self._owner(m.id, p)
            if other is not None:
                self.catalog.set_invalid(rel, p.files[rel], f"duplicate id {m.id!r}: also used by {other}; "
                                                            "give one of them another 'id'", dup_id=m.id)
            else:
                p.claimed[m.id] = rel

    def _owner(self, mem_id: str, p: _Pass) -> str | None:
        """The file that keeps this id: one not re-read (or found invalid: it keeps serving its
        last good version), still on disk (or outside the paths looked at)."""
        path = self.catalog.path_for_id(mem_id)
        if path is None or path in p.parsed or (path in p.indexed and path not in p.present):
            return None
        if self.catalog.invalid_at(path) is not None:
            return None  # a last good version gives way to a valid file that says the same id
        return path

    def _follow_invalid_moves(self, p: _Pass) -> set[str]:
        """Trigger: a folder holding an invalid file is renamed. Why: its row's old path is gone and
        the file at the new path does not parse. Outcome: the last good version follows the file
        (same inode) to its new path instead of being dropped (issue #14, finding 5). Returns the
        ids that followed."""
        followed: set[str] = set()
        for rel in p.failed:
            if rel in p.indexed:
                continue
            for old in p.gone_paths:
                mem_id, old_state = p.indexed[old]
                was = p.known_invalid.get(old)
                if mem_id in p.claimed or mem_id in followed:
                    continue
                if p.files[rel].ino == old_state.ino or (was is not None and p.files[rel].same_file(was.state)):
                    self.catalog.move_row(mem_id, rel)
                    followed.add(mem_id)
                    p.report.moved += 1
                    break
        return followed

    def _index_claimed(self, p: _Pass) -> list[str]:
        """Put each claimed file's memory in the catalog (or just its new path and state, if only
        that changed). Returns the ids whose vectors the catalog dropped."""
        # Moved rows let go of their old paths first, so two files swapping names cannot collide.
        path_of = {i: self.catalog.path_for_id(i) for i in p.claimed}
        self.catalog.release_paths([i for i, rel in p.claimed.items() if path_of[i] not in (None, rel)])
        removed: list[str] = []
        for mem_id, rel in p.claimed.items():
            m = p.parsed[rel]
            before = self.catalog.get(mem_id)
            if before is not None and before.memory == m:
                self.catalog.set_state(mem_id, rel, p.files[rel])
                p.report.moved += path_of.get(mem_id) != rel
            else:
                removed += self.catalog.put(m, rel, p.files[rel])
                if before is None:
                    p.report.added += 1
                else:
                    p.report.updated += 1
        return removed

    def _parse_file(self, rel: str, state: FileState,
                    early: tuple[FileState, Memory | Exception] | None = None) -> Memory | str | None:
        """The file's memory; or the reason it is invalid, recorded; or None if it vanished meanwhile.
        `early` is what read_ahead found, used if the file has not changed since."""
        try:
            if early is None or early[0] != state:
                return self.read(rel)
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
