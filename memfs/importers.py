"""Import memories from the stores people run today (issue #13), with dedup, provenance and a record.

Each source format has a reader (source_readers.py) that turns the source into `SourceRecord`s
(source_records.py): a memfs document dict (DESIGN.md §3) with the record's location, or an error
for that record. `import_sources` then

1. opens each source **read-only** (SQLite through a `mode=ro` URI; memfs never writes to a source)
   and reads every source whole before writing anything, so a corrupt or locked source imports nothing;
2. sorts every record into new / duplicate / updated / invalid / expired: by content hash (unless
   `dedup=False`), and by (namespace, key) for key/value sources, so running an import twice adds
   nothing;
3. proves the vectors a source carries record by record (`check_vectors`: a memfs export's
   `embedding_sha256`, or embedding and comparing every foreign one; never a sample) and seeds the
   embedding cache, so `add_many` embeds only what is left;
4. writes the new memories through `MemoryStore.add_many` (batched, with progress) and rewrites the
   updated ones; and keeps a migration record per source (`migration_records.py`) that
   `migrations.verify` replays.

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

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import numpy as np

from . import documents, migration_records
from .documents import Memory, utcnow
from .errors import InvalidDocumentError
from .kv import DEFAULT_NAMESPACE, expired
from .results import Record
from .source_readers import KG_NAMESPACE, READERS  # noqa: F401  (KG_NAMESPACE: part of this module's API)
from .source_records import (Source, SourceError, SourceRecord, connect_ro, file_sha256,  # noqa: F401
                             resolve_path, tables)

if TYPE_CHECKING:
    from .store import MemoryStore

log = logging.getLogger("memfs")

FORMATS = ("memfs", "mms-json", "mms-sqlite", "extended-memory", "swarm", "swarm-json", "kg-jsonl")
# The tag each format's records get (`source:<name>`) unless --source-tag names another.
DEFAULT_SOURCE_NAMES = {"mms-json": "mcp-memory-service", "mms-sqlite": "mcp-memory-service",
                        "extended-memory": "extended-memory", "swarm": "claude-flow", "swarm-json": "claude-flow",
                        "kg-jsonl": "mcp-memory"}
# Cosine similarity above which a source vector counts as this model's (same text, same model: ~1.0;
# another model of the same size: far lower, or a different dimension altogether).
SAME_MODEL_MIN_COSINE = 0.98
CHECK_BATCH = 256  # texts embedded at a time to check a source's unproven vectors
MAX_LISTED_INVALID = 100


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


def read_source(path: Path, fmt: str = "auto") -> Source:
    """Read a whole source into records (the source is never written)."""
    path = resolve_path(Path(path))
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt not in READERS:
        raise SourceError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    sha = file_sha256(path)
    size = path.stat().st_size
    notes: list[str] = []
    records = list(READERS[fmt](path, notes))
    if file_sha256(path) != sha:
        raise SourceError(f"{path} changed while it was read; nothing was imported. Stop the program "
                          "writing to it (or import a copy) and run the import again")
    return Source(path, fmt, sha, size, records, notes)



# -- planning and writing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class InvalidRecord(Record):
    location: str
    reason: str


@dataclass
class SourceReport(Record):
    """What one source gave: counts, its checksum, and the migration record that keeps them."""

    path: str
    format: str
    sha256: str
    read: int = 0
    new: int = 0
    duplicate: int = 0
    updated: int = 0
    invalid: int = 0
    expired: int = 0  # already past expires_at in the source: not imported
    vectors_carried: int = 0
    vectors_reused: int = 0
    vector_check: str | None = None
    records_sha256: str = ""  # SHA-256 over the sorted content hashes of the valid records
    invalid_records: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    record_id: str | None = None
    status: str = "planned"
    error: str | None = None

    _nested = {"invalid_records": InvalidRecord}


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


@dataclass
class _Plan:
    new: list[tuple[SourceRecord, Memory]] = field(default_factory=list)
    updates: list[tuple[str, SourceRecord, Memory]] = field(default_factory=list)  # (existing id, ...)


def apply_options(rec: SourceRecord, src: Source, source_tag: str | None, namespace: str | None) -> dict:
    """The record's document with provenance (a `source:<name>` tag, `source` = file#record) and
    --namespace applied."""
    doc = dict(rec.doc or {})
    own = src.format == "memfs" or rec.own_provenance
    name = source_tag or (None if own else DEFAULT_SOURCE_NAMES.get(src.format))
    if name:  # memfs's own exports carry their provenance; they get a tag only when one is asked for
        doc["tags"] = [*(doc.get("tags") or []), f"source:{name}"]
        if not own:
            doc["source"] = f"{src.path.resolve()}#{rec.location}"
    if namespace:
        own = doc.get("namespace")
        # Several sources often share namespace names ("default"); NS/<theirs> keeps them apart.
        doc["namespace"] = f"{namespace}/{own}" if own and own != DEFAULT_NAMESPACE else namespace
    return doc


def _plan(store: "MemoryStore", src: Source, report: SourceReport, *, dedup: bool, source_tag: str | None,
          namespace: str | None, seen_hashes: set[str], seen_keys: dict[tuple[str, str], str],
          existing_hashes: set[str], existing_keys: dict[tuple[str, str], str], now: datetime) -> _Plan:
    plan = _Plan()
    valid_hashes: list[str] = []
    for rec in src.records:
        report.read += 1
        if rec.warning:
            report.warnings.append(rec.warning)
        try:
            if rec.error:
                raise InvalidDocumentError(rec.error)
            doc = apply_options(rec, src, source_tag, namespace)
            m = documents.from_dict(doc, default_id=documents.new_id(), default_time=now)
        except InvalidDocumentError as e:
            report.invalid += 1
            if len(report.invalid_records) < MAX_LISTED_INVALID:
                report.invalid_records.append(InvalidRecord(rec.location, e.reason))
            continue
        rec.doc = doc
        valid_hashes.append(m.content_hash)
        if rec.vector is not None:
            report.vectors_carried += 1
        if expired(m, now):
            report.expired += 1
            continue
        h = m.content_hash
        if m.key is not None:
            k = (m.namespace or DEFAULT_NAMESPACE, m.key)
            if k in seen_keys:
                report.duplicate += 1  # the first source to name a key wins within one import
            elif k in existing_keys:
                if existing_keys[k] == h:
                    report.duplicate += 1
                else:
                    old_id = store.catalog.ids_for_key(*k)[0]
                    plan.updates.append((old_id, rec, m))
                    report.updated += 1
            else:
                plan.new.append((rec, m))
                report.new += 1
            seen_keys[k] = h
        else:
            if "id" in doc and store.catalog.get(m.id) is not None:
                if store.catalog.get(m.id).hash == h:  # type: ignore[union-attr]
                    report.duplicate += 1
                else:
                    report.invalid += 1
                    report.invalid_records.append(InvalidRecord(
                        rec.location, f"id {m.id!r} is already used by a memory with other content"))
                continue
            if dedup and (h in existing_hashes or h in seen_hashes):
                report.duplicate += 1
            else:
                plan.new.append((rec, m))
                report.new += 1
        seen_hashes.add(h)
    report.records_sha256 = hashlib.sha256("\n".join(sorted(valid_hashes)).encode()).hexdigest()
    return plan


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) or 1.0)


def check_vectors(store: "MemoryStore", carried: list[tuple[SourceRecord, Memory]]) -> tuple[dict, dict, str]:
    """Prove each carried vector, record by record, never from a sample (issue #25).

    Returns (reuse, ours, verdict): `reuse` maps content hash -> the source's vector, for records whose
    `embedding_sha256` (a memfs export's, export.vector_proof) binds that vector to this model and to
    the record's content; `ours` maps content hash -> this model's vector, embedded here in batches for
    every other record, whose source vector is then compared with it (cosine ≥ SAME_MODEL_MIN_COSINE).
    A foreign vector can only be proven by embedding its text, which is the very work reuse would
    save, so foreign vectors are checked and reported but memfs stores its own."""
    from .export import vector_proof

    model, dim = store.embedder.model_id, store.embedder.dim
    reuse: dict[str, np.ndarray] = {}
    unproven: list[tuple[SourceRecord, Memory]] = []
    for rec, m in carried:
        v = np.asarray(rec.vector, dtype=np.float32)
        if (rec.vector_proof and rec.vector_model == model and v.shape == (dim,)
                and vector_proof(model, m.content_hash, v) == rec.vector_proof):
            reuse[m.content_hash] = _unit(v)
        else:
            unproven.append((rec, m))
    ours: dict[str, np.ndarray] = {}
    matched = wrong_dim = 0
    for start in range(0, len(unproven), CHECK_BATCH):
        batch = unproven[start:start + CHECK_BATCH]
        todo = [(rec, m) for rec, m in batch if m.content_hash not in ours]
        embedded = store.embedder.embed([m.content for _, m in todo]) if todo else []
        for (rec, m), e in zip(todo, embedded):
            ours[m.content_hash] = e
            v = np.asarray(rec.vector, dtype=np.float32)
            if v.shape != (dim,):
                wrong_dim += 1
            elif float(_unit(v) @ e) >= SAME_MODEL_MIN_COSINE:
                matched += 1
    parts = []
    if reuse:
        parts.append(f"{len(reuse)} reused, each proven by its embedding_sha256 ({model})")
    if unproven:
        parts.append(f"{len(ours)} without a proof embedded here and compared: {matched} matched this model's "
                     f"vector of their text (cosine ≥ {SAME_MODEL_MIN_COSINE})"
                     + (f", {len(ours) - matched - wrong_dim} did not" if len(ours) - matched - wrong_dim else "")
                     + (f", {wrong_dim} had another dimension than {dim}" if wrong_dim else "")
                     + "; memfs's own vectors stored")
    return reuse, ours, "; ".join(parts)


def _seed_vectors(store: "MemoryStore", plan: _Plan, report: SourceReport) -> None:
    carried = [(rec, m) for rec, m in plan.new + [(r, m) for _, r, m in plan.updates] if rec.vector is not None]
    if not carried:
        return
    reuse, ours, report.vector_check = check_vectors(store, carried)
    store.catalog.cache_vectors(store.embedder.model_id, {**ours, **reuse})
    report.vectors_reused = len(reuse)


def import_sources(store: "MemoryStore", paths: Iterable[Path | str], *, format: str = "auto",
                   dry_run: bool = False, dedup: bool = True, source_tag: str | None = None,
                   namespace: str | None = None, progress: Callable[[str, int, int], None] | None = None,
                   on_source: Callable[[SourceReport], None] | None = None) -> ImportReport:
    """Import every source; see the module docstring.

    Every source is read and planned before anything is written, so one that cannot be read
    (SourceError) stops the import with nothing written at all. Then the new memories of all sources
    go through one `add_many`: one encode pipeline and full batches, instead of a pipeline that fills
    and drains at each of twelve sources (measured: ~1 ms a record less).

    `dry_run`: read, check and count; write nothing (no memory, no catalog row, no record).
    """
    started = time.monotonic()
    out = ImportReport([], dry_run)
    seen_hashes: set[str] = set()
    seen_keys: dict[tuple[str, str], str] = {}
    with store.mutex:
        existing_hashes = store.catalog.hashes()
        existing_keys = store.catalog.key_hashes()
        planned: list[tuple[Source, SourceReport, _Plan, datetime]] = []
        for p in paths:
            begun = utcnow()
            src = read_source(Path(p), format)
            report = SourceReport(str(src.path.resolve()), src.format, src.sha256, warnings=list(src.notes))
            plan = _plan(store, src, report, dedup=dedup, source_tag=source_tag, namespace=namespace,
                         seen_hashes=seen_hashes, seen_keys=seen_keys, existing_hashes=existing_hashes,
                         existing_keys=existing_keys, now=begun)
            src.records = []  # planned: the plan keeps what it needs
            planned.append((src, report, plan, begun))
            out.sources.append(report)
        if dry_run:
            for _, report, _, _ in planned:
                report.status = "dry-run"
                if on_source:
                    on_source(report)
        else:
            options = {"dedup": dedup, "source_tag": source_tag, "namespace": namespace}
            records = [migration_records.start(store.layout, src, report, {"format": src.format, **options}, begun)
                       for src, report, _, begun in planned]
            try:
                _write(store, [(plan, report) for _, report, plan, _ in planned], progress)
                for _, report, _, _ in planned:
                    report.status = "completed"
            except Exception as e:
                for _, report, _, _ in planned:
                    report.status, report.error = "failed", f"{type(e).__name__}: {e}"
                raise
            finally:
                for record, (_, report, _, _) in zip(records, planned):
                    migration_records.finish(store.layout, record, report)
                    if on_source:
                        on_source(report)
    out.seconds = time.monotonic() - started
    return out


def _write(store: "MemoryStore", plans: list[tuple[_Plan, SourceReport]], progress) -> None:
    for plan, report in plans:
        _seed_vectors(store, plan, report)
    new = [(rec, m) for plan, _ in plans for rec, m in plan.new]
    results = store.add_many([rec.doc for rec, _ in new], allow_duplicate=True, progress=progress) if new else []
    access = [(res.memory.id, *rec.access) for (rec, _), res in zip(new, results) if rec.access]
    for plan, _ in plans:
        for old_id, rec, m in plan.updates:
            old = store.get(old_id)
            store.rewrite(old_id, content=m.content, metadata={**old.metadata, **m.metadata},
                           tags=documents.normalize_tags([*old.tags, *m.tags]), expires_at=m.expires_at,
                           updated_at=max(m.updated_at, old.updated_at))
            if rec.access:
                access.append((old_id, *rec.access))
    if access:
        store.catalog.set_access(access)


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
