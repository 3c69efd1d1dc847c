#!/usr/bin/env python3
"""Core benchmarks (issue 2), each figure beside its anchor measured in the same run.

    .venv/bin/python bench/bench_core.py 2000 [20000 ...] [--repeat 3]

- bulk add docs/s            ÷ raw sentence-transformers encode docs/s of the same texts (goal ≥ 0.9)
- search p50/p99             ÷ raw (encode query + collection.query) on the same collection (goal p50 ≤ 1.2)
- no-change reindex seconds  (goal ≤ 1 s at 20k, 0 embeddings)

The corpus comes from ../shared/bench/gen_corpus.py. Prints a Markdown table row per N.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
GEN = HERE.parent.parent / "shared" / "bench" / "gen_corpus.py"
sys.path.insert(0, str(HERE.parent))

from memfs import MemoryStore  # noqa: E402
from memfs.embedder import MiniLMEmbedder, _load_model  # noqa: E402


def corpus(n: int, work: Path) -> list[dict]:
    out = work / f"corpus-{n}" / "mem"
    subprocess.run([sys.executable, str(GEN), str(out), str(n)], check=True, capture_output=True)
    with open(out.parent / "corpus.jsonl") as f:
        return [json.loads(line) for line in f]


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def queries(records: list[dict], n: int = 200) -> list[str]:
    rnd = random.Random(11)
    out = []
    for r in rnd.sample(records, n):
        words = r["content"].split()
        start = rnd.randrange(max(1, len(words) - 8))
        out.append(" ".join(words[start:start + 8]))
    return out


def bench(n: int, work: Path, repeat: int) -> dict:
    records = corpus(n, work)
    texts = [r["content"] for r in records]
    model = _load_model()
    model.encode(texts[:64], batch_size=64)  # warm up both paths alike

    # Anchor and add alternate, `repeat` times; the machine's speed drifts between runs, so each add
    # is compared with the encode just before it and the median pair is reported.
    pairs = []
    for i in range(repeat):
        t = time.perf_counter()
        model.encode(texts, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
        raw_rate = n / (time.perf_counter() - t)
        root = work / f"store-{n}"
        shutil.rmtree(root, ignore_errors=True)
        store = MemoryStore.open(root, create=True, embedder=MiniLMEmbedder())
        t = time.perf_counter()
        store.add_many(records)
        add_rate = n / (time.perf_counter() - t)
        pairs.append((add_rate / raw_rate, raw_rate, add_rate))
        if i < repeat - 1:
            store.close()
    add_ratio, raw_rate, add_rate = statistics.median_low(pairs)

    qs = queries(records)
    col = store.vectors.collection
    raw_lat, sem_lat, hyb_lat = [], [], []
    for q in qs[:10]:  # warm up
        store.search(q, k=5, mode="hybrid")
    for q in qs:
        t = time.perf_counter()
        v = model.encode([q], normalize_embeddings=True, show_progress_bar=False)
        col.query(query_embeddings=v, n_results=5, include=["distances"])
        raw_lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        store.search(q, k=5, mode="semantic")
        sem_lat.append(time.perf_counter() - t)
        t = time.perf_counter()
        store.search(q, k=5, mode="hybrid")
        hyb_lat.append(time.perf_counter() - t)

    before = store.embedder.embedded
    t = time.perf_counter()
    report = store.reconcile()
    reindex_s = time.perf_counter() - t
    assert report.embedded == 0 and store.embedder.embedded == before
    store.close()

    # The same no-change reindex as a user runs it: a fresh process, `memfs reindex`.
    t = time.perf_counter()
    subprocess.run([str(HERE.parent / ".venv" / "bin" / "memfs"), "--root", str(root), "reindex", "--json"],
                   check=True, capture_output=True)
    cli_reindex_s = time.perf_counter() - t
    shutil.rmtree(root)
    return {
        "n": n, "raw_encode_docs_s": raw_rate, "add_docs_s": add_rate, "add_ratio": add_ratio,
        "add_ratios": [round(r, 3) for r, _, _ in pairs],
        "raw_p50_ms": pct(raw_lat, 50) * 1e3, "raw_p99_ms": pct(raw_lat, 99) * 1e3,
        "sem_p50_ms": pct(sem_lat, 50) * 1e3, "sem_p99_ms": pct(sem_lat, 99) * 1e3,
        "hyb_p50_ms": pct(hyb_lat, 50) * 1e3, "hyb_p99_ms": pct(hyb_lat, 99) * 1e3,
        "sem_p50_ratio": statistics.median(sem_lat) / statistics.median(raw_lat),
        "sem_p99_ratio": pct(sem_lat, 99) / pct(raw_lat, 99),
        "reindex_s": reindex_s, "reindex_embedded": report.embedded, "cli_reindex_s": cli_reindex_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("sizes", type=int, nargs="*", default=[2000])
    ap.add_argument("--repeat", type=int, default=3, help="encode/add pairs per size (median reported)")
    args = ap.parse_args()
    sizes = args.sizes
    print("| N | raw encode docs/s | add docs/s | ratio (goal ≥ 0.9), median of pairs (each pair) | raw search p50/p99 ms | semantic p50/p99 ms "
          "| ratio p50 (goal ≤ 1.2) / p99 | hybrid p50/p99 ms | no-change reindex s (in-process / `memfs reindex`) |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="memfs-bench-") as tmp:
        for n in sizes:
            r = bench(n, Path(tmp), args.repeat)
            print(f"| {n:,} | {r['raw_encode_docs_s']:.1f} | {r['add_docs_s']:.1f} | **{r['add_ratio']:.2f}** "
                  f"({', '.join(f'{x:.2f}' for x in r['add_ratios'])}) "
                  f"| {r['raw_p50_ms']:.1f} / {r['raw_p99_ms']:.1f} | {r['sem_p50_ms']:.1f} / {r['sem_p99_ms']:.1f} "
                  f"| **{r['sem_p50_ratio']:.2f}** / {r['sem_p99_ratio']:.2f} | {r['hyb_p50_ms']:.1f} / {r['hyb_p99_ms']:.1f} "
                  f"| **{r['reindex_s']:.2f}** ({r['reindex_embedded']} embedded) / {r['cli_reindex_s']:.2f} |",
                  flush=True)
            print(json.dumps(r), file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
