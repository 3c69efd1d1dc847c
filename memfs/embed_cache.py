"""The embedding cache in the catalog's embed_cache table: vectors keyed by (model id, content hash) that
the vector index does not hold yet. A part of memfs.catalog.Catalog, which mixes it in and provides
`db` (its SQLite connection) and `_lock`.

A vector is kept once (issue #26). Content is encoded into this cache, a row's vector goes from here
to Chroma, and once every row with that content is synced the cache lets it go (`drop_cached`):
from then on the vector is read back from the index (VectorWriter.known_vectors), under a row whose
indexed vector is for that very content. Vectors that come with content (an import, a sync pull) wait
here for their rows the same way. The catalog is made with incremental auto-vacuum, so the pages the
dropped vectors took are given back to the file system (`reclaim`) instead of staying in the file.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from .catalog_rows import chunks

# Give free pages back once this many are free (4 MB of 4 KB pages): a round of drops, not each one.
RECLAIM_PAGES = 1024


class EmbeddingCache:
    """Catalog's methods over the embed_cache table."""

    def _cache_rows(self, model: str, hashes: Iterable[str], columns: str) -> Iterator[tuple]:
        unique = list(set(hashes))
        for chunk in chunks(unique, 500):
            marks = ",".join("?" * len(chunk))
            yield from self.db.execute(
                f"SELECT {columns} FROM embed_cache WHERE model = ? AND hash IN ({marks})", [model, *chunk])

    def cached_vectors(self, model: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
        return {h: np.frombuffer(blob, dtype=np.float32) for h, blob in self._cache_rows(model, hashes, "hash, vector")}

    def uncached(self, model: str, hashes: Iterable[str]) -> set[str]:
        """The hashes with no cached vector for the model (without reading any vector)."""
        missing = set(hashes)
        return missing - {h for (h,) in self._cache_rows(model, missing, "hash")}

    def cache_vectors(self, model: str, vectors: dict[str, np.ndarray]) -> None:
        with self._lock:
            self.db.executemany("INSERT OR REPLACE INTO embed_cache(model, hash, vector) VALUES (?, ?, ?)",
                                [(model, h, v.astype(np.float32).tobytes()) for h, v in vectors.items()])

    def drop_cached(self, model: str, hashes: Iterable[str] | None = None) -> None:
        """Let go of the cached vectors of this content that no row waits for any more: rows just
        synced, whose vectors the index now holds. None: all such content that a synced row has (what
        a rebuild stopped half-way left behind)."""
        with self._lock:
            if hashes is None:
                hashes = [h for (h,) in self.db.execute(
                    "SELECT hash FROM embed_cache WHERE model = ? AND hash IN (SELECT hash FROM docs)", (model,))]
            for chunk in chunks(list(set(hashes)), 500):
                marks = ",".join("?" * len(chunk))
                self.db.execute(
                    f"DELETE FROM embed_cache WHERE model = ? AND hash IN ({marks}) AND NOT EXISTS ("
                    "SELECT 1 FROM docs WHERE docs.hash = embed_cache.hash AND docs.synced_fp IS NOT docs.vec_fp)",
                    [model, *chunk])

    def reclaim(self, at_least: int = RECLAIM_PAGES) -> None:
        """Give the file's free pages back when there are many: at the end of a write and at close,
        not after each drop, since the next vectors cached would reuse them (a no-op in a catalog
        made before incremental auto-vacuum). Not inside a transaction: executescript would commit
        it (and `execute` frees one page only: Python's sqlite3 steps the pragma once)."""
        with self._lock:
            if not self.db.in_transaction and self.db.execute("PRAGMA freelist_count").fetchone()[0] >= at_least:
                self.db.executescript("PRAGMA incremental_vacuum;")

    def indexed_rows(self, hashes: Iterable[str] | None = None) -> list[tuple[str, str]]:
        """(content hash, id) of the rows with this content (None: every row) whose vector went to
        the index at some time: the index may hold the content's vector under that id."""
        if hashes is None:
            return list(self.db.execute("SELECT hash, id FROM docs WHERE synced_fp IS NOT NULL"))
        out: list[tuple[str, str]] = []
        for chunk in chunks(list(set(hashes)), 500):
            marks = ",".join("?" * len(chunk))
            out += self.db.execute(
                f"SELECT hash, id FROM docs WHERE synced_fp IS NOT NULL AND hash IN ({marks})", chunk)
        return out

    def cache_size(self) -> int:
        return self.db.execute("SELECT count(*) FROM embed_cache").fetchone()[0]
