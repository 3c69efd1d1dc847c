"""`memfs mcp --import-kg PATH` (or MEMORY_FILE_PATH, as the reference memory server reads it): bring the
user's existing knowledge graph in on the first start, once (issue #22).

The import is memfs's own (memfs.importers, format kg-jsonl) and leaves its record in
data/imports/ (memfs.migrations); a later start finds that record for the same file and imports
nothing, so `memfs import --history` shows exactly one import of it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("memfs.mcp")

KG_FORMAT = "kg-jsonl"


def already_imported(history: list[dict], path: Path) -> bool:
    """Whether an import of the file at `path` completed before (its record says so)."""
    where = str(path.resolve())
    return any((r.get("source") or {}).get("path") == where and r.get("status") == "completed" for r in history)


def import_once(ops: Any, path: Path) -> str:
    """Import `path` unless a record shows it was; what happened, in one line for the log."""
    if not path.is_file():
        return f"{path}: no such file yet, nothing to import (the graph starts empty)"
    if already_imported(ops.import_history(), path):
        return f"{path}: imported on an earlier start (see `memfs import --history`); not imported again"
    report = ops.import_sources([str(path.resolve())], format=KG_FORMAT)
    s = report.sources[0]
    return f"{path}: imported {s.new} new, {s.duplicate} already there, {s.invalid} invalid lines"


def importing_first(connect: Callable[[], Any], path: Path) -> Callable[[], Any]:
    """`connect`, then the import of `path` (once), before the first tool call is answered."""
    def connect_and_import():
        ops = connect()
        log.info("knowledge graph: %s", import_once(ops, path))
        return ops
    return connect_and_import
