"""Migration records read back (issue #13): `history` lists them, `load` finds one, and `verify`
re-reads a record's source and proves every record is present in the store.

The records themselves (where they live, their format) are written by memfs.migration_records, which
the importers call; this module calls the importers to re-read a source.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import orjson

from . import documents
from .documents import utcnow
from .errors import NotFoundError
from .filestore import Layout
from .kv import expired
from .migration_records import folder
from .results import Record

if TYPE_CHECKING:
    from .store import MemoryStore


def history(layout: Layout) -> list[dict]:
    """Every migration record, oldest first."""
    out = []
    for path in sorted(folder(layout).glob("*.json")):
        try:
            out.append(orjson.loads(path.read_bytes()))
        except orjson.JSONDecodeError:
            out.append({"id": path.stem, "status": "unreadable", "error": f"{path} is not valid JSON"})
    return sorted(out, key=lambda r: (r.get("started_at") or "", r.get("id", "")))


def load(layout: Layout, record_id: str) -> dict:
    path = folder(layout) / f"{record_id}.json"
    if not path.is_file():
        matches = [p for p in folder(layout).glob("*.json") if p.stem.startswith(record_id)]
        if len(matches) != 1:
            raise NotFoundError(f"no migration record {record_id!r}; `memfs import --history` lists them")
        path = matches[0]
    return orjson.loads(path.read_bytes())


@dataclass
class VerifyReport(Record):
    record_id: str
    source: str
    ok: bool
    checked: int = 0
    present: int = 0
    lost: int = 0  # records not in the store (every one counted; the first `max_listed` are in `missing`)
    missing: list = field(default_factory=list)  # locations of records not in the store
    changed: list = field(default_factory=list)  # keys present with other content since (edited later)
    source_changed: bool = False  # the source's SHA-256 differs from the record's
    records_sha256_matches: bool = True
    note: str | None = None


def _missing(rep: VerifyReport, location: str, max_listed: int) -> None:
    rep.lost += 1
    if len(rep.missing) < max_listed:
        rep.missing.append(location)


def _edited_since(store: "MemoryStore", m, imported_at: datetime | None) -> bool:
    """Does the memory holding m's (namespace, key) carry a write after the import? Then other content
    there is a later edit (`changed`); otherwise the key holds another record's content and this
    record was lost (two source records that mapped to one key, issue #25)."""
    ids = store.catalog.ids_for_key(m.namespace or "default", m.key)
    entry = store.catalog.get(ids[0]) if ids else None
    return entry is not None and imported_at is not None and entry.memory.updated_at > imported_at


def verify(store: "MemoryStore", record_id: str, *, max_listed: int = 100) -> VerifyReport:
    """Re-read the record's source with the same options and check every valid record is in the store.

    Every record is compared, none sampled. A plain record counts as present when its content is
    stored; a key/value record when its (namespace, key) holds that content, or, reported as
    `changed`, other content written after the import ended. A key holding another record's content
    with no write since means this record was lost, and `ok` is false.
    """
    from .importers import apply_options, open_source

    record = load(store.layout, record_id)
    src_info, options = record["source"], record.get("options", {})
    src = open_source(Path(src_info["path"]), src_info["format"])  # read record by record, never whole
    rep = VerifyReport(record["id"], src_info["path"], ok=False, source_changed=src.sha256 != src_info["sha256"])
    now = utcnow()
    ended = record.get("ended_at")
    imported_at = documents.parse_time(ended) if ended else None
    hashes = store.catalog.hashes()
    keys = store.catalog.key_hashes()
    valid: list[str] = []
    for rec in src.records():
        if rec.error:
            continue
        try:
            doc = apply_options(rec, src, options.get("source_tag"), options.get("namespace"))
            m = documents.from_dict(doc, default_id="verify", default_time=now)
        except Exception:
            continue
        valid.append(m.content_hash)
        if expired(m, now):
            continue  # expired: never imported (or since swept), by design
        rep.checked += 1
        if m.key is not None:
            h = keys.get((m.namespace or "default", m.key))
            if h == m.content_hash:
                rep.present += 1
            elif h is not None and _edited_since(store, m, imported_at):
                rep.present += 1
                if len(rep.changed) < max_listed:
                    rep.changed.append(rec.location)
            else:  # absent, or holding another record's content: this one was lost
                _missing(rep, rec.location, max_listed)
        elif m.content_hash in hashes:
            rep.present += 1
        else:
            _missing(rep, rec.location, max_listed)
    rep.records_sha256_matches = (hashlib.sha256("\n".join(sorted(valid)).encode()).hexdigest()
                                  == record.get("records_sha256"))
    rep.ok = rep.present == rep.checked and rep.lost == 0
    if rep.source_changed:
        rep.note = "the source changed since it was imported: checked against what it holds now"
    return rep
