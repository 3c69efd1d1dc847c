"""An import's second pass (issue #25): read each source again and write what the first pass planned
(memfs.import_plan), a batch at a time, so memory holds a few batches whatever the sources' size:
the one being written, and the next, read ahead on a thread meanwhile (`read_ahead`).

For each batch: the vectors its records carry are proven record by record (`check_vectors`) and
seeded in the embedding cache, so `add_many` embeds only what is left; the new memories go through
one `add_many`, the updated ones are rewritten, and access counts are carried over. A record read
now whose content is not what the first pass planned at its position means the source changed
between the two readings: the import stops there (what was written stays, and is found again as
duplicates when the import is run again).
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator, TypeVar

import numpy as np
import orjson

from . import documents
from .documents import Memory
from .errors import InvalidDocumentError
from .import_plan import Plan, SourceReport, apply_options, memory_of
from .source_records import SourceError, SourceRecord

if TYPE_CHECKING:
    from .store import MemoryStore

T = TypeVar("T")

# A batch ends at BATCH records or BATCH_CHARS characters of content and metadata, whichever comes
# first: enough to keep the model's pipeline full (rounds of 256), little enough that a batch of
# ordinary records with their vectors is a few MB, and one of big records (256 Ki characters of
# content, 64 KiB of metadata each) is not gigabytes.
BATCH = 1024
BATCH_CHARS = 4_000_000
# Cosine similarity above which a source vector counts as this model's (same text, same model: ~1.0;
# another model of the same size: far lower, or a different dimension altogether).
SAME_MODEL_MIN_COSINE = 0.98
CHECK_BATCH = 256  # texts embedded at a time to check a source's unproven vectors


@dataclass
class VectorTally:
    """What the vector check found for one source, added up over its batches."""

    reused: int = 0  # proven by their embedding_sha256
    checked: int = 0  # without a proof: embedded here and compared
    matched: int = 0
    wrong_dim: int = 0

    def add(self, other: "VectorTally") -> None:
        for name in ("reused", "checked", "matched", "wrong_dim"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def verdict(self, model: str, dim: int) -> str | None:
        parts = []
        if self.reused:
            parts.append(f"{self.reused} reused, each proven by its embedding_sha256 ({model})")
        if self.checked:
            missed = self.checked - self.matched - self.wrong_dim
            parts.append(f"{self.checked} without a proof embedded here and compared: {self.matched} matched this "
                         f"model's vector of their text (cosine ≥ {SAME_MODEL_MIN_COSINE})"
                         + (f", {missed} did not" if missed else "")
                         + (f", {self.wrong_dim} had another dimension than {dim}" if self.wrong_dim else "")
                         + "; memfs's own vectors stored")
        return "; ".join(parts) or None


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) or 1.0)


def check_vectors(store: "MemoryStore", carried: list[tuple[SourceRecord, str, str]]) -> tuple[dict, VectorTally]:
    """Prove each carried vector, given as (record, content hash, content), record by record, never
    from a sample (issue #25).

    Returns (vectors, tally): `vectors` maps content hash -> the vector to store. A record whose
    `embedding_sha256` (a memfs export's, export.vector_proof) binds its vector to this model and to
    the record's content gives its own vector; every other record is embedded here, in batches, and
    its source vector compared with this model's (cosine ≥ SAME_MODEL_MIN_COSINE). A foreign vector
    can only be proven by embedding its text, which is the very work reuse would save, so foreign
    vectors are checked and reported but memfs stores its own."""
    from .export import vector_proof

    model, dim = store.embedder.model_id, store.embedder.dim
    vectors: dict[str, np.ndarray] = {}
    tally = VectorTally()
    unproven: list[tuple[SourceRecord, str, str]] = []
    for rec, h, content in carried:
        v = np.asarray(rec.vector, dtype=np.float32)
        if (rec.vector_proof and rec.vector_model == model and v.shape == (dim,)
                and vector_proof(model, h, v) == rec.vector_proof):
            vectors[h] = _unit(v)
            tally.reused += 1
        else:
            unproven.append((rec, h, content))
    ours: set[str] = set()
    for start in range(0, len(unproven), CHECK_BATCH):
        todo = [(rec, h, content) for rec, h, content in unproven[start:start + CHECK_BATCH] if h not in ours]
        embedded = store.embedder.embed([content for _, _, content in todo]) if todo else []
        for (rec, h, _), e in zip(todo, embedded):
            ours.add(h)
            vectors.setdefault(h, e)
            tally.checked += 1
            v = np.asarray(rec.vector, dtype=np.float32)
            if v.shape != (dim,):
                tally.wrong_dim += 1
            elif float(_unit(v) @ e) >= SAME_MODEL_MIN_COSINE:
                tally.matched += 1
    return vectors, tally


def read_ahead(items: Iterator[T]) -> Iterator[T]:
    """`items`, produced on a thread one ahead of the caller: the second reading parses the next batch
    while add_many writes this one (most of which waits on the disk, without the GIL). An error the
    producer meets is raised here, after the items before it, as reading in line would. When the
    caller stops early (an error of its own), the producer stops at its next item and `items` is
    closed on its own thread (a source's file or database connection is closed there)."""
    ready: queue.Queue = queue.Queue(1)
    stop = threading.Event()
    end = object()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(end)
        except BaseException as e:  # handed to the caller, which raises it
            put(e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="memfs-import-read", daemon=True)
    worker.start()
    try:
        while (item := ready.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        worker.join()


@dataclass
class _Pending:
    report: SourceReport
    rec: SourceRecord  # its `doc` is the document to write
    content_hash: str
    content: str
    memory: Memory | None  # for an update only
    updates: str | None  # the id of the memory this record rewrites; None: a new memory
    chars: int  # of content and metadata: what a batch is measured in


class BatchWriter:
    """Writes the planned records of every source, BATCH at a time (module docstring)."""

    def __init__(self, store: "MemoryStore", plans: list[Plan], *, source_tag: str | None, namespace: str | None,
                 progress: Callable[[str, int, int], None] | None):
        self.store = store
        self.plans = plans
        self.source_tag = source_tag
        self.namespace = namespace
        self.progress = progress
        self.total = sum(len(p.writes) for p in plans)
        self.done = 0
        self.tallies = {id(p.report): VectorTally() for p in plans}

    def run(self) -> None:
        try:
            for batch in read_ahead(self._batches()):
                self._flush(batch)
        finally:  # what was proven so far is reported, also when a batch failed
            for plan in self.plans:
                tally = self.tallies[id(plan.report)]
                plan.report.vectors_reused = tally.reused
                plan.report.vector_check = tally.verdict(self.store.embedder.model_id, self.store.embedder.dim)

    def _batches(self) -> Iterator[list[_Pending]]:
        """The planned records of every source, read again and checked, BATCH records or BATCH_CHARS
        characters at a time; a batch runs on from one source into the next."""
        batch: list[_Pending] = []
        chars = 0
        for plan in self.plans:
            for p in self._read(plan) if plan.writes else ():
                batch.append(p)
                chars += p.chars
                if len(batch) >= BATCH or chars >= BATCH_CHARS:
                    yield batch
                    batch, chars = [], 0
        if batch:
            yield batch

    def _read(self, plan: Plan) -> Iterator[_Pending]:
        src, left = plan.source, len(plan.writes)
        for n, rec in enumerate(src.records()):
            planned = plan.writes.get(n)
            if planned is None:
                continue
            yield self._take(plan, rec, *planned)
            left -= 1
            if not left:
                return
        raise SourceError(f"{src.path} changed while it was imported (it holds fewer records than before); "
                          "run the import again")

    def _take(self, plan: Plan, rec: SourceRecord, planned_hash: str, updates: str | None) -> _Pending:
        """A planned record, once it is checked to be what the first reading planned; a new one is
        parsed into a memory once, by add_many (the first reading checked it whole)."""
        doc = None if rec.error else apply_options(rec, plan.source, self.source_tag, self.namespace)
        content = doc.get("content") if doc else None
        if not isinstance(content, str) or documents.content_hash(content) != planned_hash:
            raise SourceError(f"{plan.source.path} changed while it was imported (record {rec.location} is not "
                              "what was read before); the records before it were imported. Stop the program "
                              "writing to it (or import a copy) and run the import again: it adds only the rest")
        rec.doc = doc
        memory = None
        if updates is not None:  # a rewrite needs the whole memory
            try:
                memory = memory_of(rec, plan.source, self.source_tag, self.namespace, plan.begun)
            except InvalidDocumentError as e:
                raise SourceError(f"{plan.source.path} changed while it was imported ({rec.location}: {e.reason})")
        return _Pending(plan.report, rec, planned_hash, content, memory, updates,
                        len(content) + len(orjson.dumps(doc.get("metadata"))))

    def _flush(self, batch: list[_Pending]) -> None:
        self._seed_vectors(batch)
        new = [p for p in batch if p.updates is None]
        offset = self.done

        def progress(phase: str, done: int, total: int) -> None:
            if self.progress:
                self.progress(phase, offset + done, self.total)

        results = self.store.add_many([p.rec.doc for p in new], allow_duplicate=True, progress=progress) if new else []
        access = [(res.memory.id, *p.rec.access) for p, res in zip(new, results) if p.rec.access]
        for p in batch:
            if p.updates is not None:
                self._rewrite(p.updates, p.memory)  # type: ignore[arg-type]
                if p.rec.access:
                    access.append((p.updates, *p.rec.access))
        if access:
            self.store.catalog.set_access(access)
        self.done += len(batch)
        if self.progress:
            self.progress("add", self.done, self.total)

    def _rewrite(self, old_id: str, m: Memory) -> None:
        old = self.store.get(old_id)
        self.store.rewrite(old_id, content=m.content, metadata={**old.metadata, **m.metadata},
                           tags=documents.normalize_tags([*old.tags, *m.tags]), expires_at=m.expires_at,
                           updated_at=max(m.updated_at, old.updated_at))

    def _seed_vectors(self, batch: list[_Pending]) -> None:
        """Prove the batch's carried vectors (per source, for its report) and seed the cache."""
        by_report: dict[int, list[_Pending]] = {}
        for p in batch:
            if p.rec.vector is not None:
                by_report.setdefault(id(p.report), []).append(p)
        for key, carried in by_report.items():
            vectors, tally = check_vectors(self.store, [(p.rec, p.content_hash, p.content) for p in carried])
            self.store.catalog.cache_vectors(self.store.embedder.model_id, vectors)
            self.tallies[key].add(tally)
