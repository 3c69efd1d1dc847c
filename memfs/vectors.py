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

# The HNSW index's parameters (issue #12). Chroma's defaults (max_neighbors 16, ef_construction 100,
# ef_search 100) returned on average 94 % of the exact top 10 at 20k and 88 % at 200k, and for some
# queries none of it (bench/vector_recall.py). These reach 98.7 % / 97.8 %: better, still short of the
# 99 % issue #12 asks, which is why search is exact up to EXACT_MAX. max_neighbors and ef_construction
# are fixed when the collection is made: an older store gets them by `MemoryStore.rebuild_vectors()`
# (what `memfs reindex` runs when `vectors_outdated`); the RUNTIME ones are set in place on open.
# sync_threshold: Chroma writes its index to disk every this many new vectors and, when a store is
# opened, replays what came since from its log before the first read or write. At Chroma's default
# (1,000) that made the first write after an open of 21,000 vectors take 1.7-2.0 s (a sync pulling one
# change, #20; the first search from cold, #26); at 200 it takes 0.07 s, and a bulk write costs no
# more (bench/bench_chroma_replay.py; bench/RESULTS.md, "Chroma's replay on open").
HNSW = {"space": "cosine", "max_neighbors": 32, "ef_construction": 200, "ef_search": 200, "sync_threshold": 200}
RUNTIME = ("ef_search", "sync_threshold")

# Up to this many vectors, search is exact: a matrix product over a copy of the vectors held in memory
# (1.5 KB per memory: 30 MB at 20k, 300 MB at 200k; p50 0.2 ms at 20k, 20 ms at 200k, measured). Above
# it, the HNSW index answers. docs/search.md has the measurements that put the switch here.
EXACT_MAX = 250_000

# Chroma's SQLite file is compacted at close once this many pages (4 KB) are free in it.
COMPACT_PAGES = 64


# The content hash in a vector's metadata: its first 16 hex digits (64 bits), enough to tell whether a
# vector is for a given content (`holds`), and 100 bytes a memory less in Chroma's SQLite (issue #26).
# A store written before keeps whole hashes until its vectors are written again; `holds` takes both.
INDEX_HASH_CHARS = 16


def holds(indexed_hash: str | None, content_hash: str) -> bool:
    """The vector whose metadata says `indexed_hash` is for the content with `content_hash`."""
    return indexed_hash is not None and len(indexed_hash) >= INDEX_HASH_CHARS and content_hash.startswith(indexed_hash)


