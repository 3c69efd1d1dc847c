"""Writers of each source system's real on-disk schema, for import tests and the import benchmark.

Every schema below is copied from the system's own source (named at each function); the writers use
the system's own value encoding, so memfs reads exactly what those programs leave behind.
"""

from __future__ import annotations

import base64
import json
import pickle
import sqlite3
import time
from datetime import datetime
from pathlib import Path

import numpy as np


def write_swarm_db(path: Path, rows: list[dict]) -> Path:
    """claude-flow's `.swarm/memory.db` (ruvnet/claude-flow src/memory/sqlite-store.js, v2.x; the same
    table is documented in bar181/swarm-setup .claude/MEMORY_SYSTEM_GUIDE.md). Times are Unix
    seconds; `value` is the string, or JSON.stringify of an object; WAL mode, as claude-flow opens it.

    rows: dicts with key, value, namespace, and optionally metadata (dict), ttl, created_at, …
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript("""
        CREATE TABLE IF NOT EXISTS memory_entries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            namespace TEXT NOT NULL DEFAULT 'default',
            metadata TEXT,
            created_at INTEGER DEFAULT (strftime('%s', 'now')),
            updated_at INTEGER DEFAULT (strftime('%s', 'now')),
            accessed_at INTEGER DEFAULT (strftime('%s', 'now')),
            access_count INTEGER DEFAULT 0,
            ttl INTEGER,
            expires_at INTEGER,
            UNIQUE(key, namespace)
        );
        CREATE INDEX IF NOT EXISTS idx_memory_namespace ON memory_entries(namespace);
        CREATE INDEX IF NOT EXISTS idx_memory_expires ON memory_entries(expires_at);
        CREATE INDEX IF NOT EXISTS idx_memory_accessed ON memory_entries(accessed_at);
    """)
    now = int(time.time())
    with db:
        for r in rows:
            value = r["value"] if isinstance(r["value"], str) else json.dumps(r["value"])
            created = r.get("created_at", now - 86400)
            ttl = r.get("ttl")
            db.execute(
                "INSERT INTO memory_entries (key, value, namespace, metadata, created_at, updated_at, accessed_at,"
                " access_count, ttl, expires_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (r["key"], value, r.get("namespace", "default"),
                 json.dumps(r["metadata"]) if r.get("metadata") is not None else None, created,
                 r.get("updated_at", created), r.get("accessed_at", created), r.get("access_count", 0), ttl,
                 r.get("expires_at", created + ttl if ttl else None)))
    db.close()
    return path


def write_extended_memory_db(path: Path, items: dict[str, object], *, pickled: dict[str, object] | None = None) -> Path:
    """The extended-memory service's SQLite (sutazai/sutazaiapp
    docker/mcp-services/extended-memory-persistent/server.py): `memory_store` and `metadata` tables,
    values serialized as its `serialize_value` does (json.dumps + the Python type name; objects JSON
    cannot hold as base64 of their pickle, type "pickle")."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE IF NOT EXISTS memory_store (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL,
            type TEXT NOT NULL,
            created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            accessed_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
            access_count INTEGER DEFAULT 1
        );
        CREATE TABLE IF NOT EXISTS metadata (
            key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
        );
        CREATE INDEX IF NOT EXISTS idx_memory_updated ON memory_store(updated_at DESC);
        CREATE INDEX IF NOT EXISTS idx_memory_accessed ON memory_store(accessed_at DESC);
    """)
    db.execute("INSERT OR IGNORE INTO metadata (key, value) VALUES ('version', '2.0.0'), ('initialized', ?)",
               (datetime.utcnow().isoformat(),))

    def serialize(value):  # the service's serialize_value
        if value is None:
            return "null", "none"
        if isinstance(value, (str, int, float, bool, dict, list)):
            return json.dumps(value), type(value).__name__
        return base64.b64encode(pickle.dumps(value)).decode("utf-8"), "pickle"

    with db:
        for n, (key, value) in enumerate({**items, **(pickled or {})}.items()):
            text, kind = serialize(value)
            stamp = datetime(2025, 8, 20, 18, 50, n % 60)
            db.execute("INSERT INTO memory_store (key, value, type, created_at, updated_at, accessed_at, access_count)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)", (key, text, kind, stamp, stamp, stamp, n + 1))
    db.close()
    return path


def write_mms_sqlite(path: Path, memories: list[dict], vectors: np.ndarray | None = None) -> Path:
    """mcp-memory-service's `sqlite_vec.db` (doobidoo/mcp-memory-service
    src/mcp_memory_service/storage/sqlite_vec.py): `metadata`, `memories` (tags comma-joined, times as
    epoch floats and ISO text) and the sqlite-vec `vec0` table `memory_embeddings` (rowid = memories.id),
    created through the real sqlite-vec extension (Python's sqlite3 cannot load extensions here; apsw can).
    """
    import apsw
    import sqlite_vec

    path.parent.mkdir(parents=True, exist_ok=True)
    db = apsw.Connection(str(path))
    db.enable_load_extension(True)
    db.load_extension(sqlite_vec.loadable_path())
    dim = vectors.shape[1] if vectors is not None else 384
    db.execute("CREATE TABLE IF NOT EXISTS metadata (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    db.execute("""
        CREATE TABLE IF NOT EXISTS memories (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            content_hash TEXT UNIQUE NOT NULL,
            content TEXT NOT NULL,
            tags TEXT,
            memory_type TEXT,
            metadata TEXT,
            created_at REAL,
            updated_at REAL,
            created_at_iso TEXT,
            updated_at_iso TEXT
        )""")
    db.execute(f"CREATE VIRTUAL TABLE IF NOT EXISTS memory_embeddings USING vec0("
               f"content_embedding FLOAT[{dim}] distance_metric=cosine)")
    db.execute("INSERT OR REPLACE INTO metadata (key, value) VALUES ('distance_metric', 'cosine')")
    import hashlib

    for n, m in enumerate(memories):
        created = m.get("created_at", 1_700_000_000.0 + n)
        iso = datetime.utcfromtimestamp(created).isoformat() + "Z"
        db.execute("INSERT INTO memories (content_hash, content, tags, memory_type, metadata, created_at, updated_at,"
                   " created_at_iso, updated_at_iso) VALUES (?,?,?,?,?,?,?,?,?)",
                   (hashlib.sha256(m["content"].encode()).hexdigest(), m["content"], ",".join(m.get("tags", [])),
                    m.get("memory_type", "note"), json.dumps(m.get("metadata", {})), created, created, iso, iso))
        rowid = db.last_insert_rowid()
        if vectors is not None:
            db.execute("INSERT INTO memory_embeddings (rowid, content_embedding) VALUES (?, ?)",
                       (rowid, sqlite_vec.serialize_float32(vectors[n].tolist())))
    db.close()
    return path


def write_mms_json(path: Path, memories: list[dict], vectors: np.ndarray | None = None) -> Path:
    """mcp-memory-service's JSON export (doobidoo/mcp-memory-service src/mcp_memory_service/sync/
    exporter.py, the shape its importer.py reads): export_metadata + memories[]."""
    import hashlib

    out = []
    for n, m in enumerate(memories):
        created = m.get("created_at", 1_700_000_000.0 + n)
        item = {"content": m["content"], "content_hash": hashlib.sha256(m["content"].encode()).hexdigest(),
                "tags": m.get("tags", []), "created_at": created,
                "created_at_iso": datetime.utcfromtimestamp(created).isoformat() + "Z",
                "updated_at": created, "updated_at_iso": datetime.utcfromtimestamp(created).isoformat() + "Z",
                "memory_type": m.get("memory_type", "note"), "metadata": m.get("metadata", {})}
        if vectors is not None:
            item["embedding"] = vectors[n].tolist()
        out.append(item)
    doc = {"export_metadata": {"source_machine": "laptop", "export_timestamp": "2025-06-01T10:00:00",
                               "total_memories": len(out), "database_path": "/home/u/.local/share/mcp-memory/sqlite_vec.db",
                               "platform": "Linux", "python_version": "3.11.9", "include_embeddings": vectors is not None,
                               "filter_tags": [], "exporter_version": "5.0.0"},
           "memories": out}
    path.write_text(json.dumps(doc, indent=2))
    return path


def write_kg_jsonl(path: Path, entities: list[dict], relations: list[dict]) -> Path:
    """The MCP reference memory server's `memory.jsonl` (modelcontextprotocol/servers src/memory/index.ts
    saveGraph): one JSON object a line, entities then relations, each with its `type`."""
    lines = [json.dumps({"type": "entity", **e}) for e in entities]
    lines += [json.dumps({"type": "relation", **r}) for r in relations]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_swarm3_db(path: Path, rows: list[dict]) -> Path:
    """claude-flow 3.x's `.swarm/memory.db` table `memory_entries`, its schema copied from claude-flow
    3.43.0 (v3/@claude-flow/cli/dist/src/memory/memory-initializer.js): id TEXT, content, times in
    milliseconds, tags and embedding as JSON text, status active|archived|deleted. For the benchmark at
    sizes the CLI cannot write in reasonable time; the tests read what claude-flow itself wrote
    (tests/fixtures/peers/).

    rows: dicts with key, content, namespace, and optionally tags, metadata, embedding (list), status, …
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE IF NOT EXISTS memory_entries (
          id TEXT PRIMARY KEY, key TEXT NOT NULL, namespace TEXT DEFAULT 'default', content TEXT NOT NULL,
          type TEXT DEFAULT 'semantic' CHECK(type IN ('semantic', 'episodic', 'procedural', 'working', 'pattern')),
          embedding TEXT, embedding_model TEXT DEFAULT 'local', embedding_dimensions INTEGER,
          tags TEXT, metadata TEXT, owner_id TEXT,
          provenance_type TEXT DEFAULT 'unknown' CHECK(provenance_type IN (
            'user_claim', 'agent_output', 'system_observation', 'tool_result', 'unknown')),
          created_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now') * 1000),
          updated_at INTEGER NOT NULL DEFAULT (strftime('%s', 'now') * 1000),
          expires_at INTEGER, last_accessed_at INTEGER, access_count INTEGER DEFAULT 0,
          status TEXT DEFAULT 'active' CHECK(status IN ('active', 'archived', 'deleted')),
          UNIQUE(namespace, key));
        CREATE INDEX IF NOT EXISTS idx_memory_namespace ON memory_entries(namespace);
        CREATE INDEX IF NOT EXISTS idx_memory_status ON memory_entries(status);
    """)
    now = int(time.time() * 1000)
    with db:
        for n, r in enumerate(rows):
            emb = r.get("embedding")
            created = r.get("created_at", now - 86_400_000)
            db.execute(
                "INSERT INTO memory_entries (id, key, namespace, content, embedding, embedding_model,"
                " embedding_dimensions, tags, metadata, created_at, updated_at, expires_at, last_accessed_at,"
                " access_count, status) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (f"entry_{created}_{n:06d}", r["key"], r.get("namespace", "default"), r["content"],
                 json.dumps([float(x) for x in emb]) if emb is not None else None,
                 r.get("embedding_model", "Xenova/all-MiniLM-L6-v2") if emb is not None else "local",
                 len(emb) if emb is not None else None, json.dumps(r.get("tags", [])),
                 json.dumps(r.get("metadata", {})), created, r.get("updated_at", created), r.get("expires_at"),
                 r.get("last_accessed_at"), r.get("access_count", 0), r.get("status", "active")))
    db.close()
    return path
