#!/usr/bin/env python3
"""Import benchmarks on the peers' own formats (issue #25), each figure beside an anchor measured in
the same run.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_import_peers.py [N=27589] [--rss-n 20000]

- claude-flow 3.x: import of N records from 12 `.swarm/memory.db` (3.x schema, no vectors)
  ÷ `add_many` of the same documents into an empty store                 (throughput, goal ≥ 0.9)
- claude-flow 3.x with this model's vectors in its `embedding` column ÷ `add_many` with the vectors
  precomputed (seeded in the cache): a foreign vector is proven only by embedding its text
  (docs/import-export.md), so this shows what that proof costs
- memfs export with embeddings (per-record `embedding_sha256`, reused without embedding)
  ÷ `add_many` with precomputed vectors, --repeat pairs taking turns, median (goal ≥ 0.9)
- peak RSS of importing that export at --rss-n records, in a fresh process, beside the peak RSS of a
  process that opens an empty store and embeds one text           (goal ≤ 1.2 × empty + 100 MB);
  records beyond N are copies of the export's with random unit vectors under valid proofs (reused,
  not embedded: the RSS is the import's, whatever the vectors hold). Such an import never loads the
  model, so it is measured twice: as is, and in a process that embeds one text first (model loaded,
  as in the empty store's figure)

The texts are bench_import.py's (realistic agent notes, every one distinct).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from bench_import import generate  # noqa: E402
from memfs import MemoryStore, export, importers  # noqa: E402
from source_fixtures import write_swarm3_db  # noqa: E402


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def cf3_rows(rows: list[dict], vectors=None) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        row = {"key": r["key"], "content": r["value"], "namespace": r["namespace"], "metadata": r["metadata"],
               "created_at": r["created_at"] * 1000, "access_count": r["access_count"], "tags": ["bench"]}
        if vectors is not None:
            row["embedding"] = vectors[i]
        out.append(row)
    return out


def peak_rss_mb(code: str) -> float:
    """The child's own peak (VmHWM). Not ru_maxrss: Linux carries it over fork and exec, so a child of
    this (large) process would report this process's peak (session 8: 1,306 MB for both figures)."""
    run = subprocess.run([sys.executable, "-c", code + "\nimport re\n"
                          "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"],
                         capture_output=True, text=True, check=True, cwd=HERE.parent)
    return int(run.stdout.strip().splitlines()[-1]) / 1024


