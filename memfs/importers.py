"""Import memories from the stores people run today (issue #13), with dedup, provenance and a record.

Each source format has a reader (source_readers.py) that turns the source into `SourceRecord`s
(source_records.py): a memfs document dict (DESIGN.md §3) with the record's location, or an error
for that record. Readers stream: a SQLite source is read through a cursor, a JSON one element by
element (json_stream.py), so no source is ever held whole (issue #25). `import_sources`

1. opens each source **read-only** (SQLite through a `mode=ro` URI; memfs never writes to a source);
2. reads every source once, writing nothing to the store (import_plan.py), and sorts every record
   into new / duplicate / updated / invalid / expired: by content hash (unless `dedup=False`), and by
   (namespace, key) for key/value sources, so running an import twice adds nothing. What it keeps in
   memory is per record and small (hashes, keys); the records to write go to a spool, a temporary
   file. A source that cannot be read through (corrupt, locked, truncated, changed while read) stops
   the import with nothing written;
3. writes the spooled records in batches (import_write.py): the vectors a batch carries are proven
   record by record (a memfs export's `embedding_sha256`, or embedding and comparing every foreign
   one; never a sample) and seeded in the embedding cache, so `add_memories` embeds only what is
   left; and keeps a migration record per source (`migration_records.py`) that `migrations.verify`
   replays.

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
| `swarm`           | claude-flow's `.swarm/memory.db` table `memory_entries`: 2.x (`value`, seconds,   |
|                   | `ttl`) or 3.x (`content`, milliseconds, `embedding`, `status`)                  |
| `swarm-json`      | claude-flow 3.x `memory export` (`ruflo-memory-export/v1`)                      |
| `kg-jsonl`        | the MCP reference memory server's `memory.jsonl` (entity and relation lines)    |
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

from . import migration_records
from .documents import utcnow
from .import_plan import Plan, Planner, SourceReport, apply_options  # noqa: F401  (apply_options: API)
from .import_write import BatchWriter
from .results import Record
from .source_readers import KG_NAMESPACE, READERS  # noqa: F401  (KG_NAMESPACE: part of this module's API)
from .source_records import Source, SourceError, connect_ro, file_sha256, resolve_path, tables

if TYPE_CHECKING:
    from .store import MemoryStore

log = logging.getLogger("memfs")

FORMATS = ("memfs", "mms-json", "mms-sqlite", "extended-memory", "swarm", "swarm-json", "kg-jsonl")


def detect_format(path: Path) -> str:
    """Guess a source's format from its content (never from its name alone)."""
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"SQLite format 3\x00"):
        db = connect_ro(path)
        try:
            found = tables(db)
        finally:
            db.close()
        entries = found.get("memory_entries", set())
        if {"key", "namespace"} <= entries and ("value" in entries or "content" in entries):
            return "swarm"  # claude-flow 2.x (value) or 3.x (content)
        if {"key", "value", "type"} <= found.get("memory_store", set()):
            return "extended-memory"
        if {"content_hash", "content"} <= found.get("memories", set()):
            return "mms-sqlite"
        raise SourceError(f"{path}: a SQLite file with none of the known tables "
                          "(memory_entries, memory_store, memories); pass --format")
    text = head.lstrip()
    if b'"export_metadata"' in head:
        return "mms-json"
    if b'"memfs.export/' in head:
        return "memfs"
    if b'"ruflo-memory-export/' in head:
        return "swarm-json"
    if text.startswith(b"{") and (b'"type":"entity"' in head.replace(b" ", b"")
                                  or b'"type":"relation"' in head.replace(b" ", b"")):
        return "kg-jsonl"
    raise SourceError(f"{path}: cannot tell its format; pass --format ({', '.join(FORMATS)})")


def open_source(path: Path, fmt: str = "auto") -> Source:
    """A source, its format found and its checksum taken; its records are read by `Source.records()`
    (the source is never written)."""
    path = resolve_path(Path(path))
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in READERS:
        raise SourceError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    return Source(path, fmt, file_sha256(path), path.stat().st_size, READERS[fmt])


def unchanged(src: Source) -> None:
    """Refuse a source whose bytes are no longer those its checksum was taken of."""
    if file_sha256(src.path) != src.sha256:
        raise SourceError(f"{src.path} changed while it was read; nothing was imported. Stop the program "
                          "writing to it (or import a copy) and run the import again")


# -- planning and writing ---------------------------------------------------------------------------


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


def import_sources(store: "MemoryStore", paths: Iterable[Path | str], *, format: str = "auto",
                   dry_run: bool = False, dedup: bool = True, source_tag: str | None = None,
                   namespace: str | None = None, progress: Callable[[str, int, int], None] | None = None,
                   on_source: Callable[[SourceReport], None] | None = None) -> ImportReport:
    """Import every source; see the module docstring.

    Every source is read and planned before anything is written, so one that cannot be read
    (SourceError) stops the import with nothing written at all. Then the planned records of all
    sources are written in batches that run on from one source into the next: full batches for the
    model's pipeline, instead of one that fills and drains at each of twelve small sources.

    `dry_run`: read, check and count; write nothing (no memory, no catalog row, no record).
    """
    started = time.monotonic()
    out = ImportReport([], dry_run)
    plans: list[Plan] = []
    try:
        with store.mutex:
            planner = Planner(store, dedup=dedup, source_tag=source_tag, namespace=namespace, spool=not dry_run)
            for p in paths:
                begun = utcnow()
                src = open_source(Path(p), format)
                report = SourceReport(str(src.path.resolve()), src.format, src.sha256)
                plans.append(planner.plan(src, report, begun))
                unchanged(src)
                report.warnings[:0] = src.notes
                out.sources.append(report)
            if dry_run:
                for plan in plans:
                    plan.report.status = "dry-run"
                    if on_source:
                        on_source(plan.report)
            else:
                _write(store, plans, {"dedup": dedup, "source_tag": source_tag, "namespace": namespace},
                       progress, on_source)
    finally:
        for plan in plans:
            plan.spool.close()
    out.seconds = time.monotonic() - started
    return out


def _write(store: "MemoryStore", plans: list[Plan], options: dict, progress, on_source) -> None:
    """Write every plan, each source's migration record "running" before its first memory and
    finished (completed, or failed with the error) after the last."""
    records = [migration_records.start(store.layout, plan.source, plan.report, {"format": plan.source.format,
                                                                                **options}, plan.begun)
               for plan in plans]
    try:
        BatchWriter(store, plans, progress).run()
        for plan in plans:
            plan.report.status = "completed"
    except Exception as e:
        for plan in plans:
            plan.report.status, plan.report.error = "failed", f"{type(e).__name__}: {e}"
        raise
    finally:
        for record, plan in zip(records, plans):
            migration_records.finish(store.layout, record, plan.report)
            if on_source:
                on_source(plan.report)


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
