"""Streaming export (issue #13): every live memory as one JSON document, in constant memory.

Rows are read from the catalog (which mirrors the files; the store reconciles on open) in keyset
pages of `PAGE` and written as they come, so 100k memories take no more memory than 500.

- `memfs` format: `{"format": "memfs.export/1", "exported_at", "model", "filter_tags",
  "memories": [<memory document as on disk> (+ "embedding", + "access")...], "count": n}` — `count`
  comes last, after the memories, so an export cut short is detected on import.
- `mms` format: mcp-memory-service's export (`export_metadata` + `memories[]` with content,
  content_hash (mcp-memory-service's own rule: SHA-256 of the stripped, lower-cased content), tags,
  created_at/updated_at as epoch floats and their `_iso` twins, memory_type, metadata, store,
  optional embedding): what its `sync/importer.py` (`scripts/sync/import_memories.py`) reads.
  Fields mms has no place for (id, namespace, key, expires_at, source) ride in `metadata.memfs`, so a
  memfs → mms → memfs trip keeps them.
"""

from __future__ import annotations

import hashlib
import platform
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO, Iterable, Iterator

import numpy as np
import orjson

from . import __version__, documents
from .catalog import Catalog
from .catalog_rows import COLUMNS, entry_from_row
from .documents import Memory, utcnow
from .results import Record

if TYPE_CHECKING:
    from .store import MemoryStore

EXPORT_FORMAT = "memfs.export/1"
FORMATS = ("memfs", "mms")
PAGE = 500


@dataclass(frozen=True)
class ExportReport(Record):
    format: str
    count: int
    bytes: int
    seconds: float
    include_embeddings: bool


def _pages(catalog: Catalog, tags: tuple[str, ...]) -> Iterator[list[tuple]]:
    """Rows of live memories (not expired), with any of `tags` if given, by rowid, a page at a time."""
    last, now = 0, time.time()
    cols = ", ".join(f"d.{c.strip()}" for c in COLUMNS.split(","))
    where = "d.rowid > ? AND (d.expires_ts IS NULL OR d.expires_ts > ?)"
    args: list = []
    if tags:
        where += f" AND d.rowid IN (SELECT doc FROM doc_tags WHERE tag IN ({','.join('?' * len(tags))}))"
        args = list(tags)
    while True:
        rows = catalog.db.execute(f"SELECT d.rowid, {cols} FROM docs d WHERE {where} ORDER BY d.rowid LIMIT ?",
                                  [last, now, *args, PAGE]).fetchall()
        if not rows:
            return
        last = rows[-1][0]
        yield [r[1:] for r in rows]


def _document(row: tuple) -> dict:
    """The memory document as on disk, straight from its catalog row: `body` is the document less its
    content, as `Memory.to_dict` wrote it, so no parse-and-reserialise round is needed."""
    content, body = row[-2], orjson.loads(row[-1])  # COLUMNS ends with content, body
    doc = {"format": body.pop("format", documents.FORMAT), "id": body.pop("id", row[0]), "content": content}
    doc.update(body)
    return doc


def count(store: "MemoryStore", tags: Iterable[str] = ()) -> int:
    tags = tuple(tags)
    sql = "SELECT count(*) FROM docs d WHERE (d.expires_ts IS NULL OR d.expires_ts > ?)"
    args: list = [time.time()]
    if tags:
        sql += f" AND d.rowid IN (SELECT doc FROM doc_tags WHERE tag IN ({','.join('?' * len(tags))}))"
        args += list(tags)
    return store.catalog.db.execute(sql, args).fetchone()[0]


def vector_proof(model: str, content_hash: str, vector: np.ndarray) -> str:
    """SHA-256 binding a vector to the model that made it and the content it was made from.

    Written beside each exported embedding; import reuses a vector only when its proof matches the
    record's own content hash and this store's model, so a vector that was swapped, edited, or paired
    with edited content is re-embedded, record by record, never judged from a sample (issue #25). It
    guards against accidents (a tool rewriting vectors, an edited export), not against a forger, who
    could recompute it: import only exports you trust to carry vectors, or pass none."""
    h = hashlib.sha256(f"{model}\0{content_hash}\0".encode())
    h.update(np.ascontiguousarray(vector, dtype="<f4").tobytes())
    return h.hexdigest()


