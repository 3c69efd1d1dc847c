#!/usr/bin/env python3
"""Import/export benchmarks (issue #13), each figure beside its anchor measured in the same run.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_import.py [N=27589] [--work /tmp/memfs-import-bench]

- import of N swarm-style records from 12 claude-flow `.swarm/memory.db` files
  ÷ `add_many` of the same documents into an empty store           (throughput ratio, goal ≥ 0.9)
- `--dry-run` of the same import                                   (seconds, goal ≤ 10 s)
- streaming export of the imported store ÷ `tar czf` of its data/memories  (time ratio, goal ≤ 1.5)

The sources mimic the deployment in the issue: 12 databases, 27,589 entries, namespaces of very
different sizes (the largest, "swarm", holds 3,933 in its database), keys, some TTLs; values are
short, realistic agent notes (40-200 characters), every one distinct.
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

from memfs import MemoryStore, export, importers  # noqa: E402
from memfs.embedder import _load_model  # noqa: E402
from source_fixtures import write_swarm_db  # noqa: E402

NAMESPACES = ["swarm", "agents", "tasks", "sessions", "architecture", "implementation", "tests", "debug",
              "coordination", "performance", "default", "hooks"]
AGENTS = ["coder", "reviewer", "tester", "architect", "researcher", "planner", "optimizer", "monitor"]
VERBS = ["implemented", "reviewed", "refactored", "benchmarked", "documented", "fixed", "profiled", "designed",
         "migrated", "validated", "deployed", "rolled back"]
THINGS = ["the retry logic of the payment webhook", "JWT refresh handling in the auth service",
          "the Postgres connection pool", "pagination of the orders API", "the Redis cache eviction policy",
          "the CSV export job", "rate limiting on the public gateway", "the websocket reconnect loop",
          "schema migration 0042", "the feature flag cleanup", "the search indexer batch size",
          "image thumbnail generation", "the nightly backup script", "the billing reconciliation report",
          "error handling in the upload flow", "the React settings page", "GraphQL resolver caching",
          "the Kafka consumer lag alert", "TLS certificate renewal", "the onboarding email sequence"]
OUTCOMES = ["tests pass", "p95 latency down {n}%", "{n} failing cases left", "needs review from {a}",
            "blocked on {a}", "merged in PR #{n}", "coverage now {n}%", "memory use down {n} MB",
            "rolled out to {n}% of users", "found {n} flaky tests"]


def generate(n: int, rnd: random.Random) -> list[list[dict]]:
    """n records split over 12 databases; one namespace of one database holds 3,933 (scaled with n)."""
    big = round(3933 * n / 27589)
    per_db = [big + (n - big) // 12] + [(n - big) // 12] * 11
    per_db[-1] += n - sum(per_db)
    dbs, serial = [], 0
    for d, count in enumerate(per_db):
        rows = []
        for i in range(count):
            serial += 1
            ns = "swarm" if d == 0 and i < big else NAMESPACES[1 + rnd.randrange(len(NAMESPACES) - 1)]
            agent = f"{rnd.choice(AGENTS)}-{rnd.randint(1, 9)}"
            outcome = rnd.choice(OUTCOMES).format(n=rnd.randint(2, 99), a=rnd.choice(AGENTS))
            value = f"{agent} {rnd.choice(VERBS)} {rnd.choice(THINGS)} (task {serial}): {outcome}"
            if rnd.random() < 0.3:
                value += f"; next: {rnd.choice(VERBS)} {rnd.choice(THINGS)}"
            row = {"key": f"{ns}/{agent}/task-{serial}", "value": value, "namespace": ns,
                   "metadata": {"agent": agent, "swarm": f"swarm-{d}"}, "created_at": 1_717_200_000 + serial,
                   "access_count": rnd.randint(0, 20)}
            if rnd.random() < 0.1:
                row["ttl"] = 10 ** 9  # long TTLs: none expires during the run
            rows.append(row)
        dbs.append(rows)
    return dbs


class OneHotEmbedder:
    """Fake, for --plumbing only: a content hash to a one-hot vector. No meaning, no model."""

    model_id, dim = "fake-one-hot", 384

    def __init__(self):
        self.embedded = 0

    def embed(self, texts):
        import hashlib

        import numpy as np

        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            out[i, hashlib.sha256(t.encode()).digest()[0] % self.dim] = 1
        self.embedded += len(texts)
        return out


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=27589)
    ap.add_argument("--work", type=Path, default=Path("/tmp/memfs-import-bench"))
    ap.add_argument("--plumbing", action="store_true",
                    help="a fake one-hot embedder (no meaning, no model): measures everything but the model")
    ap.add_argument("--repeat", type=int, default=1,
                    help="rounds of (add_many, import), the order swapped every other round; the ratio's median")
    args = ap.parse_args()
    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rnd = random.Random(13)
    dbs = generate(args.n, rnd)
    paths = [write_swarm_db(work / "sources" / f"project-{d:02d}" / ".swarm" / "memory.db", rows)
             for d, rows in enumerate(dbs)]
    print(f"# {args.n} records in {len(paths)} databases; largest namespace in one db: "
          f"{sum(1 for r in dbs[0] if r['namespace'] == 'swarm')}", flush=True)
    embedder = OneHotEmbedder() if args.plumbing else None
    if not args.plumbing:
        _load_model()

    # The anchor: add_many of the very documents the import writes (read and planned here, untimed).
    docs = []
    for p in paths:
        src = importers.open_source(p)
        for rec in src.records():
            docs.append(importers.apply_options(rec, src, None, None))

    def anchor(r: int) -> float:
        with MemoryStore.open(work / f"anchor{r}", create=True, embedder=embedder) as s:
            s.embedder.embed(["warm up"] * 64)
            _, t = timed(lambda: s.add_many(docs))
            assert s.catalog.count() == args.n
        if r < args.repeat - 1:
            shutil.rmtree(work / f"anchor{r}")
        return t

    def imported(r: int) -> tuple[float, float]:
        if r:
            shutil.rmtree(work / "store")
        with MemoryStore.open(work / "store", create=True, embedder=embedder) as s:
            s.embedder.embed(["warm up"] * 64)
            dry, t_dry = timed(lambda: importers.import_sources(s, paths, dry_run=True))
            assert sum(x.new for x in dry.sources) == args.n and s.catalog.count() == 0
            rep, t_imp = timed(lambda: importers.import_sources(s, paths))
            assert sum(x.new for x in rep.sources) == args.n and s.catalog.count() == args.n
        return t_dry, t_imp

    rounds = []
    for r in range(args.repeat):
        if r % 2 == 0:
            t_add = anchor(r)
            t_dry, t_imp = imported(r)
        else:
            t_dry, t_imp = imported(r)
            t_add = anchor(r)
        rounds.append((t_add, t_imp, t_dry))
        print(f"# round {r + 1}: add_many {args.n / t_add:.0f}/s, import {args.n / t_imp:.0f}/s, "
              f"ratio {t_add / t_imp:.2f}, dry-run {t_dry:.2f} s", flush=True)
    ratios = sorted(a / i for a, i, _ in rounds)
    ratio = ratios[len(ratios) // 2] if len(ratios) % 2 else (ratios[len(ratios) // 2 - 1] + ratios[len(ratios) // 2]) / 2
    t_add = statistics.median(a for a, _, _ in rounds)
    t_imp = statistics.median(i for _, i, _ in rounds)
    t_dry = max(d for _, _, d in rounds)

    with MemoryStore.open(work / "store", embedder=embedder) as s:
        again, t_again = timed(lambda: importers.import_sources(s, paths))
        assert sum(x.new for x in again.sources) == 0

        out = work / "export.json"
        with open(out, "wb") as f:
            exp, t_exp = timed(lambda: export.export(s, f))
        with open(work / "export-mms.json", "wb") as f:
            _, t_exp_mms = timed(lambda: export.export(s, f, format="mms"))
        _, t_tar = timed(lambda: subprocess.run(["tar", "czf", str(work / "memories.tar.gz"), "-C",
                                                 str(s.layout.data), "memories"], check=True))

    print(f"# import and add_many: medians of {args.repeat} round(s); dry-run: the slowest")
    print("| N | import docs/s | add_many docs/s | ratio (≥ 0.9) | dry-run s (≤ 10) | re-import s (0 new) "
          "| export s (memfs / mms) | tar czf s | export ÷ tar (≤ 1.5) |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| {args.n} | {args.n / t_imp:.0f} | {args.n / t_add:.0f} | {ratio:.2f} | {t_dry:.2f} | "
          f"{t_again:.2f} | {t_exp:.2f} / {t_exp_mms:.2f} | {t_tar:.2f} | {t_exp / t_tar:.2f} |")
    print(f"# export: {exp.count} memories, {exp.bytes / 1e6:.1f} MB; tar.gz {(work / 'memories.tar.gz').stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
