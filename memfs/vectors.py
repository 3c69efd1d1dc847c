"""The vector index: one Chroma collection in data/embeddings/, cosine space, vectors passed explicitly.

The collection has no embedding function (`embedding_function=None`), so Chroma never computes an
embedding itself and can never fall back to its default ONNX model, which would download. Chroma is
imported and opened lazily: commands that only read the catalog do not pay for it.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Sequence

import numpy as np

from .documents import Memory
from .query import Filters

COLLECTION = "memories"


def chroma_metadata(m: Memory) -> dict:
    meta: dict = {"hash": m.content_hash, "type": m.type, "created_ts": m.created_at.timestamp()}
    if m.tags:  # Chroma refuses empty arrays
        meta["tags"] = list(m.tags)
    return meta


def chroma_where(f: Filters) -> dict | None:
    """Translate filters to a Chroma `where`, which Chroma applies before its nearest-neighbour cut."""
    clauses: list[dict] = []
    if f.tags:
        tag_clauses = [{"tags": {"$contains": t}} for t in f.tags]
        if len(tag_clauses) == 1:
            clauses += tag_clauses
        else:
            clauses.append({"$and" if f.match == "all" else "$or": tag_clauses})
    if f.type is not None:
        clauses.append({"type": f.type})
    if f.since is not None:
        clauses.append({"created_ts": {"$gte": _ts(f.since)}})
    if f.until is not None:
        clauses.append({"created_ts": {"$lt": _ts(f.until)}})
    if not clauses:
        return None
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}


def _ts(t: datetime) -> float:
    return t.timestamp()


class VectorIndex:
    def __init__(self, path: Path, chroma_url: str | None = None):
        self.path = path
        self.chroma_url = chroma_url
        self._client = None
        self._collection = None

    @property
    def collection(self):
        if self._collection is None:
            import chromadb
            from chromadb.config import Settings

            # Telemetry off: it would be a network call, and nothing here may touch the network.
            settings = Settings(anonymized_telemetry=False)
            if self.chroma_url:
                from urllib.parse import urlparse

                u = urlparse(self.chroma_url)
                self._client = chromadb.HttpClient(host=u.hostname, port=u.port or 8000,
                                                   ssl=u.scheme == "https", settings=settings)
            else:
                self.path.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=str(self.path), settings=settings)
            self._collection = self._client.get_or_create_collection(
                COLLECTION, embedding_function=None, configuration={"hnsw": {"space": "cosine"}})
        return self._collection

    @property
    def opened(self) -> bool:
        return self._collection is not None

    def _batch(self) -> int:
        return max(1, min(5000, self._client.get_max_batch_size()))

    def upsert(self, memories: Sequence[Memory], vectors: np.ndarray) -> None:
        col = self.collection
        n = self._batch()
        for i in range(0, len(memories), n):
            chunk = memories[i:i + n]
            col.upsert(ids=[m.id for m in chunk], embeddings=vectors[i:i + n],
                       metadatas=[chroma_metadata(m) for m in chunk])

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        col = self.collection
        n = self._batch()
        for i in range(0, len(ids), n):
            col.delete(ids=list(ids[i:i + n]))

    def query(self, vector: np.ndarray, k: int, filters: Filters) -> list[tuple[str, float]]:
        """(id, cosine similarity) for the k nearest that pass the filters, best first."""
        col = self.collection
        res = col.query(query_embeddings=[vector], n_results=k, where=chroma_where(filters),
                        include=["distances"])
        return [(i, 1.0 - d) for i, d in zip(res["ids"][0], res["distances"][0])]

    def ids(self) -> set[str]:
        """Every id the collection holds, read in pages (Chroma may have lost some: chroma #6975)."""
        col = self.collection
        found: set[str] = set()
        page = 10_000
        offset = 0
        while True:
            got = col.get(include=[], limit=page, offset=offset)["ids"]
            found.update(got)
            if len(got) < page:
                return found
            offset += page

    def count(self) -> int:
        return self.collection.count()

    def close(self) -> None:
        """Release Chroma's per-path system (it is shared and refcounted within a process)."""
        if self._client is not None and hasattr(self._client, "close"):
            self._client.close()
        self._collection = None
        self._client = None
