#!/usr/bin/env python3
"""Search quality (issue #12): labelled queries against labelled memories in a gen_corpus background.

    .venv/bin/python bench/search_quality.py --n 2000 [--store DIR] [--exact] [--json OUT]

The sets (bench/search_sets/*.json) hold memories written for this purpose and three kinds of query:
`paraphrase` (a question whose answer says it in other words), `exact` (an error code, ticket id, path,
version, a person's name, a quoted phrase) and `none` (nothing stored answers it). The memories are
injected into a background of N memories from ../shared/bench/gen_corpus.py; every third query of each
kind is held out (`held`), the rest (`tuned`) is what the default's constants were tuned on.

For each mode it prints recall@1, recall@5, MRR@10 and nDCG@10 per kind and half, milliseconds per
query, and how often `search_result` answers "no good match" (right for `none`, wrong otherwise).
`--exact` adds `exact`: brute-force cosine over every stored vector, the ceiling for semantic search.

With --store the store is kept and reused: the background is embedded once, and the embedding cache
makes later runs (and edited sets) cheap. The background is whatever the store holds under bg/.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# ../shared/bench/gen_corpus.py beside the checkout (a worktree sits one level deeper).
GEN = next((p / "shared" / "bench" / "gen_corpus.py" for p in HERE.parents
            if (p / "shared" / "bench" / "gen_corpus.py").exists()), HERE.parent.parent / "shared" / "bench" / "gen_corpus.py")
SETS = HERE / "search_sets"
sys.path.insert(0, str(HERE.parent))

from memfs import MemoryStore  # noqa: E402
from memfs.query import analyze, is_good_match  # noqa: E402

KINDS = ("paraphrase", "exact", "none")
MODES = ("semantic", "keyword", "hybrid")
DEPTH = 10


def load_sets(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    """(memories, queries); each query gets `split` = tuned | held (every third of its kind held out)."""
    memories, queries = [], []
    for p in paths:
        d = json.loads(p.read_text())
        memories += d["memories"]
        queries += d["queries"]
    seen: dict[str, int] = {}
    for q in queries:
        n = seen.get(q["kind"], 0)
        seen[q["kind"]] = n + 1
        q["split"] = "held" if n % 3 == 2 else "tuned"
    return memories, queries


def build(root: Path, n: int, memories: list[dict], work: Path) -> MemoryStore:
    """The store: N background memories under bg/ (made once), the labelled ones under eval/ (always
    rewritten), reconciled (so only what changed is embedded)."""
    mem_dir = root / "data" / "memories"
    bg = mem_dir / "bg"
    if not bg.is_dir():
        MemoryStore.init(root)
        if GEN.exists():
            gen = work / f"gen{n}"
            if not (gen / "corpus.jsonl").exists():
                subprocess.run([sys.executable, str(GEN), str(gen / "mem"), str(n)], check=True, capture_output=True)
            shutil.copytree(gen / "mem", bg)
        else:  # a checkout without ../shared (CI): CPython's help topics, as gen_corpus starts with
            bg.mkdir()
            for i, text in enumerate(_pydoc_paragraphs(n)):
                (bg / f"{i:06d}.json").write_text(json.dumps({"content": text, "created_at": "2025-01-01T00:00:00Z"}))
    shutil.rmtree(mem_dir / "eval", ignore_errors=True)
    (mem_dir / "eval").mkdir(parents=True)
    for m in memories:
        doc = {"created_at": "2026-01-15T12:00:00Z", "type": "note", **m}
        (mem_dir / "eval" / f"{m['id']}.json").write_text(json.dumps(doc, ensure_ascii=False))
    store = MemoryStore.open(root)
    store.reconcile()
    return store


def _pydoc_paragraphs(n: int) -> list[str]:
    import pydoc_data.topics as topics

    out: list[str] = []
    for name in sorted(topics.topics):
        for para in topics.topics[name].split("\n\n"):
            para = " ".join(para.split())
            if 120 <= len(para) <= 1500 and para not in out:
                out.append(para)
                if len(out) == n:
                    return out
    return out


class ExactCosine:
    """Brute force over every vector in the embedding cache: the semantic ceiling."""

    def __init__(self, store: MemoryStore):
        import numpy as np

        rows = store.catalog.db.execute("SELECT id, hash FROM docs").fetchall()
        vecs = store.vectors_for(h for _, h in rows)
        self.ids = [i for i, h in rows if h in vecs]
        self.matrix = np.stack([vecs[h] for i, h in rows if h in vecs])
        self.store = store

    def search(self, query: str, k: int) -> list[str]:
        import numpy as np

        q = self.store.embedder.embed([query])[0]
        sims = self.matrix @ q
        top = np.argpartition(-sims, k)[:k]
        return [self.ids[i] for i in top[np.argsort(-sims[top])]]


def evaluate(store: MemoryStore, queries: list[dict], modes: list[str], exact: ExactCosine | None) -> list[dict]:
    """One row per (mode, query): the rank of the first answer (0 if not in the top DEPTH), ms, and
    whether the default's rule would have said "no good match"."""
    rows = []
    for mode in modes:
        for q in queries:
            t = time.perf_counter()
            if mode == "exact":
                ids, no_match, top = exact.search(q["query"], DEPTH), None, None
            else:
                hits = store.search(q["query"], k=DEPTH, mode=mode)
                ids = [h.memory.id for h in hits]
                no_match = not hits or not is_good_match(hits[0], analyze(q["query"]))
                top = (hits[0].score, hits[0].similarity) if hits else None
            ms = (time.perf_counter() - t) * 1000
            rank = next((r for r, i in enumerate(ids, 1) if i in q["answers"]), 0)
            rows.append({"mode": mode, "kind": q["kind"], "split": q["split"], "query": q["query"],
                         "rank": rank, "ms": ms, "no_match": no_match, "top": top})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    for mode in modes:
        for kind in KINDS:
            for split in ("tuned", "held", "all"):
                sel = [r for r in rows if r["mode"] == mode and r["kind"] == kind and split in (r["split"], "all")]
                if not sel:
                    continue
                ranks = [r["rank"] for r in sel]
                nm = [r["no_match"] for r in sel if r["no_match"] is not None]
                out.append({
                    "mode": mode, "kind": kind, "split": split, "queries": len(sel),
                    "r@1": _mean(0 < x <= 1 for x in ranks) if kind != "none" else None,
                    "r@5": _mean(0 < x <= 5 for x in ranks) if kind != "none" else None,
                    "mrr": _mean(1 / x if x else 0 for x in ranks) if kind != "none" else None,
                    "ndcg@10": _mean(1 / math.log2(x + 1) if x else 0 for x in ranks) if kind != "none" else None,
                    "no_match": _mean(nm) if nm else None,
                    "ms_p50": statistics.median(r["ms"] for r in sel),
                })
    return out


