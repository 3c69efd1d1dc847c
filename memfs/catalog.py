"""The catalog in data/indexes/catalog.sqlite: what the files hold, in a form that is quick to ask.

One row per memory (id <-> path, content hash, the file's size/mtime/inode, filterable fields), a tag
table, an FTS5 keyword index over the content, the files found invalid, and the embedding cache keyed by
(model id, content hash). All of it is derived from data/memories/ and can be rebuilt by `reindex`.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import orjson

from .documents import Memory, from_dict
from .errors import InvalidDocumentError
from .filestore import FileState
from .query import Filters

log = logging.getLogger("memfs.catalog")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
    rowid      INTEGER PRIMARY KEY,
    id         TEXT NOT NULL UNIQUE,
    path       TEXT NOT NULL UNIQUE,
    hash       TEXT NOT NULL,
    size       INTEGER NOT NULL,
    mtime_ns   INTEGER NOT NULL,
    ino        INTEGER NOT NULL,
    type       TEXT NOT NULL,
    created_ts REAL NOT NULL,
    updated_ts REAL NOT NULL,
    content    TEXT NOT NULL,
    body       BLOB NOT NULL,   -- the rest of the document, as JSON, for answering without a file read
    vec_fp     TEXT NOT NULL,   -- what the vector index should hold for this row
    synced_fp  TEXT             -- what it was last told it holds
);
CREATE INDEX IF NOT EXISTS docs_hash ON docs(hash);
CREATE INDEX IF NOT EXISTS docs_created ON docs(created_ts);
CREATE TABLE IF NOT EXISTS doc_tags (
    tag TEXT NOT NULL, doc INTEGER NOT NULL, PRIMARY KEY (tag, doc)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS doc_tags_doc ON doc_tags(doc);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(
    content, content='docs', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
);
CREATE TABLE IF NOT EXISTS invalid (
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ino INTEGER, reason TEXT NOT NULL
);
-- A rowid table on purpose: WITHOUT ROWID packs 1.5 KB vectors into its key B-tree at a third of
-- the density (94 MB instead of ~40 MB at 20k memories, measured).
CREATE TABLE IF NOT EXISTS embed_cache (
    model TEXT NOT NULL, hash TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, hash)
);
"""


@dataclass(frozen=True)
class Entry:
    """A catalog row: the memory as last indexed, and the file state it was read from."""

    memory: Memory
    path: str
    hash: str
    state: FileState


@dataclass(frozen=True)
class Invalid:
    path: str
    reason: str
    state: FileState


def _ts(t: datetime) -> float:
    return t.timestamp()


def vector_fingerprint(m: Memory) -> str:
    """Everything the vector index stores for a memory; a change means it must be told again."""
    return orjson.dumps([m.content_hash, m.type, _ts(m.created_at), list(m.tags)]).decode()


def _fts_query(text: str) -> str:
    """Each whitespace-separated word becomes a quoted FTS5 phrase, OR-ed together.

    Quoting makes user text safe (no FTS5 syntax errors from `-`, `:` or quotes), and a phrase keeps an
    identifier such as `PROJ-1234` or `E4417` whole: the tokenizer splits `PROJ-1234` into two adjacent
    tokens, which the phrase matches exactly.
    """
    phrases = []
    for word in text.split():
        tokens = re.findall(r"\w+", word)
        if tokens:
            phrases.append('"' + " ".join(tokens) + '"')
    return " OR ".join(dict.fromkeys(phrases))


