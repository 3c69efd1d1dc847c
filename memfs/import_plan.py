"""An import's first pass (issue #13, #25): read every record of every source, check it, and sort it
into new / duplicate / updated / invalid / expired, writing nothing.

What the pass keeps in memory is small and per record: the content hashes and keys seen (for dedup
across the whole run). Each record to write goes, as this pass checked it, to the plan's `Spool`: an
unnamed temporary file in the store's data/ directory. The second pass (memfs.import_write) reads the
spool, not the source, and writes it in batches: it writes exactly what was checked here and what the
source's checksum (taken before, compared after this pass) stands for, and parses nothing twice.
"""

from __future__ import annotations

import hashlib
import struct
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
import orjson

from . import documents
from .documents import Memory
from .errors import InvalidDocumentError
from .kv import DEFAULT_NAMESPACE, expired
from .results import Record
from .source_records import Source, SourceRecord

if TYPE_CHECKING:
    from .store import MemoryStore

# The tag each format's records get (`source:<name>`) unless --source-tag names another.
DEFAULT_SOURCE_NAMES = {"mms-json": "mcp-memory-service", "mms-sqlite": "mcp-memory-service",
                        "extended-memory": "extended-memory", "swarm": "claude-flow", "swarm-json": "claude-flow",
                        "kg-jsonl": "mcp-memory"}
MAX_LISTED_INVALID = 100


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

    def refuse(self, location: str, reason: str) -> None:
        """Count an invalid record; the first MAX_LISTED_INVALID are listed with their reason."""
        self.invalid += 1
        if len(self.invalid_records) < MAX_LISTED_INVALID:
            self.invalid_records.append(InvalidRecord(location, reason))


class Spool:
    """The records one plan writes, in an unnamed temporary file (O_TMPFILE where the system has it:
    gone with the process however it ends): each as the memory the plan checked, its content hash,
    the id of the memory it rewrites (None: a new one), and what else its record carries (vector,
    access). A frame is two lengths, the fields as JSON (a checked memory is strict JSON, so it comes
    back unchanged), and the vector's float32 bytes."""

    _LENGTHS = struct.Struct("<II")

    def __init__(self, directory: Path | None):
        """`directory` None: count the records and keep none (a dry run writes nothing, not even here)."""
        self._file = None if directory is None else tempfile.TemporaryFile(dir=directory, prefix=".import-spool-")
        self.count = 0

    def add(self, rec: SourceRecord, memory: Memory, content_hash: str, updates: str | None) -> None:
        self.count += 1
        if self._file is None:
            return
        vector = None if rec.vector is None else np.asarray(rec.vector, dtype=np.float32)
        head = orjson.dumps([rec.location, memory.to_dict(), rec.access, rec.vector_model, rec.vector_proof,
                             None if vector is None else vector.shape, content_hash, updates])
        data = b"" if vector is None else vector.tobytes()
        self._file.write(self._LENGTHS.pack(len(head), len(data)) + head + data)

    def __iter__(self) -> Iterator[tuple[SourceRecord, Memory, str, str | None, int]]:
        """(record without its document, its memory, content hash, id it rewrites or None, size of the
        fields as JSON), in the plan's order."""
        f = self._file
        assert f is not None, "a counting spool keeps no records"
        f.flush()
        f.seek(0)
        for _ in range(self.count):
            head_len, data_len = self._LENGTHS.unpack(f.read(self._LENGTHS.size))
            location, doc, access, model, proof, shape, content_hash, updates = orjson.loads(f.read(head_len))
            vector = None if shape is None else np.frombuffer(f.read(data_len), dtype=np.float32).reshape(shape)
            rec = SourceRecord(location, vector=vector, access=tuple(access) if access else None,
                               vector_model=model, vector_proof=proof)
            yield rec, documents.from_checked(doc), content_hash, updates, head_len

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


@dataclass
class Plan:
    """What one source gives: its report, and the records to write in its `spool`."""

    source: Source
    report: SourceReport
    begun: datetime
    spool: Spool


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


