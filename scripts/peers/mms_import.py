"""Run mcp-memory-service's own importer (sync/importer.py MemoryImporter) on JSON exports, into a
sqlite_vec.db, and print the live rows before and after as JSON (issue #25: a memfs mms-format export
must add nothing to the store its memories came from).

usage: python mms_import.py DB EXPORT.json...
"""

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

from mcp_memory_service.storage.sqlite_vec import SqliteVecMemoryStorage
from mcp_memory_service.sync.importer import MemoryImporter

LIVE = "SELECT count(*) FROM memories WHERE deleted_at IS NULL AND (superseded_by IS NULL OR superseded_by = '')"


def live(db: str) -> int:
    with sqlite3.connect(db) as c:
        return c.execute(LIVE).fetchone()[0]


async def main(db: str, exports: list[str]) -> None:
    before = live(db)
    storage = SqliteVecMemoryStorage(db)
    await storage.initialize()
    stats = await MemoryImporter(storage).import_from_json([Path(p) for p in exports])
    await storage.close()
    print(json.dumps({"before": before, "after": live(db), "stats": stats}, default=str))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2:]))