def _memfs_item(d: dict, vector: np.ndarray | None, access: tuple[float, int] | None, model: str,
                content_hash: str) -> dict:
    if vector is not None:
        d["embedding"] = vector.tolist()
        d["embedding_sha256"] = vector_proof(model, content_hash, vector)
    if access is not None:
        d["access"] = {"accessed_at": access[0], "access_count": access[1]}
    return d


def mms_content_hash(content: str) -> str:
    """mcp-memory-service's content hash (utils/hashing.py generate_content_hash): SHA-256 of the
    content stripped and lower-cased. Its importer deduplicates on this field, so an export carrying
    it adds nothing to the store its memories came from (issue #25)."""
    return hashlib.sha256(content.strip().lower().encode("utf-8")).hexdigest()


def _mms_item(m: Memory, vector: np.ndarray | None) -> dict:
    own = {k: v for k, v in {"id": m.id, "namespace": m.namespace, "key": m.key,
                              "expires_at": documents.format_time(m.expires_at) if m.expires_at else None,
                              "source": m.source}.items() if v is not None}
    d = {"content": m.content, "content_hash": mms_content_hash(m.content), "tags": list(m.tags),
         "created_at": m.created_at.timestamp(), "created_at_iso": documents.format_time(m.created_at),
         "updated_at": m.updated_at.timestamp(), "updated_at_iso": documents.format_time(m.updated_at),
         "memory_type": m.type, "metadata": {**m.metadata, "memfs": own},
         # its store partition: a plain memory's namespace (mms-sqlite import makes a store a namespace)
         "store": m.namespace if m.namespace and m.key is None else "default"}
    if vector is not None:
        d["embedding"] = vector.tolist()
    return d


def export(store: "MemoryStore", out: BinaryIO, *, format: str = "memfs", filter_tags: Iterable[str] = (),
           include_embeddings: bool = False) -> ExportReport:
    """Write every live memory (with any of `filter_tags`, if given) to `out` as one JSON document."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    started = time.monotonic()
    tags = tuple(filter_tags)
    written = 0
    n = 0

    def put(data: bytes) -> None:
        nonlocal written
        out.write(data)
        written += len(data)

    with store.mutex:
        model = store.embedder.model_id
        if format == "memfs":
            head = {"format": EXPORT_FORMAT, "exported_at": documents.format_time(utcnow()),
                    "memfs_version": __version__, "model": model, "filter_tags": list(tags)}
        else:
            head = {"export_metadata": {
                "source_machine": socket.gethostname(), "export_timestamp": utcnow().isoformat(),
                "total_memories": count(store, tags), "database_path": str(store.layout.root),
                "platform": platform.system(), "python_version": platform.python_version(),
                "include_embeddings": include_embeddings, "filter_tags": list(tags),
                "exporter_version": f"memfs {__version__}", "embedding_model": model}}
        put(orjson.dumps(head)[:-1] + b',"memories":[')
        for rows in _pages(store.catalog, tags):
            vectors = store.vectors_for(r[2] for r in rows) if include_embeddings else {}
            if format == "memfs":
                access = store.catalog.access_of(r[0] for r in rows)
                items = [_memfs_item(_document(r), vectors.get(r[2]), access.get(r[0]), model, r[2]) for r in rows]
            else:
                items = [_mms_item(entry_from_row(r).memory, vectors.get(r[2])) for r in rows]
            chunk = b",".join(orjson.dumps(i) for i in items)
            put((b"," if n else b"") + chunk)
            n += len(items)
        put(b"]" + (b',"count":' + str(n).encode() if format == "memfs" else b"") + b"}\n")
    return ExportReport(format, n, written, time.monotonic() - started, include_embeddings)
