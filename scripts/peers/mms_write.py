"""Have mcp-memory-service's own code write a small sqlite_vec.db and JSON export (issue #25).

Run with the python of a venv where `mcp-memory-service` is installed (scripts/make-peer-fixtures.sh):
its SqliteVecMemoryStorage stores memories in two store partitions (`default`, `work`), makes a
versioned update (the old version gets `superseded_by`), and its sync MemoryExporter writes the JSON
export. usage: python mms_write.py OUT_DIR
"""

import asyncio
import sys
from pathlib import Path

from mcp_memory_service.models.memory import Memory
from mcp_memory_service.storage.sqlite_vec import SqliteVecMemoryStorage
from mcp_memory_service.sync.exporter import MemoryExporter
from mcp_memory_service.utils.hashing import generate_content_hash

MEMORIES = [  # (content, tags, memory_type, store, metadata)
    ("Deploys are frozen on Fridays after 3pm", ["ops", "policy"], "decision", "default", {"origin": "retro"}),
    ("The staging database is restored every Monday", ["ops"], "note", "default", {}),
    ("Error E4417 means the disk is full on the ingest node", ["errors", "disk"], "error", "work", {"sev": 2}),
    ("Rotate the API keys every 90 days", ["security"], "note", "work", {}),
    ("numpy float32 halves memory compared to float64", ["perf"], "note", "default", {}),
    ("Postgres is the default for new services", ["db"], "decision", "work", {"owner": "platform"}),
]


async def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    db = out / "sqlite_vec.db"
    for p in out.glob("sqlite_vec.db*"):
        p.unlink()
    storage = SqliteVecMemoryStorage(str(db))
    await storage.initialize()
    for content, tags, mtype, store, meta in MEMORIES:
        m = Memory(content=content, content_hash=generate_content_hash(content), tags=tags, memory_type=mtype,
                   metadata=meta)
        ok, why = await storage.store(m, skip_semantic_dedup=True, store=store)
        if not ok:
            raise SystemExit(f"store failed: {why}")
    # a versioned update: the old version stays in the table with superseded_by set
    old = generate_content_hash("Rotate the API keys every 90 days")
    ok, why, new = await storage.update_memory_versioned(old, "Rotate the API keys every 60 days",
                                                          reason="policy changed")
    if not ok:
        raise SystemExit(f"update_memory_versioned failed: {why}")
    await MemoryExporter(storage).export_to_json(out / "mms_export.json", include_embeddings=True)
    await storage.close()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
