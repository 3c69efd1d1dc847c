"""A memory's version id, its ancestry, and the file writes a sync makes: shared by the engine
(pushing), the merge (applying what arrived) and compaction, so none imports another for them."""

from __future__ import annotations

import hashlib

import orjson

from .. import documents
from ..documents import Memory
from ..filestore import atomic_write, fsync_dir, new_relpath


def version_of(m: Memory) -> str:
    """A version id: the hash of the document's canonical JSON (any two replicas holding the same
    document compute the same one, however the file is formatted)."""
    return version_of_doc(m.to_dict())


def version_of_doc(doc: dict) -> str:
    """version_of for a memory's document as `to_dict` gives it (key order does not matter): the
    catalog keeps it, so a push hashes what it holds instead of writing each memory out again."""
    return hashlib.sha256(orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def parents_of(records: list[dict]) -> dict[tuple[str, str], set]:
    """(id, version) -> the versions it was made from, as put/del records and their `lineage` tell."""
    out: dict[tuple[str, str], set] = {}
    for r in records:
        if r.get("op") != "resolve":
            for v, parent in [[r.get("v"), r.get("parent")], *r.get("lineage", ())]:
                out.setdefault((r["id"], v), set()).add(parent)
    return out


def ancestors(parents: dict[tuple[str, str], set], mem_id: str, v: str) -> set[str]:
    """Every version `parents` ((id, version) -> the versions it was made from) shows `v` descends from."""
    out, todo = set(), [v]
    while todo:
        for parent in parents.get((mem_id, todo.pop()), ()):
            if isinstance(parent, str) and parent not in out:
                out.add(parent)
                todo.append(parent)
    return out


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
