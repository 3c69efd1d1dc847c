"""A catalog row and the memory it holds: the Entry and Invalid records the catalog answers with, the
columns an Entry is read from (COLUMNS) and the reading itself (entry_from_row), the fingerprint of
what the vector index holds for a memory, and the chunking of long `IN (...)` lists.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

import orjson

from .documents import Memory, from_dict
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
    doc = orjson.loads(body)
    doc["content"] = content
    # Rows are only written from documents that parsed, so this cannot fail on our own data.
    m = from_dict(doc, default_id=mem_id, default_time=datetime.now(timezone.utc), check_limits=False)
    return Entry(m, path, h, FileState(size, mtime_ns, ino, ctime_ns), doc)


def ts(t: datetime) -> float:
    return t.timestamp()


def vector_fingerprint(m: Memory) -> str:
    """Everything the vector index stores for a memory; a change means it must be told again."""
    return orjson.dumps([m.content_hash, m.type, ts(m.created_at), list(m.tags)]).decode()


def chunks(items: list, n: int) -> Iterator[list]:
    """`items` n at a time (SQLite limits the variables of one statement)."""
    for i in range(0, len(items), n):
        yield items[i:i + n]