def memory_of(rec: SourceRecord, src: Source, source_tag: str | None, namespace: str | None,
              now: datetime) -> Memory:
    """The memory a valid record makes, options applied (InvalidDocumentError otherwise): what is
    written, a new memory under its id, created `now` unless the record says when."""
    if rec.error:
        raise InvalidDocumentError(rec.error)
    return documents.from_dict(apply_options(rec, src, source_tag, namespace), default_id=documents.new_id(),
                               default_time=now)


class Planner:
    """Sorts the records of every source of one import; dedup spans all of them."""

    def __init__(self, store: "MemoryStore", *, dedup: bool, source_tag: str | None, namespace: str | None,
                 spool: bool = True):
        self.store = store
        self.spool_in = store.layout.data if spool else None  # None: a dry run, which keeps no records
        self.dedup = dedup
        self.source_tag = source_tag
        self.namespace = namespace
        self.existing_hashes = store.catalog.hashes()
        self.existing_keys = store.catalog.key_hashes()
        self.existing_ids = store.catalog.ids()  # one query, not one per record that names its id
        self.seen_hashes: set[str] = set()
        self.seen_keys: dict[tuple[str, str], str] = {}
        self.seen_ids: dict[str, str] = {}  # id -> content hash, for ids the sources set (a memfs export's)

    def plan(self, src: Source, report: SourceReport, now: datetime) -> Plan:
        """Read `src` once and plan it: the records to write go to the plan's spool (the caller closes
        it: `Plan.spool.close()`)."""
        plan = Plan(src, report, now, Spool(self.spool_in))
        try:
            self._read(src, report, now, plan.spool)
        except BaseException:
            plan.spool.close()
            raise
        return plan

    def _read(self, src: Source, report: SourceReport, now: datetime, spool: Spool) -> None:
        valid_hashes: list[str] = []
        for rec in src.records(src.notes):
            report.read += 1
            if rec.warning:
                report.warnings.append(rec.warning)
            try:
                m = memory_of(rec, src, self.source_tag, self.namespace, now)
            except InvalidDocumentError as e:
                report.refuse(rec.location, e.reason)
                continue
            h = m.content_hash  # a property: SHA-256 of the content, computed on each use
            valid_hashes.append(h)
            if rec.vector is not None:
                report.vectors_carried += 1
            if expired(m, now):
                report.expired += 1
                continue
            decision = self._keyed(m, h, report) if m.key is not None else self._plain(rec, m, h, report)
            if decision is not None:
                spool.add(rec, m, h, decision or None)
            self.seen_hashes.add(h)
        report.records_sha256 = hashlib.sha256("\n".join(sorted(valid_hashes)).encode()).hexdigest()

    def _keyed(self, m: Memory, h: str, report: SourceReport) -> str | None:
        """A key/value record: "" to write it new, the id of the memory it updates, or None to skip."""
        k = (m.namespace or DEFAULT_NAMESPACE, m.key)
        decision: str | None = None
        if k in self.seen_keys:
            report.duplicate += 1  # the first source to name a key wins within one import
        elif k in self.existing_keys:
            if self.existing_keys[k] == h:
                report.duplicate += 1
            else:
                decision = self.store.catalog.ids_for_key(*k)[0]
                report.updated += 1
        else:
            decision = ""
            report.new += 1
        self.seen_keys[k] = h
        return decision

    def _plain(self, rec: SourceRecord, m: Memory, h: str, report: SourceReport) -> str | None:
        """A plain record: "" to write it new, or None to skip it."""
        if "id" in (rec.doc or {}):
            stored = self.store.catalog.get(m.id) if m.id in self.existing_ids else None
            known = stored.hash if stored is not None else self.seen_ids.get(m.id)
            if known is not None:
                # The same id with the same content is the same memory again, --no-dedup or not.
                if known == h or (self.dedup and h in self.seen_hashes):
                    report.duplicate += 1
                else:
                    report.refuse(rec.location, f"id {m.id!r} is already used by a memory with other content")
                return None
            self.seen_ids[m.id] = h
        if self.dedup and (h in self.existing_hashes or h in self.seen_hashes):
            report.duplicate += 1
            return None
        report.new += 1
        return ""