def write_rss_export(source: Path, out: Path, n: int) -> None:
    """An export of n records with embeddings for the RSS figure. Up to the N records measured above,
    their own; beyond them, copies with a number added to the content and a random unit vector under
    a valid `embedding_sha256` (the import reuses it: what a vector holds plays no part in memory)."""
    import numpy as np
    import orjson

    from memfs.documents import content_hash

    data = orjson.loads(source.read_bytes())
    have, rng = data["memories"], np.random.default_rng(5)
    for i in range(len(have), n):
        doc = dict(have[i % len(have)])
        doc.pop("id", None)
        doc["content"] = f"{doc['content']} (copy {i})"
        vec = rng.standard_normal(384).astype(np.float32)
        vec /= np.linalg.norm(vec)
        doc["embedding"] = vec.tolist()
        doc["embedding_sha256"] = export.vector_proof(data["model"], content_hash(doc["content"]), vec)
        have.append(doc)
    data["memories"] = have[:n]
    data["count"] = n
    out.write_bytes(orjson.dumps(data))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=27589)
    ap.add_argument("--rss-n", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3, help="pairs of the memfs export row, taking turns (median)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/memfs-import-peers-bench"))
    args = ap.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    dbs = generate(args.n, random.Random(13))
    paths = [write_swarm3_db(work / "cf3" / f"p{d:02d}" / ".swarm" / "memory.db", cf3_rows(rows))
             for d, rows in enumerate(dbs)]
    docs = [importers.apply_options(rec, src, None, None)
            for src in (importers.open_source(p) for p in paths) for rec in src.records()]

    # 1. claude-flow 3.x, no vectors: import ÷ add_many of the same documents
    with MemoryStore.open(work / "anchor", create=True) as s:
        s.embedder.embed(["warm up"] * 64)
        _, t_add = timed(lambda: s.add_many(docs))
        model = s.embedder.model_id
        texts = [d["content"] for d in docs]
        vectors = s.vectors_for(m.memory.content_hash for m in s.list(limit=None))
        by_text = {e.memory.content: vectors[e.memory.content_hash] for e in s.list(limit=None)}
        with open(work / "export.json", "wb") as f:
            export.export(s, f, include_embeddings=True)
    with MemoryStore.open(work / "cf3-store", create=True) as s:
        s.embedder.embed(["warm up"] * 64)
        rep, t_imp = timed(lambda: importers.import_sources(s, paths))
        assert sum(x.new for x in rep.sources) == args.n
    print(f"# claude-flow 3.x, {args.n} records: add_many {args.n / t_add:.0f}/s, import {args.n / t_imp:.0f}/s, "
          f"ratio {t_add / t_imp:.2f}", flush=True)

    # 2. and 3.: with vectors, ÷ add_many with the vectors precomputed (seeded in the cache)
    vpaths = [write_swarm3_db(work / "cf3v" / f"p{d:02d}" / ".swarm" / "memory.db",
                              cf3_rows(rows, [by_text[r["value"]].tolist() for r in rows]))
              for d, rows in enumerate(dbs)]
    from memfs import documents

    def seeded_add(directory: Path) -> float:
        with MemoryStore.open(directory, create=True) as s:
            s.embedder.embed(["warm up"] * 64)
            return timed(lambda: (s.catalog.cache_vectors(model, {documents.content_hash(t): by_text[t] for t in texts}),
                                  s.add_many(docs)))[1]

    def memfs_import(directory: Path) -> tuple[float, int]:
        with MemoryStore.open(directory, create=True) as s:
            rep, t = timed(lambda: importers.import_sources(s, [work / "export.json"]))
            return t, rep.sources[0].vectors_reused

    with MemoryStore.open(work / "cf3v-store", create=True) as s:
        rep, t_v = timed(lambda: importers.import_sources(s, vpaths))
        check = rep.sources[0].vector_check
    # Neither side of the memfs row embeds: both are file, catalog and Chroma writes, which the disk
    # makes vary by ±20 % from one run to the next; so the pair runs --repeat times, taking turns.
    pairs = []
    for r in range(args.repeat):
        t_pre = seeded_add(work / f"anchor-pre-{r}")
        t_m, reused = memfs_import(work / f"memfs-store-{r}")
        pairs.append((t_pre, t_m))
        print(f"#   pair {r + 1}: add_many precomputed {t_pre:.1f} s, memfs export import {t_m:.1f} s "
              f"({reused} reused), ratio {t_pre / t_m:.2f}", flush=True)
    t_pre = statistics.median(p[0] for p in pairs)
    ratio_m = statistics.median(p[0] / p[1] for p in pairs)
    print(f"# with vectors: add_many precomputed {args.n / t_pre:.0f}/s; claude-flow 3.x import "
          f"{args.n / t_v:.0f}/s (ratio {t_pre / t_v:.2f}; {check}); memfs export import: median ratio "
          f"{ratio_m:.2f} of {len(pairs)} pairs", flush=True)

    # 4. peak RSS at --rss-n, fresh processes
    n = args.rss_n
    sub = work / "export-rss.json"
    write_rss_export(work / "export.json", sub, n)
    empty = peak_rss_mb(f"from memfs import MemoryStore\nwith MemoryStore.open({str(work / 'rss-empty')!r}, "
                        "create=True) as s: s.embedder.embed(['warm up'])")
    full = peak_rss_mb(f"from memfs import MemoryStore, importers\nwith MemoryStore.open({str(work / 'rss-full')!r}, "
                       f"create=True) as s: importers.import_sources(s, [{str(sub)!r}])")
    warm = peak_rss_mb(f"from memfs import MemoryStore, importers\nwith MemoryStore.open({str(work / 'rss-warm')!r}, "
                       f"create=True) as s:\n    s.embedder.embed(['warm up'])\n"
                       f"    importers.import_sources(s, [{str(sub)!r}])")
    print(f"# peak RSS: empty store {empty:.0f} MB; import of {n} with embeddings {full:.0f} MB, with the model "
          f"loaded first {warm:.0f} MB (goal ≤ {1.2 * empty + 100:.0f} MB)")
    print("| N | cf3 import ÷ add_many | cf3+vectors import ÷ add_many precomputed | memfs export+vectors "
          "import ÷ add_many precomputed | RSS n | RSS empty / import / import, model loaded MB |")
    print("|---|---|---|---|---|---|")
    print(f"| {args.n} | {t_add / t_imp:.2f} | {t_pre / t_v:.2f} | {ratio_m:.2f} | {n} "
          f"| {empty:.0f} / {full:.0f} / {warm:.0f} |")


if __name__ == "__main__":
    main()
