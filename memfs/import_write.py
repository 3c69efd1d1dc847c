"""An import's second pass (issue #25): write what the first pass planned (memfs.import_plan), from
each plan's spool, a batch at a time, so memory holds one batch whatever the sources' size.

For each batch: the vectors its records carry are proven record by record (`check_vectors`) and
seeded in the embedding cache, so `add_memories` embeds only what is left; the new memories go through
one `add_memories`, the updated ones are rewritten, and access counts are carried over. The source is not
read again: a source rewritten after it was planned changes nothing that is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from . import documents
from .documents import Memory
from .import_plan import Plan, SourceReport
from .source_records import SourceRecord

if TYPE_CHECKING:
    from .store import MemoryStore

# A batch ends at BATCH records or BATCH_CHARS bytes of its records as JSON (content, metadata and the
# rest), whichever comes first: enough to keep the model's pipeline full (rounds of 256), little enough
# that a batch of ordinary records with their vectors is a few MB, and one of big records (256 Ki
# characters of content, 64 KiB of metadata each) is not gigabytes.
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


@dataclass
class _Pending:
    report: SourceReport
    rec: SourceRecord  # what the record carries besides its document: vector, access
    content_hash: str
    memory: Memory  # as the plan checked it
    updates: str | None  # the id of the memory this record rewrites; None: a new memory


class BatchWriter:
    """Writes the planned records of every source, BATCH at a time (module docstring)."""

    def __init__(self, store: "MemoryStore", plans: list[Plan], progress: Callable[[str, int, int], None] | None):
        self.store = store
        self.plans = plans
        self.progress = progress
        self.total = sum(p.spool.count for p in plans)
        self.done = 0
        self.tallies = {id(p.report): VectorTally() for p in plans}

    def run(self) -> None:
        try:
            for batch in self._batches():
                self._flush(batch)
        finally:  # what was proven so far is reported, also when a batch failed
            for plan in self.plans:
                tally = self.tallies[id(plan.report)]
                plan.report.vectors_reused = tally.reused
                plan.report.vector_check = tally.verdict(self.store.embedder.model_id, self.store.embedder.dim)

    def _batches(self) -> Iterator[list[_Pending]]:
        """The planned records of every source, BATCH records or BATCH_CHARS bytes at a time; a batch
        runs on from one source into the next."""
        batch: list[_Pending] = []
        chars = 0
        for plan in self.plans:
            for rec, memory, content_hash, updates, size in plan.spool:
                batch.append(_Pending(plan.report, rec, content_hash, memory, updates))
                chars += size
                if len(batch) >= BATCH or chars >= BATCH_CHARS:
                    yield batch
                    batch, chars = [], 0
        if batch:
            yield batch

    def _flush(self, batch: list[_Pending]) -> None:
        self._seed_vectors(batch)
        new = [p for p in batch if p.updates is None]
        offset = self.done

        def progress(phase: str, done: int, total: int) -> None:
            if self.progress:
                self.progress(phase, offset + done, self.total)

        results = (self.store.add_memories([p.memory for p in new], allow_duplicate=True, progress=progress)
                   if new else [])
        access = [(res.memory.id, *p.rec.access) for p, res in zip(new, results) if p.rec.access]
        for p in batch:
            if p.updates is not None:
                self._rewrite(p.updates, p.memory)
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
            vectors, tally = check_vectors(self.store, [(p.rec, p.content_hash, p.memory.content)
                                                        for p in carried])
            self.store.catalog.cache_vectors(self.store.embedder.model_id, vectors)
            self.tallies[key].add(tally)
