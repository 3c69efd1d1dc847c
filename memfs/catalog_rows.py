"""A catalog row and the memory it holds: the Entry and Invalid records the catalog answers with, the
columns an Entry is read from (COLUMNS) and the reading itself (entry_from_row), the fingerprint of
what the vector index holds for a memory, and the chunking of long `IN (...)` lists.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

import orjson

from .documents import FORMAT, Memory, from_dict
from .filestore import FileState

# The columns entry_from_row reads, in its order; content and body come last.
COLUMNS = "id, path, hash, size, mtime_ns, ino, ctime_ns, content, body"


@dataclass(frozen=True)
class Entry:
    """A catalog row: the memory as last indexed, and the file state it was read from."""

    memory: Memory
    path: str
    hash: str
    state: FileState
    # The document as the catalog holds it (the memory's to_dict, content included): a sync record
    # carries it as is, and its version id is computed from it, without writing the memory out again.
    doc: dict[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Invalid:
    path: str
    reason: str
    state: FileState
    dup_id: str | None = None  # refused because another file holds this id


def entry_from_row(row) -> Entry:
    """The Entry for a row of COLUMNS."""
    mem_id, path, h, size, mtime_ns, ino, ctime_ns, content, body = row
    # The body leaves out what the row has in columns, and the format (it is always the one written).
    doc = {"format": FORMAT, "id": mem_id, **orjson.loads(body)}
    doc["content"] = content
    # Rows are only written from documents that parsed, so this cannot fail on our own data.
    m = from_dict(doc, default_id=mem_id, default_time=datetime.now(timezone.utc), check_limits=False)
    return Entry(m, path, h, FileState(size, mtime_ns, ino, ctime_ns), doc)


def ts(t: datetime) -> float:
    return t.timestamp()


def vector_fingerprint(m: Memory) -> str:
    """Everything the vector index stores for a memory, as a digest; a change means it must be told again."""
    return fingerprint_digest(orjson.dumps([m.content_hash, m.type, ts(m.created_at), list(m.tags)]))


def fingerprint_digest(data: bytes | str | None) -> str | None:
    """64 bits of BLAKE2b, in hex: two per row, 16 bytes each instead of ~100 (issue #26, disk). The
    catalog's SQL function `memfs_fp`, which migration 5 runs over the fingerprints kept whole before."""
    if data is None:
        return None
    return hashlib.blake2b(data.encode() if isinstance(data, str) else data, digest_size=8).hexdigest()


def chunks(items: list, n: int) -> Iterator[list]:
    """`items` n at a time (SQLite limits the variables of one statement)."""
    for i in range(0, len(items), n):
        yield items[i:i + n]
