"""The catalog in data/indexes/catalog.sqlite: what the files hold, in a form that is quick to ask.

One row per memory (id <-> path, content hash, the file's size/mtime/inode, filterable fields), a tag
table, an FTS5 keyword index over the content, the files found invalid, and the embedding cache keyed by
(model id, content hash). All of it is derived from data/memories/ and can be rebuilt by `reindex`.
"""

from __future__ import annotations

import logging
import math
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import orjson

from .documents import Memory, from_dict, parse_time
from .errors import InvalidDocumentError
from .filestore import FileState
from .query import Filters, QueryPlan, Term, analyze

log = logging.getLogger("memfs.catalog")

SCHEMA_VERSION = 3

# Numbered migrations, each run once, in order, inside one transaction (simonw/llm's way). A catalog is
# derived, so a migration may only add: it must never need a file read. A new catalog starts from
# _SCHEMA (which has some of these columns already: those are skipped) as version 1.
_MIGRATIONS: dict[int, str] = {
    # 2 (issue #14): the files' ctime (docs, invalid), and the id a duplicate was refused for. Every
    # row's ctime is unknown (0), so the next reconcile re-reads each file once; the embedding cache
    # keeps that from embedding anything.
    2: """
    ALTER TABLE docs ADD COLUMN ctime_ns INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE invalid ADD COLUMN ctime_ns INTEGER;
    ALTER TABLE invalid ADD COLUMN dup_id TEXT;
    """,
    # 3 (issue #13): key/value lookups and TTL. `namespace`/`key`/`expires_ts` mirror the document;
    # rows written before get them from `body` (Catalog.backfill_keys), without reading any file.
    3: """
    ALTER TABLE docs ADD COLUMN namespace TEXT;
    ALTER TABLE docs ADD COLUMN key TEXT;
    ALTER TABLE docs ADD COLUMN expires_ts REAL;
    """,
}

