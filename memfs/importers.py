"""Import memories from the stores people run today (issue #13), with dedup, provenance and a record.

Each source format has a reader that turns the source into `SourceRecord`s: a memfs document dict
(DESIGN.md §3) with the record's location, or an error for that record. `import_sources` then

1. opens each source **read-only** (SQLite through a `mode=ro` URI; memfs never writes to a source)
   and reads every source whole before writing anything, so a corrupt or locked source imports nothing;
2. sorts every record into new / duplicate / updated / invalid / expired: by content hash (unless
   `dedup=False`), and by (namespace, key) for key/value sources, so running an import twice adds
   nothing;
3. reuses the vectors a source carries when they are the same model's — checked by re-embedding a
   sample and comparing, never assumed from a name — by seeding the embedding cache, so `add_many`
   embeds only what is left;
4. writes the new memories through `MemoryStore.add_many` (batched, with progress) and rewrites the
   updated ones; and keeps a migration record per source (`migrations.py`) that `verify` replays.

Formats and where each schema comes from:

| format            | source                                                                          |
|-------------------|---------------------------------------------------------------------------------|
| `memfs`           | `memfs export` (export.py)                                                      |
| `mms-json`        | mcp-memory-service's JSON export: `export_metadata` + `memories[]`, the fields its |
|                   | `src/mcp_memory_service/sync/importer.py` reads                                 |
| `mms-sqlite`      | mcp-memory-service's `sqlite_vec.db`: `memories` + sqlite-vec `memory_embeddings` |
|                   | (`src/mcp_memory_service/storage/sqlite_vec.py`); vectors read from vec0's shadow |
|                   | tables, so no extension is needed to read them                                  |
| `extended-memory` | the extended-memory service's `memory_store(key PRIMARY KEY, value, type, …)`   |
|                   | (sutazai/sutazaiapp `docker/mcp-services/extended-memory-persistent/server.py`)  |
| `swarm`           | claude-flow's `.swarm/memory.db` table `memory_entries(id, key, value, namespace, |
|                   | metadata, created_at, updated_at, accessed_at, access_count, ttl, expires_at,   |
|                   | UNIQUE(key, namespace))`                                                        |
| `kg-jsonl`        | the MCP reference memory server's `memory.jsonl` (entity and relation lines)    |
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import re
import sqlite3
import time
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator

import numpy as np
import orjson

from . import documents
from .documents import Memory, utcnow
from .errors import InvalidDocumentError, MemfsError
from .kv import DEFAULT_NAMESPACE, JSON, KV_TYPE, PICKLE, PICKLE_WARNING, TEXT, encode_value
from .results import Record

if TYPE_CHECKING:
    from .store import MemoryStore

log = logging.getLogger("memfs")

FORMATS = ("memfs", "mms-json", "mms-sqlite", "extended-memory", "swarm", "kg-jsonl")
# The tag each format's records get (`source:<name>`) unless --source-tag names another.
DEFAULT_SOURCE_NAMES = {"mms-json": "mcp-memory-service", "mms-sqlite": "mcp-memory-service",
                        "extended-memory": "extended-memory", "swarm": "claude-flow", "kg-jsonl": "mcp-memory"}
KG_NAMESPACE = "kg"
# Cosine similarity above which a source vector counts as this model's (same text, same model: ~1.0;
# another model of the same size: far lower, or a different dimension altogether).
SAME_MODEL_MIN_COSINE = 0.98
VECTOR_SAMPLE = 4
MAX_LISTED_INVALID = 100


class SourceError(MemfsError):
    """A source cannot be read at all (missing, corrupt, locked, unknown format): nothing is imported."""


@dataclass
class SourceRecord:
    location: str  # where in the source: "memory_entries id=42", "line 7", "memories[3]"
    doc: dict | None = None  # a memfs document, ready for add_many
    error: str | None = None
    vector: Any = None  # the source's own vector for this record, if it has one
    access: tuple[float, int] | None = None  # (accessed_at as Unix seconds, access_count)
    warning: str | None = None


@dataclass
class Source:
    path: Path
    format: str
    sha256: str
    size: int
    records: list[SourceRecord]
    notes: list[str] = field(default_factory=list)


# -- reading sources --------------------------------------------------------------------------------


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_path(path: Path) -> Path:
    """A claude-flow project or `.swarm/` folder means its memory.db."""
    if path.is_dir():
        for candidate in (path / "memory.db", path / ".swarm" / "memory.db"):
            if candidate.is_file():
                return candidate
        raise SourceError(f"{path} is a folder without a memory.db (nor .swarm/memory.db) to import")
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    return path


def connect_ro(path: Path) -> sqlite3.Connection:
    """Open a SQLite source read-only: memfs never writes to a source (not even a journal)."""
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode=ro"
    with open(path, "rb") as f:
        header = f.read(20)
    wal = path.with_name(path.name + "-wal")
    if len(header) == 20 and header[18] == 2 and not wal.exists():
        # A WAL database closed cleanly (claude-flow's): even a read-only open would create -wal and
        # -shm files beside it. `immutable` reads the file as it is and creates nothing; a writer that
        # starts meanwhile is caught by the SHA-256 taken before and after the read.
        uri += "&immutable=1"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=2.0)
        db.row_factory = sqlite3.Row
        # A corrupt file is found here, before any record is read, let alone written.
        problems = [r[0] for r in db.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as e:
        raise _sqlite_error(path, e) from None
    if problems != ["ok"]:
        db.close()
        raise SourceError(f"{path} is corrupt ({'; '.join(problems[:3])}); nothing was imported. "
                          "Recover it first (sqlite3 .recover) or import a backup of it")
    return db


def _sqlite_error(path: Path, e: sqlite3.Error) -> SourceError:
    text = str(e)
    if "locked" in text or "busy" in text:
        return SourceError(f"{path} is locked by another process ({text}); nothing was imported. Stop the "
                           "program writing to it, or copy the file (with its -wal) and import the copy")
    return SourceError(f"{path} cannot be read as SQLite ({text}); nothing was imported")


def _tables(db: sqlite3.Connection) -> dict[str, set[str]]:
    # Virtual tables are skipped: their module (sqlite-vec's vec0) is not loaded, and their data lies in
    # ordinary shadow tables anyway.
    names = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%'")]
    return {n: {c[1] for c in db.execute(f'PRAGMA table_info("{n}")')} for n in names}


def detect_format(path: Path) -> str:
    """Guess a source's format from its content (never from its name alone)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"SQLite format 3\x00"):
        db = connect_ro(path)
        try:
            tables = _tables(db)
        finally:
            db.close()
        if {"key", "value", "namespace"} <= tables.get("memory_entries", set()):
            return "swarm"
        if {"key", "value", "type"} <= tables.get("memory_store", set()):
            return "extended-memory"
        if {"content_hash", "content"} <= tables.get("memories", set()):
            return "mms-sqlite"
        raise SourceError(f"{path}: a SQLite file with none of the known tables "
                          "(memory_entries, memory_store, memories); pass --format")
    text = head.lstrip()
    if b'"export_metadata"' in head:
        return "mms-json"
    if b'"memfs.export/' in head:
        return "memfs"
    if text.startswith(b"{") and (b'"type":"entity"' in head.replace(b" ", b"")
                                  or b'"type":"relation"' in head.replace(b" ", b"")):
        return "kg-jsonl"
    raise SourceError(f"{path}: cannot tell its format; pass --format ({', '.join(FORMATS)})")


