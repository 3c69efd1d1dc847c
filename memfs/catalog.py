"""The catalog in data/indexes/catalog.sqlite: what the files hold, in a form that is quick to ask.

One row per memory (id <-> path, content hash, the file's size/mtime/inode, filterable fields), a tag
table, an FTS5 keyword index over the content, the files found invalid, and the embedding cache keyed by
(model id, content hash). All of it is derived from data/memories/ and can be rebuilt by `reindex`.

Catalog owns the connection, the documents, filtered and keyword reads, invalid files and vector sync;
its other jobs live next to it: the schema and migrations (memfs.catalog_schema), the row <-> Entry
mapping (memfs.catalog_rows), key/value, expiry and access (memfs.catalog_kv), and the embedding cache
(memfs.embed_cache).
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable

import orjson

from .catalog_kv import KeyValueIndex
from .catalog_rows import COLUMNS, Entry, Invalid, chunks, entry_from_row, fingerprint_digest, ts, vector_fingerprint
from .catalog_schema import MIGRATIONS, SCHEMA, SCHEMA_KV, SCHEMA_VERSION
from .documents import Memory, parse_time
from .embed_cache import EmbeddingCache
from .errors import InvalidDocumentError
from .filestore import FileState
from .query import Filters, QueryPlan, Term, analyze

log = logging.getLogger("memfs.catalog")


# Identifiers and quoted phrases weigh this many times their IDF in keyword coverage: a query that names
# something is about that thing more than about the words around it.
EXACT_BOOST = 3.0


class Catalog(KeyValueIndex, EmbeddingCache):
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # One connection, shared by the store's threads under this lock (the watcher adds a thread).
        self._lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        # Takes effect only in a new file (before its first table): pages freed go back to the file
        # system on `reclaim` (memfs.embed_cache). An older catalog gets it by one VACUUM (`_vacuum`).
        self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.create_function("memfs_fp", 1, fingerprint_digest, deterministic=True)  # migration 5
        version = self._schema_version()
        self.db.executescript(SCHEMA)
        self._vocab = False  # temp.fts_vocab created (per connection)
        version = version or "1"  # SCHEMA is version 1 plus columns the migrations then skip
        if int(version) < SCHEMA_VERSION:
            self._migrate(int(version))
        elif int(version) > SCHEMA_VERSION:
            from .errors import UnsupportedFormatError

            raise UnsupportedFormatError(
                f"catalog schema {version} is newer than this memfs understands ({SCHEMA_VERSION}); "
                "upgrade memfs, or delete data/indexes/ and run `memfs reindex` to rebuild it",
                str(path),
            )
        self.db.executescript(SCHEMA_KV)
        if self.db.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:  # made before it: see _vacuum
            self._vacuum()

    def _vacuum(self) -> None:
        """Turn on incremental auto-vacuum in a catalog made without it, which takes a VACUUM: a copy
        of the file, once (about a second at 20,000 memories). If another connection holds the file,
        it is left for the next open."""
        try:
            self.db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self.db.execute("VACUUM")
        except sqlite3.OperationalError as e:
            log.warning("could not compact the catalog %s now (%s); the next open tries again", self.path, e)

    def _migrate(self, version: int) -> None:
        with self.transaction():
            for n in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in filter(str.strip, MIGRATIONS[n].split(";")):
                    # A catalog made by this version's SCHEMA may already have a column; skip it.
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
                            ts(parse_time(expires)) if isinstance(expires, str) else None, rowid))
        self.db.executemany("UPDATE docs SET namespace=?, key=?, expires_ts=? WHERE rowid=?", updates)

    def _schema_version(self) -> str | None:
        if not self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone():
            return None
        return self.get_meta("schema_version")

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # space given back is a nicety; closing is not
            self.reclaim(at_least=64)
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
            del body["content"], body["format"], body["id"]  # in columns, or always FORMAT (entry_from_row)
            values = (m.id, path, m.content_hash, state.size, state.mtime_ns, state.ino, state.ctime_ns,
                      m.type, ts(m.created_at), ts(m.updated_at), m.content, orjson.dumps(body),
                      vector_fingerprint(m), m.namespace, m.key,
                      ts(m.expires_at) if m.expires_at is not None else None)
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
                out.append(entry_from_row(row))
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
        row = self.db.execute(f"SELECT {COLUMNS} FROM docs WHERE id = ?", (mem_id,)).fetchone()
        return entry_from_row(row) if row else None

    def get_many(self, ids: list[str]) -> dict[str, Entry]:
        found: dict[str, Entry] = {}
        for chunk in chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            rows = self.db.execute(f"SELECT {COLUMNS} FROM docs WHERE id IN ({marks})", chunk).fetchall()
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
            parts = chunks(sorted(paths), 500)
            rows = (r for c in parts for r in self.db.execute(f"{sql} WHERE path IN ({','.join('?' * len(c))})", c))
        return {path: (mem_id, FileState(size, mtime_ns, ino, ctime_ns))
                for path, mem_id, size, mtime_ns, ino, ctime_ns in rows}

    def path_for_id(self, mem_id: str) -> str | None:
        row = self.db.execute("SELECT path FROM docs WHERE id = ?", (mem_id,)).fetchone()
        return row[0] if row else None

    def ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT id FROM docs")}

    def count(self) -> int:
        return self.db.execute("SELECT count(*) FROM docs").fetchone()[0]

    def hashes(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT hash FROM docs")}

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
            args.append(ts(f.since))
        if f.until is not None:
            clauses.append("d.created_ts < ?")
            args.append(ts(f.until))
        return " AND ".join(clauses), args

    def list(self, f: Filters, limit: int | None = None, offset: int = 0) -> list[Entry]:
        """Newest first."""
        where, args = self._where(f)
        cols = ", ".join(f"d.{c.strip()}" for c in COLUMNS.split(","))
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
            f"SELECT {COLUMNS} FROM docs WHERE synced_fp IS NOT vec_fp").fetchall())

    def has_unsynced(self, excluding: set[str] | frozenset[str] = frozenset()) -> bool:
        """Some row waits for its vector, other than those `excluding` names."""
        rows = self.db.execute("SELECT id FROM docs WHERE synced_fp IS NOT vec_fp LIMIT ?", (len(excluding) + 1,))
        return any(r[0] not in excluding for r in rows)

    def unsynced_paths(self) -> list[tuple[str, str, bool]]:
        """(id, path, never synced) of the rows unsynced() would return, without their content."""
        return [(i, p, bool(n)) for i, p, n in self.db.execute(
            "SELECT id, path, synced_fp IS NULL FROM docs WHERE synced_fp IS NOT vec_fp")]

    def unsynced_among(self, ids: list[str]) -> list[Entry]:
        """unsynced(), for just these ids."""
        found: list[Entry] = []
        for chunk in chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            found += [entry_from_row(r) for r in self.db.execute(
                f"SELECT {COLUMNS} FROM docs WHERE synced_fp IS NOT vec_fp AND id IN ({marks})", chunk)]
        return found

    def mark_synced(self, ids: Iterable[str]) -> None:
        with self._lock:
            self.db.executemany("UPDATE docs SET synced_fp = vec_fp WHERE id = ?", [(i,) for i in ids])

    def mark_unsynced(self, ids: Iterable[str]) -> None:
        with self._lock:
            self.db.executemany("UPDATE docs SET synced_fp = NULL WHERE id = ?", [(i,) for i in ids])


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

