"""One reader per source format (issue #13, #25): each turns a peer's file into `SourceRecord`s, a
memfs document per record (or the reason it is invalid), with the record's location in the source.

Every schema is the peer's own, read from its installed source; tests run them on files the real
peers wrote (tests/fixtures/peers/, made by scripts/make-peer-fixtures.sh).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sqlite3
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import orjson

from . import documents
from .errors import InvalidDocumentError
from .kv import DEFAULT_NAMESPACE, JSON, KV_TYPE, PICKLE, PICKLE_WARNING, TEXT, encode_value
from .json_stream import ObjectStream
from .source_records import (SourceError, SourceRecord, connect_ro, guard, json_items, json_obj, loads_exact,
                             refuse_long_ints, rows, source_time, sqlite_error, tables, tag_list, unix_time)

KG_NAMESPACE = "kg"


# swarm: claude-flow's .swarm/memory.db, table memory_entries. Two schemas share the name:
# - 2.x (src/memory/sqlite-store.js): id INTEGER, key, value, namespace, metadata, created_at/updated_at/
#   accessed_at in seconds, access_count, ttl, expires_at;
# - 3.x (v3/@claude-flow/cli/dist/src/memory/memory-initializer.js): id TEXT, key, namespace, content, type,
#   embedding (JSON array) + embedding_model + embedding_dimensions, tags (JSON array), metadata, owner_id,
#   provenance_type, created_at/updated_at/expires_at/last_accessed_at in milliseconds, access_count,
#   status active|archived|deleted.
def read_swarm(path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    db = connect_ro(path)
    try:
        columns = tables(db).get("memory_entries", set())
        where = ""
        if "status" in columns:  # 3.x: a deleted row is gone for claude-flow too; archived is kept, marked
            deleted = db.execute("SELECT count(*) FROM memory_entries WHERE status = 'deleted'").fetchone()[0]
            if deleted:
                notes.append(f"{deleted} rows with status 'deleted' left out")
            where = " WHERE status IS NOT 'deleted'"
        for row in db.execute(f"SELECT rowid AS _rowid, * FROM memory_entries{where} ORDER BY rowid"):
            r = dict(row)
            loc = f"memory_entries id={r.get('id', r['_rowid'])}"
            yield guard(loc, lambda r=r, loc=loc: _swarm_record(r, loc))
    except sqlite3.DatabaseError as e:
        raise sqlite_error(path, e) from None
    finally:
        db.close()


def _value_kind(value: str) -> str:
    if value.lstrip()[:1] in ("{", "["):
        try:
            loads_exact(value)
            return JSON
        except orjson.JSONDecodeError:
            pass
    return TEXT


def _swarm_record(r: dict, loc: str) -> SourceRecord:
    v3 = "content" in r and "value" not in r
    value = r["content"] if v3 else r["value"]
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    if not isinstance(value, str) or not value.strip():
        raise InvalidDocumentError(f"'{'content' if v3 else 'value'}' is empty")
    meta = json_obj(r.get("metadata"), "metadata")
    tags = tag_list(r.get("tags")) or tag_list(meta.pop("tags", None))
    meta["value_type"] = _value_kind(value)
    vector = None
    if v3:
        for column, name in (("type", "claude_flow_type"), ("owner_id", "owner_id"),
                             ("provenance_type", "provenance_type")):
            if r.get(column) not in (None, "", "unknown"):
                meta[name] = r[column]
        if r.get("status") == "archived":
            meta["status"] = "archived"
            tags = [*tags, "status:archived"]
        vector = _json_vector(r.get("embedding"))
    doc = _kv_doc(value, r.get("namespace"), r["key"], tags, meta, r)
    if "expires_at" not in doc and r.get("ttl") and doc.get("created_at"):
        doc["expires_at"] = source_time(documents.parse_time(doc["created_at"]).timestamp() + float(r["ttl"]),
                                        "expires_at")
    accessed = r.get("last_accessed_at") if v3 else r.get("accessed_at")
    access = None
    if accessed is not None or r.get("access_count"):
        access = (unix_time(accessed) or 0.0, int(r.get("access_count") or 0))
    return SourceRecord(loc, doc, access=access, vector=vector,
                        vector_model=(r.get("embedding_model") or None) if vector is not None else None)


def _json_vector(text: Any) -> np.ndarray | None:
    if not text:
        return None
    try:
        values = orjson.loads(text)
    except (orjson.JSONDecodeError, TypeError):
        return None  # an unreadable vector is re-embedded, never a reason to refuse the memory
    return np.asarray(values, dtype=np.float32) if isinstance(values, list) and values else None


def _kv_doc(value: str, namespace: Any, key: Any, tags: list, meta: dict, times: dict) -> dict:
    """A key/value memory document from a claude-flow entry (database row or export entry)."""
    if key is None or str(key) == "":
        raise InvalidDocumentError("'key' is empty")
    doc: dict[str, Any] = {"content": value, "type": KV_TYPE, "namespace": namespace or DEFAULT_NAMESPACE,
                           "key": str(key), "tags": tags, "metadata": meta}
    for name, spellings in (("created_at", ("created_at", "createdAt")), ("updated_at", ("updated_at", "updatedAt")),
                            ("expires_at", ("expires_at", "expiresAt"))):
        for column in spellings:
            t = source_time(times.get(column), name)
            if t:
                doc[name] = t
                break
    return doc


# swarm-json: claude-flow 3.x's `memory export` (its memory_export tool in mcp-tools/memory-tools.js):
# {"schema": "ruflo-memory-export/v1", "exportedAt", "namespace", "count",
#  "entries": [{key, namespace, value, createdAt, updatedAt, accessCount, hasEmbedding, size}]}.
def read_swarm_json(path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    doc = ObjectStream(path, "entries")
    checked = False
    for n, raw, entry in json_items(path, doc):
        if n == 0:
            checked = _swarm_json_head(path, doc, notes)
        loc = f"entries[{n}]" + (f" key={entry.get('key')!r}" if isinstance(entry, dict) else "")
        yield guard(loc, lambda e=entry, raw=raw, loc=loc: _swarm_json_record(e, raw, loc))
    _swarm_json_head(path, doc, [] if checked else notes, complete=True)


def _swarm_json_head(path: Path, doc: ObjectStream, notes: list[str], complete: bool = False) -> bool:
    """Refuse what is not a claude-flow export: at its first entry if `schema` came before it (the
    members of an object may come in any order), and (`complete`) once it is read. False: not checked yet."""
    if not complete and "schema" not in doc.head:
        return False
    schema = doc.head.get("schema", "")
    if not isinstance(schema, str) or not schema.startswith("ruflo-memory-export/") \
            or (complete and not doc.found_array):
        raise SourceError(f"{path}: not a claude-flow memory export (needs schema 'ruflo-memory-export/v1' and "
                          "entries[])")
    if schema != "ruflo-memory-export/v1":
        notes.append(f"schema {schema}: read as ruflo-memory-export/v1")
    if complete and doc.head.get("count") is not None and doc.head["count"] != doc.count:
        raise SourceError(f"{path}: says {doc.head['count']} entries but holds {doc.count}; the export is "
                          "truncated, nothing was imported")
    return True


def _swarm_json_record(e: Any, raw: bytes, loc: str) -> SourceRecord:
    if not isinstance(e, dict):
        raise InvalidDocumentError(f"an entry must be an object, got {type(e).__name__}")
    refuse_long_ints(raw)
    value = e.get("value")
    if not isinstance(value, str) or not value.strip():
        raise InvalidDocumentError("'value' is empty (exported by a claude-flow before #2073, which left "
                                   "values out: export again with a newer claude-flow, or import its memory.db)")
    doc = _kv_doc(value, e.get("namespace"), e.get("key"), [], {"value_type": _value_kind(value)}, e)
    access = (0.0, int(e["accessCount"])) if e.get("accessCount") else None  # the export has no access time
    return SourceRecord(loc, doc, access=access)


# extended-memory: memory_store(key PRIMARY KEY, value, type, created_at, updated_at, accessed_at, access_count).
def read_extended_memory(path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    for row in rows(path, "SELECT rowid AS _rowid, * FROM memory_store ORDER BY rowid"):
        r = dict(row)
        loc = f"memory_store key={r.get('key')!r}"
        yield guard(loc, lambda r=r, loc=loc: _extended_record(r, loc))


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
            value = loads_exact(raw)  # the service stores json.dumps(value) for every non-pickle type
        else:
            try:
                value = loads_exact(raw)
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
        t = source_time(r.get(name), name)
        if t:
            doc[name] = t
    access = (unix_time(r.get("accessed_at")) or 0.0, int(r.get("access_count") or 0))
    return SourceRecord(loc, doc, access=access, warning=warning)


# mms-sqlite: mcp-memory-service's sqlite_vec.db (src/mcp_memory_service/storage/sqlite_vec.py).
def read_mms_sqlite(path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    """Live memories only, as mcp-memory-service serves them: a soft-deleted one (`deleted_at`) and a
    superseded version (`superseded_by`, left by its versioned update) are left out, with a note."""
    db = connect_ro(path)
    try:
        found = tables(db)
        vectors = Vec0Vectors(db, found, "memory_embeddings")
        dropped = {"deleted_at": "deleted_at IS NOT NULL",
                   "superseded_by": "superseded_by IS NOT NULL AND superseded_by != ''"}
        conditions = []
        for column, condition in dropped.items():
            if column in found["memories"]:
                n = db.execute(f"SELECT count(*) FROM memories WHERE {condition}").fetchone()[0]
                if n:
                    notes.append(f"{n} memories with {column} set left out (mcp-memory-service does not serve them)")
                conditions.append(f"NOT ({condition})")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        for row in db.execute(f"SELECT * FROM memories{where} ORDER BY id"):
            r = dict(row)
            loc = f"memories id={r['id']}"
            yield guard(loc, lambda r=r, loc=loc: _mms_record(r, loc, vectors.get(r["id"])))
    except sqlite3.DatabaseError as e:
        raise sqlite_error(path, e) from None
    finally:
        db.close()


class Vec0Vectors:
    """The vectors of a sqlite-vec `vec0` table, read from its shadow tables (no extension needed), one
    row at a time.

    vec0 keeps vectors in `<name>_vector_chunks00(rowid, vectors)`: chunks of fixed size, float32,
    one after another; `<name>_rowids(rowid, chunk_id, chunk_offset)` says where each row's lies. One
    chunk is held at a time (rows come in the order they were written, so mostly from the same chunk).
    """

    def __init__(self, db: sqlite3.Connection, tables: dict[str, set[str]], name: str):
        self.db, self.name, self.dim = db, name, 0
        self.chunk_id, self.chunk = None, b""
        sql = db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
        if sql is None or f"{name}_rowids" not in tables or f"{name}_vector_chunks00" not in tables:
            return
        m = re.search(r"float\s*\[\s*(\d+)\s*\]", sql[0], re.IGNORECASE)
        self.dim = int(m.group(1)) if m else 0

    def get(self, rowid: int) -> np.ndarray | None:
        if not self.dim:
            return None
        where = self.db.execute(f'SELECT chunk_id, chunk_offset FROM "{self.name}_rowids" WHERE rowid = ?',
                                (rowid,)).fetchone()
        if where is None:
            return None
        chunk_id, offset = where
        if chunk_id != self.chunk_id:
            blob = self.db.execute(f'SELECT vectors FROM "{self.name}_vector_chunks00" WHERE rowid = ?',
                                   (chunk_id,)).fetchone()
            self.chunk_id, self.chunk = chunk_id, (blob[0] if blob else None) or b""
        if (offset + 1) * self.dim * 4 > len(self.chunk):
            return None
        return np.frombuffer(self.chunk, dtype=np.float32, count=self.dim, offset=offset * self.dim * 4).copy()


def _mms_record(r: dict, loc: str, vector: Any) -> SourceRecord:
    meta = json_obj(r.get("metadata"), "metadata")
    own = isinstance(meta.get("memfs"), dict)
    return SourceRecord(loc, _mms_doc(r, meta), vector=vector, own_provenance=own)


def _mms_doc(r: dict, meta: dict) -> dict:
    """A memfs document from an mcp-memory-service memory (sqlite row or export entry)."""
    doc: dict[str, Any] = {"content": r["content"], "tags": tag_list(r.get("tags")),
                           "type": (r.get("memory_type") or documents.DEFAULT_TYPE), "metadata": meta}
    created = source_time(r.get("created_at"), "created_at") or source_time(r.get("created_at_iso"), "created_at")
    updated = source_time(r.get("updated_at"), "updated_at") or source_time(r.get("updated_at_iso"), "updated_at")
    if created:
        doc["created_at"] = created
    if updated:
        doc["updated_at"] = updated
    meta.pop("superseded_by", None)  # only live versions are read; an empty marker says nothing
    store = r.get("store")
    if isinstance(store, str) and store and store != "default":
        doc["namespace"] = store  # mcp-memory-service's store partition (`work`, ...) is memfs's namespace
    if r.get("export_source"):
        meta["export_source"] = r["export_source"]  # the machine whose mcp-memory-service exported it
    # A memfs mms-format export keeps what mms has no field for under metadata.memfs: restore it.
    own = meta.pop("memfs", None) if isinstance(meta.get("memfs"), dict) else None
    if own:
        for name in ("id", "namespace", "key", "expires_at", "source"):
            if own.get(name) is not None:
                doc[name] = own[name]
    return doc


# mms-json: {"export_metadata": {...}, "memories": [{content, content_hash, tags, created_at, ...}]}.
def read_mms_json(path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    doc = ObjectStream(path, "memories")
    superseded = 0
    for n, raw, entry in json_items(path, doc):
        meta = entry.get("metadata") if isinstance(entry, dict) else None
        if isinstance(meta, dict) and meta.get("superseded_by"):
            superseded += 1  # its exporter writes every version; only the live one is a memory
            continue
        loc = f"memories[{n}]"
        yield guard(loc, lambda e=entry, raw=raw, loc=loc: _mms_json_record(e, raw, loc))
    if not doc.found_array or "export_metadata" not in doc.head:
        raise SourceError(f"{path}: not an mcp-memory-service export (needs export_metadata and memories[])")
    machine = (doc.head.get("export_metadata") or {}).get("source_machine")
    if machine:
        notes.append(f"exported on {machine}")
    if superseded:
        notes.append(f"{superseded} superseded versions (metadata.superseded_by set) left out")


def _mms_json_record(e: Any, raw: bytes, loc: str) -> SourceRecord:
    if not isinstance(e, dict):
        raise InvalidDocumentError(f"an entry must be an object, got {type(e).__name__}")
    refuse_long_ints(raw)
    if not isinstance(e.get("metadata", {}), (dict, type(None))):
        raise InvalidDocumentError("'metadata' must be an object")
    meta = dict(e.get("metadata") or {})
    vector = e.get("embedding")
    own = isinstance(meta.get("memfs"), dict)  # before _mms_doc takes metadata.memfs out
    return SourceRecord(loc, _mms_doc(e, meta), vector=np.asarray(vector, dtype=np.float32) if vector else None,
                        own_provenance=own)


# memfs: {"format": "memfs.export/1", "model": ..., "memories": [document, ...], "count": n}.
def read_memfs(path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    doc = ObjectStream(path, "memories")
    model = None
    for n, raw, entry in json_items(path, doc):
        if n == 0:
            model = _memfs_head(path, doc)
        loc = f"memories[{n}]" + (f" id={entry.get('id')}" if isinstance(entry, dict) and entry.get("id") else "")
        yield guard(loc, lambda e=entry, raw=raw, loc=loc: _memfs_record(e, raw, loc, model))
    _memfs_head(path, doc, complete=True)


def _memfs_head(path: Path, doc: ObjectStream, complete: bool = False) -> str | None:
    """The export's model, once its format is checked: at its first memory (a wrong format is refused
    before anything is parsed further) and (`complete`) once it is read, with the count written last.
    memfs writes `format` and `model` before `memories`; a file whose members come in another order
    (re-serialized with sorted keys, say) is checked once read, and the vectors of records read before
    `model` are proven by embedding their text instead of by their embedding_sha256."""
    if not complete and "format" not in doc.head:
        return None
    fmt = doc.head.get("format", "")
    if not isinstance(fmt, str) or not fmt.startswith("memfs.export/") or (complete and not doc.found_array):
        raise SourceError(f"{path}: not a memfs export (needs format 'memfs.export/1' and memories[])")
    if int(fmt.rpartition("/")[2] or 0) > 1:
        raise SourceError(f"{path}: written by a newer memfs ({fmt}); upgrade memfs to import it")
    if complete and doc.head.get("count") is not None and doc.head["count"] != doc.count:
        raise SourceError(f"{path}: says {doc.head['count']} memories but holds {doc.count}; "
                          "the export is truncated, nothing was imported")
    return doc.head["model"] if isinstance(doc.head.get("model"), str) else None


def _memfs_record(e: Any, raw: bytes, loc: str, model: str | None) -> SourceRecord:
    if not isinstance(e, dict):
        raise InvalidDocumentError(f"an entry must be an object, got {type(e).__name__}")
    refuse_long_ints(raw)
    doc = dict(e)
    vector = doc.pop("embedding", None)
    proof = doc.pop("embedding_sha256", None)
    access = doc.pop("access", None)
    doc.pop("content_hash", None)
    return SourceRecord(loc, doc, vector=np.asarray(vector, dtype=np.float32) if vector else None,
                        access=(access["accessed_at"], access["access_count"]) if access else None,
                        vector_model=model, vector_proof=proof if isinstance(proof, str) else None)


# kg-jsonl: the MCP reference memory server's memory.jsonl (modelcontextprotocol/servers src/memory):
# {"type":"entity","name","entityType","observations":[...]} and {"type":"relation","from","to","relationType"}.
def read_kg_jsonl(path: Path, notes: list[str]) -> Iterator[SourceRecord]:
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                loc = f"line {n}"
                yield guard(loc, lambda line=line, loc=loc: _kg_record(line, loc))


def relation_key(src: str, rel: str, dst: str) -> str:
    """`relation:` + the JSON list [from, type, to]: JSON keeps the three parts apart whatever characters
    they hold, so no two relations share a key (`A|x -y-> B` and `A -x|y-> B` once both became
    `relation:A|x|y|B`; issue #25). The same key the MCP knowledge-graph tools write (memfs.graph)."""
    return "relation:" + json.dumps([src, rel, dst], ensure_ascii=False)


def _kg_record(line: bytes, loc: str) -> SourceRecord:
    try:
        obj = loads_exact(line)
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
                                  "key": relation_key(src, rel, dst),
                                  "metadata": {"from": src, "to": dst, "relationType": rel}})
    raise InvalidDocumentError(f"'type' must be entity or relation, got {obj.get('type')!r}")



READERS: dict[str, Callable[[Path, list[str]], Iterator[SourceRecord]]] = {
    "memfs": read_memfs, "mms-json": read_mms_json, "mms-sqlite": read_mms_sqlite,
    "extended-memory": read_extended_memory, "swarm": read_swarm, "swarm-json": read_swarm_json,
    "kg-jsonl": read_kg_jsonl,
}