def _mean(values) -> float:
    values = [float(v) for v in values]
    return sum(values) / len(values) if values else 0.0


def table(summary: list[dict], n: int) -> str:
    f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"N = {n} background memories",
             "| mode | kind | half | queries | r@1 | r@5 | MRR | nDCG@10 | \"no good match\" | ms/query p50 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(f"| {s['mode']} | {s['kind']} | {s['split']} | {s['queries']} | {f(s['r@1'])} | {f(s['r@5'])} "
                     f"| {f(s['mrr'])} | {f(s['ndcg@10'])} | {f(s['no_match'])} | {s['ms_p50']:.1f} |")
    return "\n".join(lines)


def latency(rows: list[dict]) -> str:
    """p50/p99 per mode over every query, and hybrid ÷ semantic (issue #12's goal: p50 ≤ 1.5)."""
    by = {m: sorted(r["ms"] for r in rows if r["mode"] == m) for m in dict.fromkeys(r["mode"] for r in rows)}
    pct = lambda xs, q: xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]  # noqa: E731
    out = [f"{m}: p50 {pct(xs, .5):.1f} ms, p99 {pct(xs, .99):.1f} ms" for m, xs in by.items()]
    if "hybrid" in by and "semantic" in by:
        out.append(f"hybrid ÷ semantic: p50 {pct(by['hybrid'], .5) / pct(by['semantic'], .5):.2f}, "
                   f"p99 {pct(by['hybrid'], .99) / pct(by['semantic'], .99):.2f}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="background memories (gen_corpus)")
    ap.add_argument("--store", type=Path, help="keep the store here and reuse it (default: a temp dir)")
    ap.add_argument("--sets", type=Path, nargs="*", default=sorted(SETS.glob("*.json")))
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--exact", action="store_true", help="add brute-force cosine as a reference mode")
    ap.add_argument("--json", type=Path, help="write every per-query row and the summary here")
    ap.add_argument("--misses", action="store_true", help="list the queries each mode missed at rank 5")
    args = ap.parse_args(argv)
    memories, queries = load_sets(args.sets)
    tmp = None
    if args.store is None:
        tmp = Path(tempfile.mkdtemp(prefix="memfs-sq-"))
    root = args.store or tmp / "store"
    work = (args.store.parent if args.store else tmp)
    try:
        t = time.monotonic()
        store = build(root, args.n, memories, work)
        print(f"store ready in {time.monotonic() - t:.0f} s: {store.catalog.count()} memories", file=sys.stderr)
        try:
            modes = args.modes.split(",") + (["exact"] if args.exact else [])
            exact = ExactCosine(store) if args.exact else None
            t = time.monotonic()
            store.warm()
            print(f"warm-up (model + exact-search copy of the vectors) {time.monotonic() - t:.1f} s", file=sys.stderr)
            rows = evaluate(store, queries, modes, exact)
        finally:
            store.close()
        summary = summarise(rows)
        print(table(summary, args.n))
        print(latency(rows))
        if args.misses:
            for r in rows:
                if r["kind"] != "none" and not 0 < r["rank"] <= 5:
                    print(f"miss {r['mode']:8} {r['kind']:10} rank {r['rank']}: {r['query']}")
                elif r["kind"] == "none" and r["no_match"] is False:
                    print(f"listed {r['mode']:8} for a no-answer query: {r['query']}")
        if args.json:
            args.json.write_text(json.dumps({"n": args.n, "summary": summary, "rows": rows}, indent=1))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
