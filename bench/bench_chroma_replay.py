#!/usr/bin/env python3
"""Chroma's sync_threshold: what a bulk write costs and what the first write after an open waits for.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_chroma_replay.py [N=20999] [--pairs 2]

For Chroma's default (1,000) and memfs's setting (vectors.HNSW["sync_threshold"]), alternating: N
random vectors upserted in batches of 1,000 into a new collection with memfs's HNSW parameters, then,
in a fresh process (as an owner starting), the time of one upsert. Chroma persists its HNSW index every
sync_threshold vectors and replays what came after from its log on the first read or write after an
open; N = 20,999 leaves 999 to replay at the default. The default is the anchor.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from memfs.vectors import HNSW  # noqa: E402

FIRST_WRITE = """
import sys, time, numpy as np, chromadb
from chromadb.config import Settings
col = chromadb.PersistentClient(path=sys.argv[1], settings=Settings(anonymized_telemetry=False)).get_collection("bench")
t = time.perf_counter()
col.upsert(ids=["new"], embeddings=np.ones((1, 384), dtype=np.float32))
print(time.perf_counter() - t)
"""


def run(n: int, threshold: int, where: Path) -> tuple[float, float]:
    import chromadb
    import numpy as np
    from chromadb.config import Settings

    shutil.rmtree(where, ignore_errors=True)
    client = chromadb.PersistentClient(path=str(where), settings=Settings(anonymized_telemetry=False))
    col = client.get_or_create_collection("bench", embedding_function=None,
                                          configuration={"hnsw": {**HNSW, "sync_threshold": threshold}})
    vectors = np.random.default_rng(0).random((n, 384), dtype=np.float32)
    t = time.perf_counter()
    for i in range(0, n, 1000):
        col.upsert(ids=[str(j) for j in range(i, min(n, i + 1000))], embeddings=vectors[i:i + 1000])
    bulk = time.perf_counter() - t
    del col, client
    out = subprocess.run([sys.executable, "-c", FIRST_WRITE, str(where)], check=True, capture_output=True, text=True)
    return bulk, float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=20999)
    ap.add_argument("--pairs", type=int, default=2)
    args = ap.parse_args()
    ours = HNSW["sync_threshold"]
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(args.pairs):
            (db, dw), (ob, ow) = run(args.n, 1000, Path(tmp) / "default"), run(args.n, ours, Path(tmp) / "ours")
            print(f"pair {p + 1}: bulk of {args.n}: sync_threshold {ours} {ob:.2f}s vs default 1000 {db:.2f}s "
                  f"(ratio {ob / db:.2f}); first write after an open {ow:.3f}s vs {dw:.3f}s (ratio {ow / dw:.3f})")


if __name__ == "__main__":
    main()