def chroma_metadata(m: Memory) -> dict:
    meta: dict = {"hash": m.content_hash[:INDEX_HASH_CHARS], "type": m.type, "created_ts": m.created_at.timestamp()}
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
    def __init__(self, path: Path):
        self.path = path
        self._client = None
        self._collection = None
        self._mirror: _Mirror | None = None  # the in-memory copy exact search uses (<= EXACT_MAX)

    @property
    def collection(self):
        if self._collection is None:
            import chromadb
            from chromadb.config import Settings

            # Telemetry off: it would be a network call, and nothing here may touch the network.
            settings = Settings(anonymized_telemetry=False)
            self.path.mkdir(parents=True, exist_ok=True)
            if self._client is None:  # after reset() the client is kept: a second would never be closed
                self._client = chromadb.PersistentClient(path=str(self.path), settings=settings)
            self._collection = self._client.get_or_create_collection(
                COLLECTION, embedding_function=None, configuration={"hnsw": dict(HNSW)})
            self._set_runtime_parameters()
        return self._collection

    def hnsw_config(self) -> dict:
        """The collection's HNSW parameters as Chroma reports them."""
        conf = self.collection.configuration or {}
        return dict(conf.get("hnsw") or {})

    @property
    def outdated(self) -> bool:
        """True when the index was built with smaller graph parameters than HNSW (an older memfs):
        `MemoryStore.rebuild_vectors()` rebuilds it from its own vectors, embedding nothing."""
        conf = self.hnsw_config()
        return any((conf.get(key) or 0) < HNSW[key] for key in ("max_neighbors", "ef_construction"))

    def _set_runtime_parameters(self) -> None:
        """Give a collection made by an older memfs (or Chroma's defaults) today's RUNTIME parameters."""
        conf = (self._collection.configuration or {}).get("hnsw") or {}
        changes = {key: HNSW[key] for key in RUNTIME if conf.get(key) != HNSW[key]}
        if changes:
            try:
                self._collection.modify(configuration={"hnsw": changes})
            except Exception as e:  # Chroma refused: search still works, only less exactly or slower to open
                import logging

                logging.getLogger("memfs").warning("could not set the vector index's %s: %s", ", ".join(changes), e)

    def reset(self) -> None:
        """Drop the collection and make it again, empty, with today's parameters."""
        self.collection  # opens the client
        self._client.delete_collection(COLLECTION)
        self._collection = None
        self._mirror = None
        self.collection

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
        self.mirror_upsert(memories, vectors)

    @property
    def mirror_loaded(self) -> bool:
        """Searches read the in-memory copy (exact search), so a vector put there is found."""
        return self._mirror is not None

    def mirror_upsert(self, memories: Sequence[Memory], vectors: np.ndarray) -> bool:
        """Put vectors in the in-memory copy (`upsert` does after Chroma; VectorWriter's deferred
        writes do alone, their Chroma upsert following). False if there is no copy to put them in."""
        if self._mirror is None:
            return False
        self._mirror.upsert([m.id for m in memories], np.asarray(vectors, dtype=np.float32),
                            [chroma_metadata(m) for m in memories])
        return True

    def stored(self, ids: Sequence[str]) -> dict[str, tuple[str | None, np.ndarray]]:
        """id -> (content hash, vector) for those of these ids the index holds: from the in-memory
        copy when there is one (it has every vector Chroma has, and the deferred ones), else Chroma."""
        if self._mirror is not None:
            return self._mirror.stored(ids)
        col = self.collection
        n = self._batch()
        out: dict[str, tuple[str | None, np.ndarray]] = {}
        for i in range(0, len(ids), n):
            got = col.get(ids=list(ids[i:i + n]), include=["embeddings", "metadatas"])
            for mem_id, vec, meta in zip(got["ids"], got["embeddings"], got["metadatas"]):
                out[mem_id] = ((meta or {}).get("hash"), np.asarray(vec, dtype=np.float32))
        return out

    def delete(self, ids: Sequence[str]) -> None:
        if not ids:
            return
        col = self.collection
        n = self._batch()
        for i in range(0, len(ids), n):
            col.delete(ids=list(ids[i:i + n]))
        if self._mirror is not None:
            self._mirror.delete(ids)

    def query(self, vector: np.ndarray, k: int, filters: Filters, *, exact: bool | None = None) -> list[tuple[str, float]]:
        """(id, cosine similarity) for the k nearest that pass the filters, best first.

        Exact (brute force over the in-memory copy) up to EXACT_MAX vectors, HNSW above; `exact`
        forces one or the other (the benchmarks compare them).
        """
        forced = exact is not None
        if exact is None:
            exact = self._mirror is not None or self.count() <= EXACT_MAX
        if exact:
            mirror = self.load()
            if forced or len(mirror) <= EXACT_MAX * 1.1:
                return mirror.query(np.asarray(vector, dtype=np.float32), k, filters)
            self._mirror = None  # grew past the switch: let HNSW answer from now on
        return self.hnsw_query(vector, k, filters)

    def hnsw_query(self, vector: np.ndarray, k: int, filters: Filters) -> list[tuple[str, float]]:
        res = self.collection.query(query_embeddings=[vector], n_results=k, where=chroma_where(filters),
                                    include=["distances"])
        return [(i, 1.0 - d) for i, d in zip(res["ids"][0], res["distances"][0])]

    def load(self) -> "_Mirror":
        """The in-memory copy of every vector and its filter fields, read from Chroma once; writes
        through this index keep it current. An owner calls this at start (warm-up)."""
        if self._mirror is None:
            col = self.collection
            mirror = _Mirror()
            page, offset = 5000, 0
            while True:
                got = col.get(include=["embeddings", "metadatas"], limit=page, offset=offset)
                if len(got["ids"]):
                    mirror.upsert(got["ids"], np.asarray(got["embeddings"], dtype=np.float32), got["metadatas"])
                if len(got["ids"]) < page:
                    break
                offset += page
            self._mirror = mirror
        return self._mirror

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
        """Release Chroma's per-path system (it is shared and refcounted within a process); when it
        was the last, give back the space Chroma's SQLite file holds free (`compact_chroma_file`)."""
        self._mirror = None
        client = self._client
        self._collection = None
        self._client = None
        if client is not None and hasattr(client, "close"):
            client.close()
            if _stopped(client):
                compact_chroma_file(self.path / "chroma.sqlite3")


def _stopped(client) -> bool:
    """Chroma stopped the client's system: no connection of this process holds its files."""
    from chromadb.api.shared_system_client import SharedSystemClient

    ident = getattr(client, "_identifier", None)
    return ident is not None and ident not in getattr(SharedSystemClient, "_identifier_to_system", {ident: None})


def compact_chroma_file(db: Path, at_least: int = COMPACT_PAGES) -> None:
    """Give the file system back the pages Chroma's SQLite holds free (issue #26): its write-ahead log
    (embeddings_queue) is pruned as the index is persisted, and the pages stay in the file, ~0.5 MB
    per 1,000 memories written at once. The first time, a VACUUM that also turns on incremental
    auto-vacuum (what `chroma vacuum` does); after it, an incremental vacuum. Only once Chroma has
    closed the file (an owner's close): its own connections never see it happen."""
    import logging
    import sqlite3

    if not db.is_file():
        return
    try:
        con = sqlite3.connect(db, timeout=1.0, isolation_level=None)
    except sqlite3.Error:
        return
    try:
        if con.execute("PRAGMA freelist_count").fetchone()[0] < at_least:
            return
        if con.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            con.executescript("PRAGMA incremental_vacuum;")
        else:
            con.execute("PRAGMA auto_vacuum=INCREMENTAL")
            con.execute("VACUUM")
    except sqlite3.Error as e:  # busy, read-only, full disk: the space stays, nothing else changes
        logging.getLogger("memfs").info("could not compact %s: %s", db, e)
    finally:
        con.close()