# Identifiers and quoted phrases weigh this many times their IDF in keyword coverage: a query that names
# something is about that thing more than about the words around it.
EXACT_BOOST = 3.0

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
    ctime_ns   INTEGER NOT NULL DEFAULT 0,
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
    path TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER, ino INTEGER, reason TEXT NOT NULL,
    ctime_ns INTEGER,
    dup_id TEXT     -- set when the file was refused because another file holds this id
);
-- A rowid table on purpose: WITHOUT ROWID packs 1.5 KB vectors into its key B-tree at a third of
-- the density (94 MB instead of ~40 MB at 20k memories, measured).
CREATE TABLE IF NOT EXISTS embed_cache (
    model TEXT NOT NULL, hash TEXT NOT NULL, vector BLOB NOT NULL, PRIMARY KEY (model, hash)
);
"""

# Created after the migrations, which give `docs` the columns these index.
_SCHEMA_V2 = """
-- Not UNIQUE: files are the truth and a person can write two files with one (namespace, key); the
-- key/value layer keeps them unique on write and serves the newest on read (memfs/kv.py).
CREATE INDEX IF NOT EXISTS docs_ns_key ON docs(namespace, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS docs_expires ON docs(expires_ts) WHERE expires_ts IS NOT NULL;
-- Reads are counted here, never by rewriting memory files (issue #13). Keyed by memory id and not
-- removed with the row, so a move or an edit keeps the count; lost only when indexes/ is deleted.
CREATE TABLE IF NOT EXISTS access (
    id TEXT PRIMARY KEY, accessed_ts REAL NOT NULL, access_count INTEGER NOT NULL DEFAULT 0
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
    dup_id: str | None = None  # refused because another file holds this id


def _ts(t: datetime) -> float:
    return t.timestamp()


def vector_fingerprint(m: Memory) -> str:
    """Everything the vector index stores for a memory; a change means it must be told again."""
    return orjson.dumps([m.content_hash, m.type, _ts(m.created_at), list(m.tags)]).decode()


def _fts_query(text: str) -> str:
    """The FTS5 MATCH expression for a query: its terms (query.analyze: stop words dropped, identifiers
    and quoted phrases kept whole), each a quoted phrase, OR-ed together.

    Quoting makes user text safe (no FTS5 syntax errors from `-`, `:` or quotes), and a phrase keeps an
    identifier such as `PROJ-1234` or `E4417` whole: the tokenizer splits `PROJ-1234` into two adjacent
    tokens, which the phrase matches exactly.
    """
    return analyze(text).fts_query()


class Catalog:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection, shared by the store's threads under this lock (the watcher adds a thread).
        self._lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        version = self._schema_version()
        self.db.executescript(_SCHEMA)
        self._vocab = False  # temp.fts_vocab created (per connection)
        version = version or "1"  # _SCHEMA is version 1 plus columns the migrations then skip
        if int(version) < SCHEMA_VERSION:
            self._migrate(int(version))
        elif int(version) > SCHEMA_VERSION:
            from .errors import UnsupportedFormatError

            raise UnsupportedFormatError(
                f"catalog schema {version} is newer than this memfs understands ({SCHEMA_VERSION}); "
                "upgrade memfs, or delete data/indexes/ and run `memfs reindex` to rebuild it",
                str(path),
            )
        self.db.executescript(_SCHEMA_V2)

    def _migrate(self, version: int) -> None:
        with self.transaction():
            for n in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in filter(str.strip, _MIGRATIONS[n].split(";")):
                    # A catalog made by this version's _SCHEMA may already have a column; skip it.
                    if m := re.match(r"\s*ALTER TABLE (\w+) ADD COLUMN (\w+)", stmt):
                        cols = {r[1] for r in self.db.execute(f"PRAGMA table_info({m.group(1)})")}
                        if m.group(2) in cols:
                            continue
                    self.db.execute(stmt)
            if version < 3:
                self.backfill_keys()
            self.set_meta("schema_version", str(SCHEMA_VERSION))

    def backfill_keys(self) -> None:
        """Fill namespace/key/expires_ts from each row's stored body (no file is read)."""
        rows = self.db.execute("SELECT rowid, body FROM docs").fetchall()
        updates = []
        for rowid, body in rows:
            doc = orjson.loads(body)
            expires = doc.get("expires_at")
            updates.append((doc.get("namespace"), doc.get("key"),
                            _ts(parse_time(expires)) if isinstance(expires, str) else None, rowid))
        self.db.executemany("UPDATE docs SET namespace=?, key=?, expires_ts=? WHERE rowid=?", updates)

    def _schema_version(self) -> str | None:
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
            return None
        return self.get_meta("schema_version")

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
            values = (m.id, path, m.content_hash, state.size, state.mtime_ns, state.ino, state.ctime_ns,
                      m.type, _ts(m.created_at), _ts(m.updated_at), m.content, orjson.dumps(body),
                      vector_fingerprint(m), m.namespace, m.key,
                      _ts(m.expires_at) if m.expires_at is not None else None)
            if old:
                rowid = old[0]
                self.db.execute("INSERT INTO fts(fts, rowid, content) VALUES ('delete', ?, ?)", (rowid, old[1]))
                self.db.execute(
                    "UPDATE docs SET id=?, path=?, hash=?, size=?, mtime_ns=?, ino=?, ctime_ns=?, type=?, created_ts=?,"
                    " updated_ts=?, content=?, body=?, vec_fp=?, namespace=?, key=?, expires_ts=? WHERE rowid=?",
                    values + (rowid,))
                self.db.execute("DELETE FROM doc_tags WHERE doc = ?", (rowid,))
            else:
                rowid = self.db.execute(
                    "INSERT INTO docs(id, path, hash, size, mtime_ns, ino, ctime_ns, type, created_ts, updated_ts,"
                    " content, body, vec_fp, namespace, key, expires_ts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    values).lastrowid
            self.db.execute("INSERT INTO fts(rowid, content) VALUES (?, ?)", (rowid, m.content))
            self.db.executemany("INSERT INTO doc_tags(tag, doc) VALUES (?, ?)", [(t, rowid) for t in m.tags])
            self.db.execute("DELETE FROM invalid WHERE path = ?", (path,))
            return displaced

    def set_state(self, mem_id: str, path: str, state: FileState) -> None:
        """The file moved or was touched but says the same thing: record where and how it is now."""
        with self._lock:
            self.db.execute("UPDATE docs SET path=?, size=?, mtime_ns=?, ino=?, ctime_ns=? WHERE id=?",
                            (path, state.size, state.mtime_ns, state.ino, state.ctime_ns, mem_id))
            self.db.execute("DELETE FROM invalid WHERE path = ?", (path,))

    def move_row(self, mem_id: str, path: str) -> None:
        """The row's file moved but is invalid now: the last good version follows it to `path`.

        The row keeps the state it was read from, so it never matches the invalid file: when the file
        is fixed, reconcile reads it again.
        """
        with self._lock:
            self.db.execute("UPDATE docs SET path=? WHERE id=?", (path, mem_id))

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

    _COLUMNS = "id, path, hash, size, mtime_ns, ino, ctime_ns, content, body"

    @staticmethod
    def _entry(row) -> Entry:
        mem_id, path, h, size, mtime_ns, ino, ctime_ns, content, body = row
        doc = orjson.loads(body)
        doc["content"] = content
        # Rows are only written from documents that parsed, so this cannot fail on our own data.
        m = from_dict(doc, default_id=mem_id, default_time=datetime.now(timezone.utc), check_limits=False)
        return Entry(m, path, h, FileState(size, mtime_ns, ino, ctime_ns))

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
        sql = "SELECT path, id, size, mtime_ns, ino, ctime_ns FROM docs"
        if paths is None:
            rows = self.db.execute(sql)
        else:
            chunks = _chunks(sorted(paths), 500)
            rows = (r for c in chunks for r in self.db.execute(f"{sql} WHERE path IN ({','.join('?' * len(c))})", c))
        return {path: (mem_id, FileState(size, mtime_ns, ino, ctime_ns))
                for path, mem_id, size, mtime_ns, ino, ctime_ns in rows}

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
        # An expired memory is gone from list and search at once; the sweep removes its file later.
        clauses, args = ["(d.expires_ts IS NULL OR d.expires_ts > ?)"], [time.time()]
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

    def keyword(self, query: "str | QueryPlan", f: Filters, limit: int) -> list[str]:
        """Ids ranked by BM25 over the content, filters applied inside the query, best first."""
        plan = analyze(query) if isinstance(query, str) else query
        match = plan.fts_query()
        if not match:
            return []
        where, args = self._where(f)
        sql = (f"SELECT d.id FROM fts JOIN docs d ON d.rowid = fts.rowid"
               f" WHERE fts MATCH ? AND {where} ORDER BY bm25(fts), d.id LIMIT ?")
        return [r[0] for r in self.db.execute(sql, [match, *args, limit])]

    def term_weights(self, plan: QueryPlan) -> dict[Term, float]:
        """Each term's weight: its rarity over the whole catalog (BM25's IDF), identifiers and quoted
        phrases counted EXACT_BOOST times. A word every memory has weighs almost nothing."""
        n = self.count()
        weights: dict[Term, float] = {}
        for t in plan.terms:
            df = self._doc_freq(t)
            idf = math.log(1.0 + (n - df + 0.5) / (df + 0.5))
            weights[t] = idf * (EXACT_BOOST if t.exact else 1.0)
        return weights

    def _doc_freq(self, t: Term) -> int:
        """How many memories contain the term: the FTS5 vocabulary for one token, a count for a phrase."""
        with self._lock:
            if len(t.tokens) == 1:
                if not self._vocab:
                    self.db.execute("CREATE VIRTUAL TABLE IF NOT EXISTS temp.fts_vocab USING fts5vocab(main, fts, row)")
                    self._vocab = True
                row = self.db.execute("SELECT doc FROM temp.fts_vocab WHERE term = ?", t.tokens).fetchone()
                return row[0] if row else 0
            return self.db.execute("SELECT count(*) FROM fts WHERE fts MATCH ?",
                                   ['"' + " ".join(t.tokens) + '"']).fetchone()[0]

    # -- invalid files ------------------------------------------------------------------------------

    def set_invalid(self, path: str, state: FileState, reason: str, dup_id: str | None = None) -> None:
        with self._lock:
            self.db.execute("INSERT OR REPLACE INTO invalid(path, size, mtime_ns, ino, ctime_ns, reason, dup_id)"
                            " VALUES (?,?,?,?,?,?,?)",
                            (path, state.size, state.mtime_ns, state.ino, state.ctime_ns, reason, dup_id))

    def invalid(self) -> list[Invalid]:
        return [Invalid(p, r, FileState(s, m, i, c or 0), d) for p, s, m, i, c, r, d in self.db.execute(
            "SELECT path, size, mtime_ns, ino, ctime_ns, reason, dup_id FROM invalid ORDER BY path")]

    def invalid_at(self, path: str) -> Invalid | None:
        row = self.db.execute("SELECT path, size, mtime_ns, ino, ctime_ns, reason, dup_id FROM invalid"
                              " WHERE path = ?", (path,)).fetchone()
        return Invalid(row[0], row[5], FileState(row[1], row[2], row[3], row[4] or 0), row[6]) if row else None

    def orphaned_duplicates(self) -> list[str]:
        """Files refused as duplicates of an id that no valid file holds any longer: its row is gone, or
        serves the last good version of a file now invalid (issue #14, finding 1)."""
        return [r[0] for r in self.db.execute(
            "SELECT i.path FROM invalid i WHERE i.dup_id IS NOT NULL AND ("
            " NOT EXISTS (SELECT 1 FROM docs d WHERE d.id = i.dup_id)"
            " OR EXISTS (SELECT 1 FROM docs d JOIN invalid j ON j.path = d.path WHERE d.id = i.dup_id))"
            " ORDER BY i.path")]

    def forget_invalid(self, paths: Iterable[str]) -> None:
        with self._lock:
            self.db.executemany("DELETE FROM invalid WHERE path = ?", [(p,) for p in paths])

    # -- vector sync --------------------------------------------------------------------------------

    def unsynced(self) -> list[Entry]:
        """Rows whose vector-index record is missing or out of date."""
        return self._entries(self.db.execute(
            f"SELECT {self._COLUMNS} FROM docs WHERE synced_fp IS NOT vec_fp").fetchall())

    def has_unsynced(self) -> bool:
        return self.db.execute("SELECT 1 FROM docs WHERE synced_fp IS NOT vec_fp LIMIT 1").fetchone() is not None

    def unsynced_paths(self) -> list[tuple[str, str, bool]]:
        """(id, path, never synced) of the rows unsynced() would return, without their content."""
        return [(i, p, bool(n)) for i, p, n in self.db.execute(
            "SELECT id, path, synced_fp IS NULL FROM docs WHERE synced_fp IS NOT vec_fp")]

    def unsynced_among(self, ids: list[str]) -> list[Entry]:
        """unsynced(), for just these ids."""
        found: list[Entry] = []
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            found += [self._entry(r) for r in self.db.execute(
                f"SELECT {self._COLUMNS} FROM docs WHERE synced_fp IS NOT vec_fp AND id IN ({marks})", chunk)]
        return found

    def mark_synced(self, ids: Iterable[str]) -> None:
        with self._lock:
            self.db.executemany("UPDATE docs SET synced_fp = vec_fp WHERE id = ?", [(i,) for i in ids])

    def mark_unsynced(self, ids: Iterable[str]) -> None:
        with self._lock:
            self.db.executemany("UPDATE docs SET synced_fp = NULL WHERE id = ?", [(i,) for i in ids])

    # -- key/value, expiry and access tracking (issue #13) -------------------------------------------

    def ids_for_key(self, namespace: str, key: str) -> list[str]:
        """Ids holding (namespace, key), newest first (more than one only if files were written by hand)."""
        return [r[0] for r in self.db.execute(
            "SELECT id FROM docs WHERE namespace = ? AND key = ? ORDER BY updated_ts DESC, id", (namespace, key))]

    def keys_in(self, namespace: str | None, now: float) -> list[tuple[str, str, str]]:
        """(namespace, key, id) of every live keyed memory, in one namespace or all."""
        sql = "SELECT namespace, key, id FROM docs WHERE key IS NOT NULL AND (expires_ts IS NULL OR expires_ts > ?)"
        args: list = [now]
        if namespace is not None:
            sql += " AND namespace = ?"
            args.append(namespace)
        return [tuple(r) for r in self.db.execute(sql + " ORDER BY namespace, key", args)]  # type: ignore[misc]

    def expired(self, now: float) -> list[tuple[str, str]]:
        """(id, path) of every memory whose expires_at has passed."""
        return [tuple(r) for r in self.db.execute(  # type: ignore[misc]
            "SELECT id, path FROM docs WHERE expires_ts IS NOT NULL AND expires_ts <= ? ORDER BY expires_ts", (now,))]

    def is_expired(self, mem_id: str, now: float) -> bool:
        row = self.db.execute("SELECT expires_ts FROM docs WHERE id = ?", (mem_id,)).fetchone()
        return bool(row and row[0] is not None and row[0] <= now)

    def touch(self, ids: Iterable[str], now: float) -> None:
        """Count a read of each memory: accessed_at = now, access_count + 1."""
        with self._lock:
            self.db.executemany(
                "INSERT INTO access(id, accessed_ts, access_count) VALUES (?, ?, 1) ON CONFLICT(id) DO UPDATE"
                " SET accessed_ts = excluded.accessed_ts, access_count = access_count + 1", [(i, now) for i in ids])

    def set_access(self, items: Iterable[tuple[str, float, int]]) -> None:
        """Seed (id, accessed_ts, access_count) rows, e.g. carried over by an import."""
        with self._lock:
            self.db.executemany("INSERT OR REPLACE INTO access(id, accessed_ts, access_count) VALUES (?, ?, ?)",
                                list(items))

    def access_of(self, ids: Iterable[str]) -> dict[str, tuple[float, int]]:
        found: dict[str, tuple[float, int]] = {}
        for chunk in _chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for i, ts, n in self.db.execute(
                    f"SELECT id, accessed_ts, access_count FROM access WHERE id IN ({marks})", chunk):
                found[i] = (ts, n)
        return found

    def forget_access(self, ids: Iterable[str]) -> None:
        with self._lock:
            self.db.executemany("DELETE FROM access WHERE id = ?", [(i,) for i in ids])

    def hashes(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT hash FROM docs")}

    def key_hashes(self) -> dict[tuple[str, str], str]:
        """(namespace, key) -> content hash of the newest live (unexpired) memory holding it."""
        out: dict[tuple[str, str], str] = {}
        for ns, key, h in self.db.execute(
                "SELECT namespace, key, hash FROM docs WHERE key IS NOT NULL"
                " AND (expires_ts IS NULL OR expires_ts > ?) ORDER BY updated_ts", (time.time(),)):
            out[(ns, key)] = h
        return out

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
