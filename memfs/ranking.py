"""Searcher: a query's k best memories, by meaning, by keyword, or both fused (docs/search.md).

It asks the catalog's keyword index and the vector index for candidates, scores them, cuts at k, and
says so (a note, no hits) when nothing is a good match. The query's vector is embedded once per search.
"""

from __future__ import annotations

import numpy as np

from .catalog import Catalog
from .documents import utcnow
from .embedder import Embedder
from .kv import expired
from .lock import StoreMutex
from .query import (MODES, Filters, Mode, QueryPlan, analyze, coverage, fused_score, is_good_match,
                    keyword_weight, matched, no_match_note, snippet)
from .results import Hit, SearchResult
from .vector_writes import VectorWriter
from .vectors import VectorIndex


class Searcher:
    """The store's searches; `writer.lagging` says some rows still wait for their vectors."""

    def __init__(self, catalog: Catalog, vectors: VectorIndex, embedder: Embedder, mutex: StoreMutex,
                 writer: VectorWriter):
        self.catalog = catalog
        self.vectors = vectors
        self.embedder = embedder
        self.mutex = mutex
        self.writer = writer
        self._last_query: tuple[str, np.ndarray] | None = None  # one-entry query-vector cache

    def search_result(self, query: str, k: int, mode: Mode, filters: Filters,
                      min_score: float | None) -> SearchResult:
        """MemoryStore.search_result: rank, then cut by `min_score` or by query.is_good_match."""
        if k < 1:
            raise ValueError("k must be at least 1")
        if mode not in MODES:
            raise ValueError(f"mode must be semantic, keyword or hybrid, not {mode!r}")
        with self.mutex:
            self._last_query = None
            plan = analyze(query)
            hits = self._ranked(plan, k, mode, filters)
        if not hits:
            if not self.catalog.count():
                return SearchResult([], "no memory is stored")
            if mode == "keyword":
                return SearchResult([], f"no memory contains any of: {', '.join(t.text for t in plan.terms) or query!r}")
            return SearchResult([], None if filters.empty else "no memory matches the filters")
        if min_score is not None:
            kept = [h for h in hits if h.score >= min_score]
            note = None if kept else f"no hit scores {min_score:g} or more (best: {hits[0].score:.2f})"
            return SearchResult(kept, note)
        if not is_good_match(hits[0], plan):
            return SearchResult([], no_match_note(query, hits[0]))
        return SearchResult(hits, None)

    def _ranked(self, plan: QueryPlan, k: int, mode: Mode, filters: Filters) -> list[Hit]:
        """Every figure for the k best, in the mode's order (docs/search.md)."""
        lagging = mode == "hybrid" and self.writer.lagging
        if mode == "hybrid" and keyword_weight(plan) == 0 and not lagging:
            # A plain question is ranked by meaning alone (docs/search.md): no keyword round trip.
            # While some rows still wait for their vectors, those are found by keyword (below).
            mode = "semantic"
        ranks, sims, readable = self._candidates(plan, k, mode, filters)
        entries = self.catalog.get_many(list(readable))
        scored = self._scored(plan, mode, lagging, ranks, sims, readable, entries)
        scored.sort(key=lambda x: x[0])
        top = scored[:k]
        entries.update(self.catalog.get_many([o[2] for o, *_ in top if o[2] not in entries]))
        hits = []
        now = utcnow()
        for (_, _, mem_id), score, sim, found_terms in top:
            entry = entries.get(mem_id)
            if entry is None or expired(entry.memory, now):  # gone at once; the sweep removes the file
                continue
            terms = tuple(t.text for t in found_terms)
            hits.append(Hit(entry.memory, round(score, 4), entry.path, ranks[mem_id],
                            None if sim is None else round(min(1.0, max(0.0, sim)), 4), terms, len(hits) + 1,
                            snippet(entry.memory.content, terms)))
        return hits

    def _candidates(self, plan: QueryPlan, k: int, mode: Mode,
                    filters: Filters) -> tuple[dict[str, dict[str, int]], dict[str, float], set[str]]:
        """(id -> its rank in each index asked, id -> similarity where known, the ids whose text is
        read for the terms they hold)."""
        if mode == "semantic":
            sims = dict(self._semantic(plan.text, k, filters))
            return {i: {"semantic": r} for r, i in enumerate(sims, 1)}, sims, set(sims)
        depth = k if mode == "keyword" else max(4 * k, 40)
        kw_ids = self.catalog.keyword(plan, filters, depth)
        ranks = {i: {"keyword": r} for r, i in enumerate(kw_ids, 1)}
        sims = {}
        if mode == "hybrid":
            sims = dict(self._semantic(plan.text, depth, filters))
            for r, i in enumerate(sims, 1):
                ranks.setdefault(i, {})["semantic"] = r
            sims.update(self._similarities([i for i in kw_ids if i not in sims], plan.text))
        # Which terms a memory holds is read from its text. In hybrid mode, when the keyword index
        # returned fewer than `depth`, it returned every memory holding any term: the rest hold none.
        readable = set(kw_ids) if mode == "hybrid" and len(kw_ids) < depth else set(ranks)
        return ranks, sims, readable

    def _scored(self, plan: QueryPlan, mode: Mode, lagging: bool, ranks: dict[str, dict[str, int]],
                sims: dict[str, float], readable: set[str], entries: dict) -> list[tuple]:
        """(sort key, score, similarity, terms held) for every candidate still in the catalog."""
        weights = self.catalog.term_weights(plan)
        found = {i: matched(plan, e.memory.content) for i, e in entries.items()}
        scored = []
        for mem_id in ranks:
            if mem_id not in entries and mem_id in readable:
                continue  # removed from the catalog since the index answered
            terms = found.get(mem_id, ())
            cover = coverage(terms, weights)
            sim = sims.get(mem_id)
            if mode == "semantic":
                score = max(0.0, sim or 0.0)
            elif mode == "keyword":
                score = cover
            elif sim is None and lagging:
                score = cover  # no vector yet (issue #24, item 1): its keyword score stands in
            else:
                score = fused_score(sim, cover, plan.exact)
            scored.append(((-score, ranks[mem_id].get("keyword", 1 << 30), mem_id), score, sim, terms))
        return scored

    def _semantic(self, query: str, k: int, filters: Filters) -> list[tuple[str, float]]:
        if self.catalog.count() == 0:
            return []
        vector = self._query_vector(query)
        return self.vectors.query(vector, k, filters)

    def _query_vector(self, query: str) -> np.ndarray:
        # A hybrid search needs the query's vector twice (index, keyword-only candidates): embed once.
        cached = self._last_query
        if cached is not None and cached[0] == query:
            return cached[1]
        vector = self.embedder.embed_query(query)
        self._last_query = (query, vector)
        return vector

    def _similarities(self, ids: list[str], query: str) -> dict[str, float]:
        """Exact cosine similarity to the query for memories the vector index did not return (found by
        keyword only), from the vectors kept (VectorWriter.known_vectors): no model call, no search."""
        if not ids:
            return {}
        entries = self.catalog.get_many(ids)
        vectors = self.writer.known_vectors(e.hash for e in entries.values())
        q = self._query_vector(query)
        return {i: float(vectors[e.hash] @ q) for i, e in entries.items() if e.hash in vectors}