class _Mirror:
    """Every vector with the fields filters look at, for exact search. Rows of a deleted id are
    marked dead and reused by the next upsert of any id; the matrix grows by doubling."""

    def __init__(self, dim: int = 0):
        self.matrix = np.zeros((0, dim), dtype=np.float32)
        self.alive = np.zeros(0, dtype=bool)
        self.ts = np.zeros(0, dtype=np.float64)
        self.types = np.zeros(0, dtype=object)
        self.tags: list[tuple[str, ...]] = []
        self.tag_rows: dict[str, set[int]] = {}  # tag -> rows holding it, for filter masks
        self.ids: list[str | None] = []
        self.hashes: list[str | None] = []  # the content hash each row's vector is for
        self.row: dict[str, int] = {}
        self.free: list[int] = []
        self.size = 0  # rows in use, dead or alive

    def __len__(self) -> int:
        return len(self.row)

    def _grow(self, need: int, dim: int) -> None:
        cap = len(self.alive)
        if self.matrix.shape[1] != dim and self.size == 0:
            self.matrix = np.zeros((0, dim), dtype=np.float32)
        if need <= cap:
            return
        new = max(need, 2 * cap, 1024)
        grow = new - cap
        self.matrix = np.concatenate([self.matrix, np.zeros((new - self.matrix.shape[0], dim), np.float32)])
        self.alive = np.concatenate([self.alive, np.zeros(grow, bool)])
        self.ts = np.concatenate([self.ts, np.zeros(grow)])
        self.types = np.concatenate([self.types, np.zeros(grow, dtype=object)])
        self.tags += [()] * grow
        self.ids += [None] * grow
        self.hashes += [None] * grow

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, metadatas: Sequence[dict]) -> None:
        self._grow(self.size + len(ids), vectors.shape[1])
        for mem_id, vec, meta in zip(ids, vectors, metadatas):
            r = self.row.get(mem_id)
            if r is None:
                r = self.free.pop() if self.free else self.size
                self.size = max(self.size, r + 1)
                self.row[mem_id] = r
            self.matrix[r] = vec
            self.alive[r] = True
            self.hashes[r] = meta.get("hash")
            self.ts[r] = meta.get("created_ts", 0.0)
            self.types[r] = meta.get("type")
            self._untag(r)
            self.tags[r] = tuple(meta.get("tags") or ())
            for t in self.tags[r]:
                self.tag_rows.setdefault(t, set()).add(r)
            self.ids[r] = mem_id

    def delete(self, ids: Sequence[str]) -> None:
        for mem_id in ids:
            r = self.row.pop(mem_id, None)
            if r is not None:
                self.alive[r] = False
                self.ids[r] = None
                self.hashes[r] = None
                self._untag(r)
                self.free.append(r)

    def stored(self, ids: Sequence[str]) -> dict[str, tuple[str | None, np.ndarray]]:
        rows = ((i, self.row.get(i)) for i in ids)
        return {i: (self.hashes[r], self.matrix[r].copy()) for i, r in rows if r is not None}

    def _untag(self, r: int) -> None:
        for t in self.tags[r]:
            rows = self.tag_rows.get(t)
            if rows is not None:
                rows.discard(r)
                if not rows:
                    del self.tag_rows[t]
        self.tags[r] = ()

    def mask(self, f: Filters) -> np.ndarray:
        n = self.size
        m = self.alive[:n].copy()
        if f.type is not None:
            m &= self.types[:n] == f.type
        if f.since is not None:
            m &= self.ts[:n] >= _ts(f.since)
        if f.until is not None:
            m &= self.ts[:n] < _ts(f.until)
        if f.tags:
            sets = [self.tag_rows.get(t, set()) for t in dict.fromkeys(f.tags)]
            rows = set.intersection(*sets) if f.match == "all" else set().union(*sets)
            tagged = np.zeros(n, dtype=bool)
            tagged[np.fromiter(rows, dtype=np.int64, count=len(rows))] = True
            m &= tagged
        return m

    def query(self, vector: np.ndarray, k: int, f: Filters) -> list[tuple[str, float]]:
        n = self.size
        if n == 0:
            return []
        sims = self.matrix[:n] @ vector
        if f.empty:
            sims = np.where(self.alive[:n], sims, -np.inf)
        else:
            sims = np.where(self.mask(f), sims, -np.inf)
        k = min(k, n)
        top = np.argpartition(-sims, k - 1)[:k] if k < n else np.arange(n)
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(self.ids[r], float(sims[r])) for r in top if sims[r] != -np.inf]