class Catalog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection, shared by the store's threads under this lock (the watcher adds a thread).
        self._lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        version = self.get_meta("schema_version")
        if version is None:
            self.set_meta("schema_version", str(SCHEMA_VERSION))
        elif int(version) > SCHEMA_VERSION:
            from .errors import UnsupportedFormatError

            raise UnsupportedFormatError(
                f"catalog schema {version} is newer than this memfs understands ({SCHEMA_VERSION}); "
                "upgrade memfs, or delete data/indexes/ and run `memfs reindex` to rebuild it",
                str(path),
            )

    def close(self) -> None:
        self.db.close()

    # -- transactions -------------------------------------------------------------------------------

    def transaction(self):
        """`with catalog.transaction():` groups writes; commits on success, rolls back on error."""
        return _Transaction(self)

    # -- meta ---------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", (key, value))

    # -- documents ----------------------------------------------------------------------------------

    def put(self, m: Memory, path: str, state: FileState) -> list[str]:
        """Insert or replace the row for `m`. Returns ids of other rows it displaced (same path)."""
        with self._lock:
            displaced = [r[0] for r in self.db.execute(
                "SELECT id FROM docs WHERE path = ? AND id != ?", (path, m.id))]
            self.remove(displaced)
            old = self.db.execute("SELECT rowid, content, synced_fp FROM docs WHERE id = ?", (m.id,)).fetchone()
            body = m.to_dict()
            del body["content"]
            values = (m.id, path, m.content_hash, state.size, state.mtime_ns, state.ino, m.type,
                      _ts(m.created_at), _ts(m.updated_at), m.content, orjson.dumps(body),
                      vector_fingerprint(m))
            if old:
                rowid = old[0]
                self.db.execute("INSERT INTO fts(fts, rowid, content) VALUES ('delete', ?, ?)", (rowid, old[1]))
                self.db.execute(
                    "UPDATE docs SET id=?, path=?, hash=?, size=?, mtime_ns=?, ino=?, type=?, created_ts=?,"
                    " updated_ts=?, content=?, body=?, vec_fp=? WHERE rowid=?", values + (rowid,))
                self.db.execute("DELETE FROM doc_tags WHERE doc = ?", (rowid,))
            else:
                rowid = self.db.execute(
                    "INSERT INTO docs(id, path, hash, size, mtime_ns, ino, type, created_ts, updated_ts,"
                    " content, body, vec_fp) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", values).lastrowid
            self.db.execute("INSERT INTO fts(rowid, content) VALUES (?, ?)", (rowid, m.content))
            self.db.executemany("INSERT INTO doc_tags(tag, doc) VALUES (?, ?)", [(t, rowid) for t in m.tags])
            self.db.execute("DELETE FROM invalid WHERE path = ?", (path,))
            return displaced

    def set_state(self, mem_id: str, path: str, state: FileState) -> None:
        """The file moved or was touched but says the same thing: record where and how it is now."""
        with self._lock:
            self.db.execute("UPDATE docs SET path=?, size=?, mtime_ns=?, ino=? WHERE id=?",
                            (path, state.size, state.mtime_ns, state.ino, mem_id))
            self.db.execute("DELETE FROM invalid WHERE path = ?", (path,))

    def release_paths(self, ids: Iterable[str]) -> None:
        """Park these rows on placeholder paths; the caller gives each its new path next."""
        with self._lock:
            self.db.executemany("UPDATE docs SET path = '//moving/' || id WHERE id = ?", [(i,) for i in ids])

    def remove(self, ids: Iterable[str]) -> None:
        with self._lock:
            for mem_id in ids:
                row = self.db.execute("SELECT rowid, content FROM docs WHERE id = ?", (mem_id,)).fetchone()
                if row is None:
                    continue
                self.db.execute("INSERT INTO fts(fts, rowid, content) VALUES ('delete', ?, ?)", row)
                self.db.execute("DELETE FROM doc_tags WHERE doc = ?", (row[0],))
                self.db.execute("DELETE FROM docs WHERE rowid = ?", (row[0],))

    _COLUMNS = "id, path, hash, size, mtime_ns, ino, content, body"

    @staticmethod
    def _entry(row) -> Entry:
        mem_id, path, h, size, mtime_ns, ino, content, body = row
        doc = orjson.loads(body)
        doc["content"] = content
        # Rows are only written from documents that parsed, so this cannot fail on our own data.
        m = from_dict(doc, default_id=mem_id, default_time=datetime.now(timezone.utc))
        return Entry(m, path, h, FileState(size, mtime_ns, ino))

    def _entries(self, rows: list) -> list[Entry]:
        """Entries for rows, skipping any that no longer parse, each reported as an invalid file.

        Trigger: a row written before a rule existed (#15: a PATCH stored type " "). Why: one bad row
        failed every list page and search that included it. Outcome: the rest are served; the file is
        listed as invalid (/health) and its row marked stale, so the next reconcile reads the file
        again: a good file heals the row, a bad one is reported with its own reason.
        """
        out, stale = [], []
        for row in rows:
            try:
                out.append(self._entry(row))
            except (InvalidDocumentError, ValueError) as e:
                reason = getattr(e, "reason", None) or str(e)
                log.warning("skipping memory %r (%s): its indexed version no longer reads: %s", row[0], row[1], reason)
                stale.append((row[0], row[1], reason))
        for mem_id, path, reason in stale:
            with self._lock:
                self.db.execute("UPDATE docs SET size = -1 WHERE id = ?", (mem_id,))
            self.set_invalid(path, FileState(-1, -1, -1), f"indexed version of {mem_id!r} no longer reads "
                                                          f"({reason}); fix the file or delete the memory")
        return out

    def get(self, mem_id: str) -> Entry | None:
        row = self.db.execute(f"SELECT {self._COLUMNS} FROM docs WHERE id = ?", (mem_id,)).fetchone()
        return self._entry(row) if row else None

    def get_many(self, ids: list[str]) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT {self._COLUMNS} FROM docs WHERE id IN ({marks})", chunk).fetchall()
            for e in self._entries(rows):
                found[e.memory.id] = e
        return found

    def id_for_hash(self, h: str) -> str | None:
        row = self.db.execute("SELECT id FROM docs WHERE hash = ? ORDER BY created_ts LIMIT 1", (h,)).fetchone()
        return row[0] if row else None

    def id_for_path(self, path: str) -> str | None:
        row = self.db.execute("SELECT id FROM docs WHERE path = ?", (path,)).fetchone()
        return row[0] if row else None

    def file_index(self, paths: Iterable[str] | None = None) -> dict[str, tuple[str, FileState]]:
        """path -> (id, state as last indexed), for reconcile: every row, or just these paths'."""
        sql = "SELECT path, id, size, mtime_ns, ino FROM docs"
        if paths is None:
            rows = self.db.execute(sql)
        else:
            chunks = _chunks(sorted(paths), 500)
            rows = (r for c in chunks for r in self.db.execute(f"{sql} WHERE path IN ({','.join('?' * len(c))})", c))
        return {path: (mem_id, FileState(size, mtime_ns, ino)) for path, mem_id, size, mtime_ns, ino in rows}

    def path_for_id(self, mem_id: str) -> str | None:
        row = self.db.execute("SELECT path FROM docs WHERE id = ?", (mem_id,)).fetchone()
        return row[0] if row else None

    def ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT id FROM docs")}

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM docs").fetchone()[0]

    # -- filtered reads -----------------------------------------------------------------------------

    @staticmethod
    def _where(f: Filters) -> tuple[str, list]:
        clauses, args = ["1"], []
        if f.tags:
            marks = ",".join("?" * len(f.tags))
            if f.match == "all":
                clauses.append(f"(SELECT count(*) FROM doc_tags t WHERE t.doc = d.rowid AND t.tag IN ({marks})) = ?")
                args += [*f.tags, len(set(f.tags))]
            else:
                clauses.append(f"d.rowid IN (SELECT doc FROM doc_tags WHERE tag IN ({marks}))")
                args += list(f.tags)
        if f.type is not None:
            clauses.append("d.type = ?")
            args.append(f.type)
        if f.since is not None:
            clauses.append("d.created_ts >= ?")
            args.append(_ts(f.since))
        if f.until is not None:
            clauses.append("d.created_ts < ?")
            args.append(_ts(f.until))
        return " AND ".join(clauses), args

    def list(self, f: Filters, limit: int | None = None, offset: int = 0) -> list[Entry]:
        """Newest first."""
        where, args = self._where(f)
        cols = ", ".join(f"d.{c.strip()}" for c in self._COLUMNS.split(","))
        sql = f"SELECT {cols} FROM docs d WHERE {where} ORDER BY d.created_ts DESC, d.id LIMIT ? OFFSET ?"
        return self._entries(self.db.execute(sql, args + [-1 if limit is None else limit, offset]).fetchall())

    def keyword(self, text: str, f: Filters, limit: int) -> list[str]:
        """Ids ranked by BM25 over the content, filters applied inside the query, best first."""
        match = _fts_query(text)
        if not match:
            return []
        where, args = self._where(f)
        sql = (f"SELECT d.id FROM fts JOIN docs d ON d.rowid = fts.rowid"
               f" WHERE fts MATCH ? AND {where} ORDER BY bm25(fts), d.id LIMIT ?")
        return [r[0] for r in self.db.execute(sql, [match, *args, limit])]

    # -- invalid files ------------------------------------------------------------------------------

    def set_invalid(self, path: str, state: FileState, reason: str) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO invalid(path, size, mtime_ns, ino, reason) VALUES (?,?,?,?,?)",
                            (path, state.size, state.mtime_ns, state.ino, reason))

    def invalid(self) -> list[Invalid]:
        return [Invalid(p, r, FileState(s, m, i)) for p, s, m, i, r
                in self.db.execute("SELECT path, size, mtime_ns, ino, reason FROM invalid ORDER BY path")]

    def forget_invalid(self, paths: Iterable[str]) -> None:
        with self._lock:
            self.db.executemany("DELETE FROM invalid WHERE path = ?", [(p,) for p in paths])

    # -- vector sync --------------------------------------------------------------------------------

    def unsynced(self) -> list[Entry]:
        """Rows whose vector-index record is missing or out of date."""
        return self._entries(self.db.execute(
            f"SELECT {self._COLUMNS} FROM docs WHERE synced_fp IS NOT vec_fp").fetchall())

    def mark_synced(self, ids: Iterable[str]) -> None:
        with self._lock:
            self.db.executemany("UPDATE docs SET synced_fp = vec_fp WHERE id = ?", [(i,) for i in ids])

    def mark_unsynced(self, ids: Iterable[str]) -> None:
        with self._lock:
            self.db.executemany("UPDATE docs SET synced_fp = NULL WHERE id = ?", [(i,) for i in ids])

    # -- embedding cache ----------------------------------------------------------------------------

    def _cache_rows(self, model: str, hashes: Iterable[str], columns: str) -> Iterator[tuple]:
        unique = list(set(hashes))
        for chunk in _chunks(unique, 500):
            marks = ",".join("?" * len(chunk))
            yield from self.db.execute(
                f"SELECT {columns} FROM embed_cache WHERE model = ? AND hash IN ({marks})", [model, *chunk])

    def cached_vectors(self, model: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        return {h: np.frombuffer(blob, dtype=np.float32) for h, blob in self._cache_rows(model, hashes, "hash, vector")}

    def uncached(self, model: str, hashes: Iterable[str]) -> set[str]:
        """The hashes with no cached vector for the model (without reading any vector)."""
        missing = set(hashes)
        return missing - {h for (h,) in self._cache_rows(model, missing, "hash")}

    def cache_vectors(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        with self._lock:
            self.db.executemany("INSERT OR REPLACE INTO embed_cache(model, hash, vector) VALUES (?, ?, ?)",
                                [(model, h, v.astype(np.float32).tobytes()) for h, v in vectors.items()])

    def cache_size(self) -> int:
        return self.db.execute("SELECT count(*) FROM embed_cache").fetchone()[0]


class _Transaction:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    """Re-entrant: an inner `with` joins the outer transaction."""

    def __enter__(self):
        self.catalog._lock.acquire()
        self.outer = not self.catalog.db.in_transaction
        if self.outer:
            self.catalog.db.execute("BEGIN IMMEDIATE")
        return self.catalog

    def __exit__(self, exc_type, exc, tb):
        try:
            if self.outer:
                self.catalog.db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.catalog._lock.release()


def _chunks(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
