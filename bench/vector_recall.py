#!/usr/bin/env python3
"""Is vector search as good as exact? (issue #12) Recall@10 against exact cosine top-10, and latency.

    .venv/bin/python bench/vector_recall.py --store /tmp/memfs-search-bench/store20k --sizes 20000,200000

The vectors are a store's embedding cache (real all-MiniLM-L6-v2 vectors of gen_corpus memories); sizes
above that are filled with synthetic unit vectors near the real ones (a real vector plus Gaussian noise,
renormalised: cosine ≈ 0.8 to its source), as issue #12 allows for the 200k test. Queries are the labelled
queries of bench/search_sets plus 8-word slices of stored memories, embedded by the real model.

For each size: exact numpy (what memfs does up to vectors.EXACT_MAX), Chroma HNSW with Chroma's defaults
(the old index) and with vectors.HNSW (the new one), each in a fresh Chroma directory. Prints
recall@10 mean / min and query p50 / p99 (ms).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from memfs import MemoryStore  # noqa: E402
from memfs.query import Filters  # noqa: E402
from memfs.vectors import HNSW, _Mirror  # noqa: E402

OLD = {"space": "cosine"}
FETCH = 0  # ask HNSW for this many and keep the first k (--fetch)  # Chroma's defaults: max_neighbors 16, ef_construction 100, ef_search 100


def corpus_vectors(store_root: Path, n_queries: int) -> tuple[np.ndarray, list[str]]:
    with MemoryStore.open(store_root) as s:
        rows = s.catalog.db.execute("SELECT hash, content FROM docs ORDER BY id").fetchall()
        cache = s.vectors_for(h for h, _ in rows)
        matrix = np.stack([cache[h] for h, _ in rows if h in cache])
        rnd = random.Random(11)
        texts = []
        for _, content in rnd.sample(rows, n_queries):
            words = content.split()
            start = rnd.randrange(max(1, len(words) - 8))
            texts.append(" ".join(words[start:start + 8]))
        sets = json.loads((HERE / "search_sets" / "eval.json").read_text())
        texts += [q["query"] for q in sets["queries"]]
        queries = s.embedder.embed(texts)
    return matrix, queries


def grow(real: np.ndarray, n: int, seed: int = 5) -> np.ndarray:
    if n <= len(real):
        return real[:n]
    rng = np.random.default_rng(seed)
    extra = n - len(real)
    src = real[rng.integers(0, len(real), extra)]
    noisy = src + rng.normal(0, 0.75 / np.sqrt(real.shape[1]), src.shape).astype(np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    return np.concatenate([real, noisy.astype(np.float32)])


def exact_topk(matrix: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    sims = matrix @ q
    top = np.argpartition(-sims, k)[:k]
    return top[np.argsort(-sims[top])]


def pct(xs: list[float], p: float) -> float:
    return float(np.percentile(xs, p))


def run_exact(matrix, queries, k):
    times, tops = [], []
    for q in queries:
        t = time.perf_counter()
        tops.append(exact_topk(matrix, q, k))
        times.append((time.perf_counter() - t) * 1000)
    return tops, times


def run_chroma(matrix, queries, k, config: dict, work: Path, ef_values: list[int] | None = None):
    import chromadb
    from chromadb.config import Settings

    path = Path(tempfile.mkdtemp(dir=work))
    client = chromadb.PersistentClient(path=str(path), settings=Settings(anonymized_telemetry=False))
    col = client.create_collection("bench", embedding_function=None, configuration={"hnsw": config})
    batch = min(5000, client.get_max_batch_size())
    t = time.monotonic()
    for i in range(0, len(matrix), batch):
        col.add(ids=[str(j) for j in range(i, min(i + batch, len(matrix)))], embeddings=matrix[i:i + batch])
    build = time.monotonic() - t
    col.query(query_embeddings=[queries[0]], n_results=k)  # load the index
    runs = []
    for ef in ef_values or [None]:
        if ef is not None:
            col.modify(configuration={"hnsw": {"ef_search": ef}})
        times, tops = [], []
        for q in queries:
            t = time.perf_counter()
            res = col.query(query_embeddings=[q], n_results=max(k, FETCH), include=[])
            times.append((time.perf_counter() - t) * 1000)
            tops.append({int(i) for i in res["ids"][0][:k]})
        runs.append((ef, tops, times))
    if hasattr(client, "close"):
        client.close()
    shutil.rmtree(path, ignore_errors=True)
    return runs, build


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--store", type=Path, required=True, help="a store whose embedding cache holds the corpus")
    ap.add_argument("--sizes", default="20000,200000")
    ap.add_argument("--queries", type=int, default=200, help="corpus-slice queries besides the labelled ones")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()))
    ap.add_argument("--configs", default="old,new")
    ap.add_argument("--ef-search", default="", help="comma-separated ef_search values to try on the new index")
    ap.add_argument("--fetch", type=int, default=0, help="ask HNSW for this many neighbours, keep the first k")
    args = ap.parse_args(argv)
    global FETCH
    FETCH = args.fetch
    real, queries = corpus_vectors(args.store, args.queries)
    print(f"{len(real)} real vectors, {len(queries)} queries", file=sys.stderr)
    configs = {"old": OLD, "new": HNSW}
    print("| N | index | recall@10 mean | min | queries < 0.9 | p50 ms | p99 ms | build s |")
    print("|---|---|---|---|---|---|---|---|")
    for n in [int(x) for x in args.sizes.split(",")]:
        matrix = grow(real, n)
        truth, times = run_exact(matrix, queries, args.k)
        truth_sets = [set(t.tolist()) for t in truth]
        print(f"| {n} | exact: numpy product + top-k | 1.000 | 1.00 | 0 | {pct(times, 50):.1f} | {pct(times, 99):.1f} | – |", flush=True)
        mirror = _Mirror()
        meta = [{"created_ts": float(i), "type": "note", "tags": ["a" if i % 2 else "b"]} for i in range(n)]
        mirror.upsert([str(i) for i in range(n)], matrix, meta)
        for label, f in (("memfs exact (VectorIndex's in-memory copy)", Filters()),
                         ("memfs exact, tag filter", Filters(tags=("a",)))):
            times = []
            for q in queries:
                t = time.perf_counter()
                mirror.query(q, args.k, f)
                times.append((time.perf_counter() - t) * 1000)
            print(f"| {n} | {label} | 1.000 | 1.00 | 0 | {pct(times, 50):.1f} | {pct(times, 99):.1f} | – |", flush=True)
        del mirror
        for name in filter(None, args.configs.split(",")):
            efs = [int(x) for x in args.ef_search.split(",")] if args.ef_search and name == "new" else None
            runs, build = run_chroma(matrix, queries, args.k, configs[name], args.work, efs)
            for ef, tops, times in runs:
                rec = [len(a & b) / args.k for a, b in zip(tops, truth_sets)]
                label = "HNSW old (Chroma defaults)" if name == "old" else (
                    f"HNSW new (M {HNSW['max_neighbors']}, ef_c {HNSW['ef_construction']}, "
                    f"ef_s {ef or HNSW['ef_search']})")
                print(f"| {n} | {label} | {np.mean(rec):.3f} | {min(rec):.2f} | {sum(r < 0.9 for r in rec)} "
                      f"| {pct(times, 50):.1f} | {pct(times, 99):.1f} | {build:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
