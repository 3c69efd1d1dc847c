"""What every source reader shares (issue #13, #25): a source record, opening SQLite read-only, and
the parsing of the fields every peer spells its own way (times, JSON objects, tag lists).
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson

from . import documents
from .errors import InvalidDocumentError, MemfsError
from .json_stream import JsonStreamError, ObjectStream

# JSON numbers memfs keeps exactly: orjson (and every store in between) reads integers as 64-bit, and
# silently turns a bigger one into a float. Such a record is refused, never rounded (issue #25).
MAX_EXACT_INT = 2 ** 64 - 1
MIN_EXACT_INT = -(2 ** 63)


class SourceError(MemfsError):
    """A source cannot be read at all (missing, corrupt, locked, unknown format): nothing is imported."""


@dataclass
class SourceRecord:
    location: str  # where in the source: "memory_entries id=42", "line 7", "memories[3]"
    doc: dict | None = None  # a memfs document; the plan applies the options and checks it (memory_of)
    error: str | None = None
    vector: Any = None  # the source's own vector for this record, if it has one
    access: tuple[float, int] | None = None  # (accessed_at as Unix seconds, access_count)
    warning: str | None = None
    # written by memfs itself (its mms-format export): its `source` is kept and no source tag added
    own_provenance: bool = False
    vector_model: str | None = None  # the model the source says made `vector`, if it says
    vector_proof: str | None = None  # memfs export: SHA-256 binding the vector to its model and content


@dataclass
class Source:
    """A source opened for import: what it is, and its records read afresh on each `records()` call
    (an import's plan, `migrations.verify`), never held whole (issue #25)."""

    path: Path
    format: str
    sha256: str
    size: int
    reader: Callable[[Path, list[str]], Iterator[SourceRecord]]
    notes: list[str] = field(default_factory=list)

    def records(self, notes: list[str] | None = None) -> Iterator[SourceRecord]:
        """The records, in the source's order; what the reader notes goes to `notes` (or nowhere)."""
        return self.reader(self.path, [] if notes is None else notes)


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
        raise sqlite_error(path, e) from None
    if problems != ["ok"]:
        db.close()
        raise SourceError(f"{path} is corrupt ({'; '.join(problems[:3])}); nothing was imported. "
                          "Recover it first (sqlite3 .recover) or import a backup of it")
    return db


def sqlite_error(path: Path, e: sqlite3.Error) -> SourceError:
    text = str(e)
    if "locked" in text or "busy" in text:
        return SourceError(f"{path} is locked by another process ({text}); nothing was imported. Stop the "
                           "program writing to it, or copy the file (with its -wal) and import the copy")
    return SourceError(f"{path} cannot be read as SQLite ({text}); nothing was imported")


def tables(db: sqlite3.Connection) -> dict[str, set[str]]:
    # Virtual tables are skipped: their module (sqlite-vec's vec0) is not loaded, and their data lies in
    # ordinary shadow tables anyway.
    names = [r[0] for r in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL%'")]
    return {n: {c[1] for c in db.execute(f'PRAGMA table_info("{n}")')} for n in names}



def source_time(value: Any, name: str) -> str | None:
    """A source timestamp (Unix seconds or milliseconds, ISO text, SQLite's `YYYY-MM-DD HH:MM:SS`)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = value / 1000.0 if value > 1e11 else float(value)  # JS Date.now() is in milliseconds
        return documents.format_time(datetime.fromtimestamp(seconds, timezone.utc))
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            return source_time(float(text), name)
        return documents.format_time(documents.parse_time(text.replace(" ", "T", 1), name))
    raise InvalidDocumentError(f"'{name}' is neither a time nor a number: {value!r}")


def unix_time(value: Any) -> float | None:
    t = source_time(value, "accessed_at")
    return documents.parse_time(t).timestamp() if t else None


def json_obj(text: Any, name: str) -> dict:
    if text is None or text == "":
        return {}
    if isinstance(text, dict):
        return text
    try:
        value = loads_exact(text)
    except (orjson.JSONDecodeError, TypeError):
        raise InvalidDocumentError(f"'{name}' is not JSON: {str(text)[:60]!r}") from None
    return value if isinstance(value, dict) else {"value": value}


def tag_list(value: Any) -> list[str]:
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


def guard(location: str, build: Callable[[], SourceRecord]) -> SourceRecord:
    """One bad record is reported with its location and never stops the rest."""
    try:
        return build()
    except (InvalidDocumentError, ValueError, TypeError, KeyError, OverflowError) as e:
        return SourceRecord(location, error=getattr(e, "reason", None) or str(e))


def rows(path: Path, sql: str) -> Iterator[sqlite3.Row]:
    """The rows of a query on a SQLite source, fetched as they are used (never all at once)."""
    db = connect_ro(path)
    try:
        yield from db.execute(sql)
    except sqlite3.DatabaseError as e:
        raise sqlite_error(path, e) from None
    finally:
        db.close()


def json_items(path: Path, stream: ObjectStream) -> Iterator[tuple[int, bytes, Any]]:
    """`stream.items()`, with a file that is not the JSON it should be refused as a whole."""
    try:
        yield from stream.items()
    except JsonStreamError as e:
        raise SourceError(f"{path} is not valid JSON ({e}); nothing was imported") from None


def _exact_int(text: str) -> int:
    value = int(text)
    if not MIN_EXACT_INT <= value <= MAX_EXACT_INT:
        raise InvalidDocumentError(
            f"integer {text[:30]}{'…' if len(text) > 30 else ''} is beyond 64 bits: memfs keeps JSON numbers "
            "as 64-bit values and would round it; store it as a string in the source, then import again")
    return value


def refuse_long_ints(text: str | bytes) -> None:
    """Raise InvalidDocumentError if JSON `text` holds an integer beyond 64 bits.

    orjson reads such an integer as a float, silently. Only text where a number of 19+ digits starts
    (at the start, or after `[`, `:`, `,`, `-` or white space) is parsed again, by the standard library,
    whose integers are exact, so the check sees the digits as written. A run of digits inside a hex
    string (a vector's sha256) or after a decimal point (a vector's float) is not such a number; one
    after a space or a `-` inside a string is parsed again for nothing, which costs time, not truth."""
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    if _may_hold_long_int(data):
        json.loads(text, parse_int=_exact_int)


def _may_hold_long_int(data: bytes) -> bool:
    # Digits become 0, the bytes a number may follow (`[ : ,`, white space, and `-`, its own sign)
    # become `:`, every other byte `x`: a long integer is then the start or `:`, then 19 zeros. One
    # bytes.translate and one `in` run at memory speed: ~15 µs for an 8.5 KB record with its vector,
    # where deleting white space and searching four patterns took ~28 µs, twice per record (issue #25);
    # the regex before that tried every position, at ~17 MB/s.
    marked = data.translate(_MARKS)
    return marked.startswith(_RUN) or _MARK_RUN in marked


def loads_exact(text: str | bytes) -> Any:
    """JSON text as values, refusing integers beyond 64 bits instead of rounding them to floats."""
    value = orjson.loads(text)
    refuse_long_ints(text)
    return value


_MARKS = bytes(ord("0") if chr(b).isdigit() and b < 128 else ord(":") if b in b"[:,- \t\n\r" else ord("x")
               for b in range(256))
_RUN = b"0" * 19
_MARK_RUN = b":" + _RUN
