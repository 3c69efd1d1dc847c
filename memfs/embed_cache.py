"""The embedding cache in the catalog's embed_cache table: vectors keyed by (model id, content hash), so
content embedded once is never embedded again (reindex, an edit back, an import). A part of
memfs.catalog.Catalog, which mixes it in and provides `db` (its SQLite connection) and `_lock`.
"""

from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np

from .catalog_rows import chunks


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

    def cache_size(self) -> int:
        return self.db.execute("SELECT count(*) FROM embed_cache").fetchone()[0]