def read_source(path: Path, fmt: str = "auto") -> Source:
    """Read a whole source into records (the source is never written)."""
    path = resolve_path(Path(path))
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in READERS:
        raise SourceError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    sha = file_sha256(path)
    size = path.stat().st_size
    notes: list[str] = []
    records = list(READERS[fmt](path, notes))
    if file_sha256(path) != sha:
        raise SourceError(f"{path} changed while it was read; nothing was imported. Stop the program "
                          "writing to it (or import a copy) and run the import again")
    return Source(path, fmt, sha, size, records, notes)


def _time(value: Any, name: str) -> str | None:
    """A source timestamp (Unix seconds or milliseconds, ISO text, SQLite's `YYYY-MM-DD HH:MM:SS`)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000.0 if value > 1e11 else float(value)  # JS Date.now() is in milliseconds
        return documents.format_time(datetime.fromtimestamp(seconds, timezone.utc))
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return _time(float(text), name)
        return documents.format_time(documents.parse_time(text.replace(" ", "T", 1), name))
    raise InvalidDocumentError(f"'{name}' is neither a time nor a number: {value!r}")


def _unix(value: Any) -> float | None:
    t = _time(value, "accessed_at")
    return documents.parse_time(t).timestamp() if t else None


def _json_obj(text: Any, name: str) -> dict:
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        return text
    try:
        value = orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError):
        raise InvalidDocumentError(f"'{name}' is not JSON: {str(text)[:60]!r}") from None
    return value if isinstance(value, dict) else {"value": value}


def _tag_list(value: Any) -> list[str]:
    """Tags as a JSON list, a comma-separated string (mcp-memory-service's sqlite), or absent."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(t) for t in value]
    if isinstance(value, str):
        if value.lstrip().startswith("["):
            try:
                return [str(t) for t in orjson.loads(value)]
            except orjson.JSONDecodeError:
                pass
        return [t.strip() for t in value.split(",") if t.strip()]
    raise InvalidDocumentError(f"'tags' must be a list or a comma-separated string, got {value!r}")


def _guard(location: str, build: Callable[[], SourceRecord]) -> SourceRecord:
    """One bad record is reported with its location and never stops the rest."""
    try:
        return build()
    except (InvalidDocumentError, ValueError, TypeError, KeyError, OverflowError) as e:
        return SourceRecord(location, error=getattr(e, "reason", None) or str(e))


def _rows(path: Path, sql: str) -> Iterator[sqlite3.Row]:
    db = connect_ro(path)
    try:
        yield from db.execute(sql).fetchall()
    except sqlite3.DatabaseError as e:
        raise _sqlite_error(path, e) from None
    finally:
        db.close()


# swarm: claude-flow's .swarm/memory.db (ruvnet/claude-flow src/memory/sqlite-store.js, v2.x).
def read_swarm(path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    for row in _rows(path, "SELECT rowid AS _rowid, * FROM memory_entries ORDER BY rowid"):
        r = dict(row)
        loc = f"memory_entries id={r.get('id', r['_rowid'])}"
        yield _guard(loc, lambda r=r, loc=loc: _swarm_record(r, loc))


def _swarm_record(r: dict, loc: str) -> SourceRecord:
    value = r["value"]
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str) or not value.strip():
        raise InvalidDocumentError("'value' is empty")
    meta = _json_obj(r.get("metadata"), "metadata")
    tags = _tag_list(r.get("tags")) or _tag_list(meta.pop("tags", None))
    kind = TEXT
    if value.lstrip()[:1] in ("{", "["):
        try:
            orjson.loads(value)
            kind = JSON
        except orjson.JSONDecodeError:
            pass
    created = _time(r.get("created_at"), "created_at")
    doc: dict[str, Any] = {"content": value, "type": KV_TYPE, "namespace": r.get("namespace") or DEFAULT_NAMESPACE,
                           "key": str(r["key"]), "tags": tags, "metadata": {**meta, "value_type": kind}}
    if created:
        doc["created_at"] = created
    updated = _time(r.get("updated_at"), "updated_at")
    if updated:
        doc["updated_at"] = updated
    expires = _time(r.get("expires_at"), "expires_at")
    if expires is None and r.get("ttl") and created:
        expires = _time(documents.parse_time(created).timestamp() + float(r["ttl"]), "expires_at")
    if expires:
        doc["expires_at"] = expires
    access = None
    if r.get("accessed_at") is not None or r.get("access_count"):
        access = (_unix(r.get("accessed_at")) or 0.0, int(r.get("access_count") or 0))
    return SourceRecord(loc, doc, access=access)


# extended-memory: memory_store(key PRIMARY KEY, value, type, created_at, updated_at, accessed_at, access_count).
def read_extended_memory(path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    for row in _rows(path, "SELECT rowid AS _rowid, * FROM memory_store ORDER BY rowid"):
        r = dict(row)
        loc = f"memory_store key={r.get('key')!r}"
        yield _guard(loc, lambda r=r, loc=loc: _extended_record(r, loc))


def _extended_record(r: dict, loc: str) -> SourceRecord:
    kind, raw, warning = (r.get("type") or "").strip(), r["value"], None
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    if kind == "pickle":
        # Never unpickled (pickle.loads runs arbitrary code): kept as the base64 text it is.
        try:
            base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise InvalidDocumentError("'value' of type pickle is not base64") from None
        content, vtype, warning = raw, PICKLE, f"{loc}: {PICKLE_WARNING}"
    else:
        if kind == "none":
            value = None
        elif kind == "str":
            value = orjson.loads(raw)  # the service stores json.dumps(value) for every non-pickle type
        else:
            try:
                value = orjson.loads(raw)
            except orjson.JSONDecodeError:
                if kind in ("int", "float", "bool", "dict", "list"):
                    raise InvalidDocumentError(f"'value' is not valid JSON for type {kind}: {raw[:60]!r}") from None
                value = raw
        content, vtype = encode_value(value)
    key = r.get("key")
    if not isinstance(key, str) or not key:
        raise InvalidDocumentError("'key' is empty")
    doc: dict[str, Any] = {"content": content, "type": KV_TYPE, "namespace": DEFAULT_NAMESPACE, "key": key,
                           "metadata": {"value_type": vtype, "extended_memory_type": kind}}
    for name in ("created_at", "updated_at"):
        t = _time(r.get(name), name)
        if t:
            doc[name] = t
    access = (_unix(r.get("accessed_at")) or 0.0, int(r.get("access_count") or 0))
    return SourceRecord(loc, doc, access=access, warning=warning)


# mms-sqlite: mcp-memory-service's sqlite_vec.db (src/mcp_memory_service/storage/sqlite_vec.py).
def read_mms_sqlite(path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    db = connect_ro(path)
    try:
        tables = _tables(db)
        vectors = _vec0_vectors(db, tables, "memory_embeddings")
        where = " WHERE deleted_at IS NULL" if "deleted_at" in tables["memories"] else ""
        if where:
            deleted = db.execute("SELECT count(*) FROM memories WHERE deleted_at IS NOT NULL").fetchone()[0]
            if deleted:
                notes.append(f"{deleted} soft-deleted memories (deleted_at set) left out")
        rows = [dict(r) for r in db.execute(f"SELECT * FROM memories{where} ORDER BY id")]
    except sqlite3.DatabaseError as e:
        raise _sqlite_error(path, e) from None
    finally:
        db.close()
    for r in rows:
        loc = f"memories id={r['id']}"
        yield _guard(loc, lambda r=r, loc=loc: _mms_record(r, loc, vectors.get(r["id"])))


def _vec0_vectors(db: sqlite3.Connection, tables: dict[str, set[str]], name: str) -> dict[int, np.ndarray]:
    """rowid -> vector of a sqlite-vec `vec0` table, read from its shadow tables (no extension needed).

    vec0 keeps vectors in `<name>_vector_chunks00(rowid, vectors)`: chunks of fixed size, float32,
    one after another; `<name>_rowids(rowid, chunk_id, chunk_offset)` says where each row's lies.
    """
    sql = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    if sql is None or f"{name}_rowids" not in tables or f"{name}_vector_chunks00" not in tables:
        return {}
    m = re.search(r"float\s*\[\s*(\d+)\s*\]", sql[0], re.IGNORECASE)
    if not m:
        return {}
    dim = int(m.group(1))
    chunks = {cid: blob for cid, blob in db.execute(f'SELECT rowid, vectors FROM "{name}_vector_chunks00"')}
    out: dict[int, np.ndarray] = {}
    for rowid, chunk_id, offset in db.execute(f'SELECT rowid, chunk_id, chunk_offset FROM "{name}_rowids"'):
        blob = chunks.get(chunk_id)
        if blob is not None and (offset + 1) * dim * 4 <= len(blob):
            out[rowid] = np.frombuffer(blob, dtype=np.float32, count=dim, offset=offset * dim * 4)
    return out


def _mms_record(r: dict, loc: str, vector: Any) -> SourceRecord:
    meta = _json_obj(r.get("metadata"), "metadata")
    return SourceRecord(loc, _mms_doc(r, meta), vector=vector)


def _mms_doc(r: dict, meta: dict) -> dict:
    """A memfs document from an mcp-memory-service memory (sqlite row or export entry)."""
    doc: dict[str, Any] = {"content": r["content"], "tags": _tag_list(r.get("tags")),
                           "type": (r.get("memory_type") or documents.DEFAULT_TYPE), "metadata": meta}
    created = _time(r.get("created_at"), "created_at") or _time(r.get("created_at_iso"), "created_at")
    updated = _time(r.get("updated_at"), "updated_at") or _time(r.get("updated_at_iso"), "updated_at")
    if created:
        doc["created_at"] = created
    if updated:
        doc["updated_at"] = updated
    # A memfs mms-format export keeps what mms has no field for under metadata.memfs: restore it.
    own = meta.pop("memfs", None) if isinstance(meta.get("memfs"), dict) else None
    if own:
        for name in ("id", "namespace", "key", "expires_at", "source"):
            if own.get(name) is not None:
                doc[name] = own[name]
    return doc


# mms-json: {"export_metadata": {...}, "memories": [{content, content_hash, tags, created_at, ...}]}.
def read_mms_json(path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    data = _load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("memories"), list) or "export_metadata" not in data:
        raise SourceError(f"{path}: not an mcp-memory-service export (needs export_metadata and memories[])")
    machine = (data.get("export_metadata") or {}).get("source_machine")
    if machine:
        notes.append(f"exported on {machine}")
    for n, entry in enumerate(data["memories"]):
        loc = f"memories[{n}]"
        yield _guard(loc, lambda e=entry, loc=loc: _mms_json_record(e, loc))


def _mms_json_record(e: Any, loc: str) -> SourceRecord:
    if not isinstance(e, dict):
        raise InvalidDocumentError(f"an entry must be an object, got {type(e).__name__}")
    if not isinstance(e.get("metadata", {}), (dict, type(None))):
        raise InvalidDocumentError("'metadata' must be an object")
    meta = dict(e.get("metadata") or {})
    vector = e.get("embedding")
    return SourceRecord(loc, _mms_doc(e, meta), vector=np.asarray(vector, dtype=np.float32) if vector else None)


# memfs: {"format": "memfs.export/1", "model": ..., "memories": [document, ...], "count": n}.
def read_memfs(path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    data = _load_json(path)
    fmt = data.get("format", "") if isinstance(data, dict) else ""
    if not isinstance(fmt, str) or not fmt.startswith("memfs.export/") or not isinstance(data.get("memories"), list):
        raise SourceError(f"{path}: not a memfs export (needs format 'memfs.export/1' and memories[])")
    if int(fmt.rpartition("/")[2] or 0) > 1:
        raise SourceError(f"{path}: written by a newer memfs ({fmt}); upgrade memfs to import it")
    if data.get("count") is not None and data["count"] != len(data["memories"]):
        raise SourceError(f"{path}: says {data['count']} memories but holds {len(data['memories'])}; "
                          "the export is truncated, nothing was imported")
    for n, entry in enumerate(data["memories"]):
        loc = f"memories[{n}]" + (f" id={entry.get('id')}" if isinstance(entry, dict) and entry.get("id") else "")
        yield _guard(loc, lambda e=entry, loc=loc: _memfs_record(e, loc))


def _memfs_record(e: Any, loc: str) -> SourceRecord:
    if not isinstance(e, dict):
        raise InvalidDocumentError(f"an entry must be an object, got {type(e).__name__}")
    doc = dict(e)
    vector = doc.pop("embedding", None)
    access = doc.pop("access", None)
    doc.pop("content_hash", None)
    return SourceRecord(loc, doc, vector=np.asarray(vector, dtype=np.float32) if vector else None,
                        access=(access["accessed_at"], access["access_count"]) if access else None)


# kg-jsonl: the MCP reference memory server's memory.jsonl (modelcontextprotocol/servers src/memory):
# {"type":"entity","name","entityType","observations":[...]} and {"type":"relation","from","to","relationType"}.
def read_kg_jsonl(path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                loc = f"line {n}"
                yield _guard(loc, lambda line=line, loc=loc: _kg_record(line, loc))


def _kg_record(line: bytes, loc: str) -> SourceRecord:
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as e:
        raise InvalidDocumentError(f"not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise InvalidDocumentError("a line must be a JSON object")
    if obj.get("type") == "entity":
        name, etype, obs = obj["name"], obj.get("entityType", "entity"), obj.get("observations") or []
        if not isinstance(name, str) or not name or not isinstance(obs, list):
            raise InvalidDocumentError("an entity needs a 'name' and a list of 'observations'")
        content = "\n".join([f"{name} ({etype})", *[str(o) for o in obs]])
        return SourceRecord(loc, {"content": content, "type": "entity", "namespace": KG_NAMESPACE,
                                  "key": f"entity:{name}", "tags": [f"entity-type:{etype}"],
                                  "metadata": {"name": name, "entityType": etype, "observations": obs}})
    if obj.get("type") == "relation":
        src, dst, rel = obj["from"], obj["to"], obj["relationType"]
        return SourceRecord(loc, {"content": f"{src} {rel} {dst}", "type": "relation", "namespace": KG_NAMESPACE,
                                  "key": f"relation:{src}|{rel}|{dst}",
                                  "metadata": {"from": src, "to": dst, "relationType": rel}})
    raise InvalidDocumentError(f"'type' must be entity or relation, got {obj.get('type')!r}")


def _load_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as e:
        raise SourceError(f"{path} is not valid JSON ({e}); nothing was imported") from None


READERS: dict[str, Callable[[Path, list[str]], Iterator[SourceRecord]]] = {
    "memfs": read_memfs, "mms-json": read_mms_json, "mms-sqlite": read_mms_sqlite,
    "extended-memory": read_extended_memory, "swarm": read_swarm, "kg-jsonl": read_kg_jsonl,
}


# -- planning and writing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InvalidRecord(Record):
    location: str
    reason: str


@dataclass
class SourceReport(Record):
    """What one source gave: counts, its checksum, and the migration record that keeps them."""

    path: str
    format: str
    sha256: str
    read: int = 0
    new: int = 0
    duplicate: int = 0
    updated: int = 0
    invalid: int = 0
    expired: int = 0  # already past expires_at in the source: not imported
    vectors_carried: int = 0
    vectors_reused: int = 0
    vector_check: str | None = None
    records_sha256: str = ""  # SHA-256 over the sorted content hashes of the valid records
    invalid_records: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    record_id: str | None = None
    status: str = "planned"
    error: str | None = None

    _nested = {"invalid_records": InvalidRecord}


@dataclass
class ImportReport(Record):
    sources: list
    dry_run: bool
    seconds: float = 0.0

    _nested = {"sources": SourceReport}

    @property
    def problems(self) -> bool:
        """Exit code 1: done, but some records were invalid or a source failed."""
        return any(s.invalid or s.status == "failed" for s in self.sources)


@dataclass
class _Plan:
    new: list[tuple[SourceRecord, Memory]] = field(default_factory=list)
    updates: list[tuple[str, SourceRecord, Memory]] = field(default_factory=list)  # (existing id, ...)


def _apply_options(doc: dict, fmt: str, source: Path, location: str, source_tag: str | None,
                   namespace: str | None) -> dict:
    """Provenance (a `source:<name>` tag, `source` = file#record) and --namespace."""
    doc = dict(doc)
    name = source_tag or DEFAULT_SOURCE_NAMES.get(fmt)
    if name:  # a memfs export carries its own provenance; it gets a tag only when one is asked for
        doc["tags"] = [*(doc.get("tags") or []), f"source:{name}"]
        doc["source"] = f"{source.resolve()}#{location}"
    if namespace:
        own = doc.get("namespace")
        # Several sources often share namespace names ("default"); NS/<theirs> keeps them apart.
        doc["namespace"] = f"{namespace}/{own}" if own and own != DEFAULT_NAMESPACE else namespace
    return doc


def _plan(store: "MemoryStore", src: Source, report: SourceReport, *, dedup: bool, source_tag: str | None,
          namespace: str | None, seen_hashes: set[str], seen_keys: dict[tuple[str, str], str],
          existing_hashes: set[str], existing_keys: dict[tuple[str, str], str], now: datetime) -> _Plan:
    plan = _Plan()
    valid_hashes: list[str] = []
    for rec in src.records:
        report.read += 1
        if rec.warning:
            report.warnings.append(rec.warning)
        try:
            if rec.error:
                raise InvalidDocumentError(rec.error)
            doc = _apply_options(rec.doc or {}, src.format, src.path, rec.location, source_tag, namespace)
            m = documents.from_dict(doc, default_id=documents.new_id(), default_time=now)
        except InvalidDocumentError as e:
            report.invalid += 1
            if len(report.invalid_records) < MAX_LISTED_INVALID:
                report.invalid_records.append(InvalidRecord(rec.location, e.reason))
            continue
        rec.doc = doc
        valid_hashes.append(m.content_hash)
        if rec.vector is not None:
            report.vectors_carried += 1
        if m.expires_at is not None and m.expires_at <= now:
            report.expired += 1
            continue
        h = m.content_hash
        if m.key is not None:
            k = (m.namespace or DEFAULT_NAMESPACE, m.key)
            if k in seen_keys:
                report.duplicate += 1  # the first source to name a key wins within one import
            elif k in existing_keys:
                if existing_keys[k] == h:
                    report.duplicate += 1
                else:
                    old_id = store.catalog.ids_for_key(*k)[0]
                    plan.updates.append((old_id, rec, m))
                    report.updated += 1
            else:
                plan.new.append((rec, m))
                report.new += 1
            seen_keys[k] = h
        else:
            if "id" in doc and store.catalog.get(m.id) is not None:
                if store.catalog.get(m.id).hash == h:  # type: ignore[union-attr]
                    report.duplicate += 1
                else:
                    report.invalid += 1
                    report.invalid_records.append(InvalidRecord(
                        rec.location, f"id {m.id!r} is already used by a memory with other content"))
                continue
            if dedup and (h in existing_hashes or h in seen_hashes):
                report.duplicate += 1
            else:
                plan.new.append((rec, m))
                report.new += 1
        seen_hashes.add(h)
    report.records_sha256 = hashlib.sha256("\n".join(sorted(valid_hashes)).encode()).hexdigest()
    return plan


def check_same_model(store: "MemoryStore", samples: list[tuple[str, Any]]) -> tuple[bool, str]:
    """Are these (content, vector) pairs this store's model's? Re-embed a sample and compare."""
    dim = store.embedder.dim
    vecs = [np.asarray(v, dtype=np.float32) for _, v in samples]
    if any(v.shape != (dim,) for v in vecs):
        shapes = sorted({v.shape[0] if v.ndim == 1 else -1 for v in vecs})
        return False, f"source vectors have {shapes} dimensions, this model {dim}: re-embedded"
    ours = store.embedder.embed([c for c, _ in samples])
    sims = []
    for a, b in zip(vecs, ours):
        na = float(np.linalg.norm(a))
        sims.append(float(np.dot(a / na, b)) if na else 0.0)
    worst = min(sims)
    if worst >= SAME_MODEL_MIN_COSINE:
        return True, f"same model ({store.embedder.model_id}): {len(sims)} samples re-embedded, cosine ≥ {worst:.4f}"
    return False, f"another model (sample cosine {worst:.3f} < {SAME_MODEL_MIN_COSINE}): re-embedded"


def _seed_vectors(store: "MemoryStore", plan: _Plan, report: SourceReport) -> None:
    carried = [(rec, m) for rec, m in plan.new + [(r, m) for _, r, m in plan.updates] if rec.vector is not None]
    if not carried:
        return
    step = max(1, len(carried) // VECTOR_SAMPLE)
    sample = [(m.content, rec.vector) for rec, m in carried[::step][:VECTOR_SAMPLE]]
    ok, why = check_same_model(store, sample)
    report.vector_check = why
    if ok:
        vectors = {m.content_hash: np.asarray(rec.vector, dtype=np.float32) for rec, m in carried}
        vectors = {h: v / (np.linalg.norm(v) or 1.0) for h, v in vectors.items()}
        store.catalog.cache_vectors(store.embedder.model_id, vectors)
        report.vectors_reused = len(vectors)


def import_sources(store: "MemoryStore", paths: Iterable[Path | str], *, format: str = "auto",
                   dry_run: bool = False, dedup: bool = True, source_tag: str | None = None,
                   namespace: str | None = None, progress: Callable[[str, int, int], None] | None = None,
                   on_source: Callable[[SourceReport], None] | None = None) -> ImportReport:
    """Import every source; see the module docstring.

    Every source is read and planned before anything is written, so one that cannot be read
    (SourceError) stops the import with nothing written at all. Then the new memories of all sources
    go through one `add_many`: one encode pipeline and full batches, instead of a pipeline that fills
    and drains at each of twelve sources (measured: ~1 ms a record less).

    `dry_run`: read, check and count; write nothing (no memory, no catalog row, no record).
    """
    from . import migrations

    started = time.monotonic()
    out = ImportReport([], dry_run)
    seen_hashes: set[str] = set()
    seen_keys: dict[tuple[str, str], str] = {}
    with store._mutex:
        existing_hashes = store.catalog.hashes()
        existing_keys = store.catalog.key_hashes()
        planned: list[tuple[Source, SourceReport, _Plan, datetime]] = []
        for p in paths:
            begun = utcnow()
            src = read_source(Path(p), format)
            report = SourceReport(str(src.path.resolve()), src.format, src.sha256, warnings=list(src.notes))
            plan = _plan(store, src, report, dedup=dedup, source_tag=source_tag, namespace=namespace,
                         seen_hashes=seen_hashes, seen_keys=seen_keys, existing_hashes=existing_hashes,
                         existing_keys=existing_keys, now=begun)
            src.records = []  # planned: the plan keeps what it needs
            planned.append((src, report, plan, begun))
            out.sources.append(report)
        if dry_run:
            for _, report, _, _ in planned:
                report.status = "dry-run"
                if on_source:
                    on_source(report)
        else:
            options = {"dedup": dedup, "source_tag": source_tag, "namespace": namespace}
            records = [migrations.start(store.layout, src, report, {"format": src.format, **options}, begun)
                       for src, report, _, begun in planned]
            try:
                _write(store, [(plan, report) for _, report, plan, _ in planned], progress)
                for _, report, _, _ in planned:
                    report.status = "completed"
            except Exception as e:
                for _, report, _, _ in planned:
                    report.status, report.error = "failed", f"{type(e).__name__}: {e}"
                raise
            finally:
                for record, (_, report, _, _) in zip(records, planned):
                    migrations.finish(store.layout, record, report)
                    if on_source:
                        on_source(report)
    out.seconds = time.monotonic() - started
    return out


def _write(store: "MemoryStore", plans: list[tuple[_Plan, SourceReport]], progress) -> None:
    for plan, report in plans:
        _seed_vectors(store, plan, report)
    new = [(rec, m) for plan, _ in plans for rec, m in plan.new]
    results = store.add_many([rec.doc for rec, _ in new], allow_duplicate=True, progress=progress) if new else []
    access = [(res.memory.id, *rec.access) for (rec, _), res in zip(new, results) if rec.access]
    for plan, _ in plans:
        for old_id, rec, m in plan.updates:
            old = store.get(old_id)
            store._rewrite(old_id, content=m.content, metadata={**old.metadata, **m.metadata},
                           tags=documents.normalize_tags([*old.tags, *m.tags]), expires_at=m.expires_at,
                           updated_at=max(m.updated_at, old.updated_at))
            if rec.access:
                access.append((old_id, *rec.access))
    if access:
        store.catalog.set_access(access)


def format_report(report: ImportReport) -> str:
    """The human summary `memfs import` prints: counts per source, then each invalid record."""
    lines = []
    for s in report.sources:
        head = f"{s.path} ({s.format}, sha256 {s.sha256[:12]}…)"
        counts = (f"  read {s.read}: new {s.new}, duplicate {s.duplicate}, updated {s.updated}, "
                  f"invalid {s.invalid}" + (f", expired {s.expired}" if s.expired else ""))
        lines += [head, counts]
        if s.vectors_carried:
            lines.append(f"  vectors: {s.vectors_carried} carried, {s.vectors_reused} reused"
                         + (f" ({s.vector_check})" if s.vector_check else ""))
        lines += [f"  invalid: {r.location}: {r.reason}" for r in s.invalid_records]
        lines += [f"  note: {w}" for w in s.warnings[:20]]
        if s.record_id:
            lines.append(f"  record: {s.record_id} ({s.status})")
    total = sum(s.new + s.updated for s in report.sources)
    lines.append(("dry run: would import " if report.dry_run else "imported ") +
                 f"{total} of {sum(s.read for s in report.sources)} records from {len(report.sources)} source(s)")
    return "\n".join(lines)
