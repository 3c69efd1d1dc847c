"""Migration records: what each import took from where, kept with the data (issue #13).

One JSON file per imported source under `data/memories/.migrations/` — inside memories/ so every
backup carries it (a dot-folder, so it is never read as a memory), and not in indexes/, because a
record is not derived from anything and a reindex must never lose it. Format `memfs.migration/1`:

    {"format", "id", "source": {"path", "format", "sha256", "size"}, "options",
     "counts": {"read", "new", "duplicate", "updated", "invalid", "expired"}, "records_sha256",
     "vectors": {"carried", "reused", "check"}, "invalid_records": [...], "warnings": [...],
     "started_at", "ended_at", "status": "running|completed|failed", "error"}

A record is written as "running" before the first memory of its source, and finished after the last:
one left "running" marks an import that was interrupted; running the same import again resumes it
(dedup skips what already arrived). This module writes the records (the importers call it);
memfs.migrations reads them back and verifies an import against its source.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from . import documents
from .documents import utcnow
from .filestore import Layout, atomic_write

if TYPE_CHECKING:
    from .import_plan import SourceReport
    from .source_records import Source

FORMAT = "memfs.migration/1"
FOLDER = ".migrations"


def folder(layout: Layout) -> Path:
    return layout.memories / FOLDER


def _record_id(src: "Source", begun: datetime) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", src.path.name)[:40]
    return f"{begun.strftime('%Y%m%dT%H%M%S')}-{stem}-{src.sha256[:8]}"


def _body(report: "SourceReport", record: dict) -> dict:
    record["counts"] = {n: getattr(report, n) for n in ("read", "new", "duplicate", "updated", "invalid", "expired")}
    record["records_sha256"] = report.records_sha256
    record["vectors"] = {"carried": report.vectors_carried, "reused": report.vectors_reused,
                         "check": report.vector_check}
    record["invalid_records"] = [r.to_dict() for r in report.invalid_records]
    record["warnings"] = list(report.warnings)
    record["status"] = report.status
    record["error"] = report.error
    return record


def _write(layout: Layout, record: dict) -> None:
    path = folder(layout) / f"{record['id']}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")


def start(layout: Layout, src: "Source", report: "SourceReport", options: dict, begun: datetime) -> dict:
    """Write the record as "running", before any memory of this source is written."""
    base = _record_id(src, begun)
    rid, n = base, 1
    while (folder(layout) / f"{rid}.json").exists():
        n += 1
        rid = f"{base}-{n}"
    record = {"format": FORMAT, "id": rid,
              "source": {"path": str(src.path.resolve()), "format": src.format, "sha256": src.sha256,
                         "size": src.size},
              "options": options, "started_at": documents.format_time(begun), "ended_at": None}
    report.status = "running"
    report.record_id = rid
    _write(layout, _body(report, record))
    return record


def finish(layout: Layout, record: dict, report: "SourceReport") -> None:
    record["ended_at"] = documents.format_time(utcnow())
    _write(layout, _body(report, record))
