"""The catalog's SQLite schema: the tables a new catalog starts with (SCHEMA, version 1 plus columns
the migrations then skip), the numbered migrations that bring an older one up to SCHEMA_VERSION, and
the key/value and access tables made after them (SCHEMA_KV). memfs.catalog applies them.
"""

from __future__ import annotations

SCHEMA_VERSION = 5

# Numbered migrations, each run once, in order, inside one transaction (simonw/llm's way). A catalog is
# derived, so a migration works from what the catalog holds: it must never need a file read, and it
# must leave every row's sync state as it was. A new catalog starts from
# SCHEMA (which has some of these columns already: those are skipped) as version 1.
MIGRATIONS: dict[int, str] = {
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
    # 4 (issue #26): the cache keeps only the vectors the index does not hold yet (memfs.embed_cache),
    # not a second copy of every vector. The space goes back by a VACUUM after this (Catalog._vacuum).
    4: """
    DELETE FROM embed_cache WHERE hash NOT IN (SELECT hash FROM docs WHERE synced_fp IS NOT vec_fp);
    """,
    # 5 (issue #26): the fingerprints as digests (catalog_rows.fingerprint_digest, the SQL function
    # memfs_fp). Equal ones stay equal, different ones different, NULL stays NULL: no row changes state.
    5: """
    UPDATE docs SET vec_fp = memfs_fp(vec_fp), synced_fp = memfs_fp(synced_fp) WHERE length(vec_fp) > 16;
    """,
}


SCHEMA = """
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
SCHEMA_KV = """
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

