"""A memory's version id and the file writes a sync makes: shared by the engine (pushing) and the
merge (applying what arrived), so neither imports the other."""

from __future__ import annotations

import hashlib

import orjson

from .. import documents
from ..documents import Memory
from ..filestore import atomic_write, fsync_dir, new_relpath


def version_of(m: Memory) -> str:
    """A version id: the hash of the document's canonical JSON (any two replicas holding the same
    document compute the same one, however the file is formatted)."""
    return hashlib.sha256(orjson.dumps(m.to_dict(), option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def write_memory(store, m: Memory, path: str | None) -> str:
    """Write a memory's file (at its path, or a new one) atomically; returns the relative path."""
    rel = path or new_relpath(store.layout.memories, m.id, m.content, m.created_at)
    atomic_write(store.layout.memories / rel, m.to_bytes())
    return rel


def delete_file(store, path: str) -> None:
    file = store.layout.memories / path
    file.unlink(missing_ok=True)
    fsync_dir(file.parent)


def memory_from(doc: dict, mem_id: str) -> Memory:
    return documents.from_dict(dict(doc), default_id=mem_id, default_time=documents.utcnow())
