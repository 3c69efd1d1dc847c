#!/usr/bin/env python3
"""Searches while big hand drops are indexed (issue #14, finding 4), beside their anchor from the same run.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_handedits.py [--searches 300]

A store of 1,000 memories with the live indexer running. Anchor: search latency at rest. Then a 5 MB
file, a file at the content limit (256 Ki characters) and a burst of 1,000 new files are dropped into
data/memories/ at once, and searches run back to back until every file is indexed with its vector.
Reported: p50/p99 of each, and p99 under load ÷ p99 at rest (goal ≤ 2), for hybrid (the default:
the query is embedded, beside the indexer's encoding) and keyword searches. Half the searches at rest
run before the drop and half after, so a drift in the machine's load falls on both sides.

`MEMFS_BENCH_CODE=/path/to/a/checkout` measures that checkout's memfs instead (a before/after).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.environ.get("MEMFS_BENCH_CODE", str(HERE.parent)))

from memfs import MemoryStore  # noqa: E402
from memfs.watcher import Watcher  # noqa: E402

# /work/shared/bench beside the checkout (or beside the worktrees' folder)
GEN = next(p / "shared" / "bench" / "gen_corpus.py" for p in HERE.parents if (p / "shared" / "bench").is_dir())
QUERIES = ["how do I format a string", "exceptions raised by the parser", "sorting a list in place",
           "thread safety of queues", "unicode normalization", "reading files line by line",
           "default arguments evaluated once", "context managers and the with statement"]


def until(pred, timeout=600.0, step=0.01):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(step)


def timed_search(store, i: int, mode: str) -> float:
    t = time.perf_counter()
    store.search(QUERIES[i % len(QUERIES)], k=5, mode=mode)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--searches", type=int, default=300, help="searches per mode at rest")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="memfs-handedits-bench-"))
    subprocess.run([sys.executable, str(GEN), str(tmp / "corpus" / "mem"), "2000"], check=True, capture_output=True)
    records = [json.loads(line) for line in open(tmp / "corpus" / "corpus.jsonl")]
    base, burst = records[1000:], records[:1000]
    five_mb = orjson.dumps({"content": ("lorem ipsum dolor sit amet " * 200_000)[: 5 * 1024 * 1024]})
    at_limit = orjson.dumps({"content": ("a long memory about migrating the billing service " * 6000)[: 256 * 1024]})

    with MemoryStore.open(tmp / "live", create=True) as s:
        s.add_many({"content": r["content"]} for r in base)
        w = Watcher(s, reconcile_every=3600).start()
        w.idle.wait(60)
        mem = s.layout.memories
        for i in range(20):  # warm up both paths
            timed_search(s, i, "hybrid")
            timed_search(s, i, "keyword")
        # At rest: half before the drop, half after it is all indexed (the machine's load drifts).
        rest = {m: [timed_search(s, i, m) for i in range(args.searches // 2)] for m in ("hybrid", "keyword")}

        def drop() -> None:
            (mem / "drop").mkdir()
            (mem / "drop" / "five-mb.json").write_bytes(five_mb)
            (mem / "drop" / "at-limit.json").write_bytes(at_limit)
            for r in burst:
                (mem / "drop" / f"{r['id']}.json").write_bytes(orjson.dumps({"content": r["content"]}))

        def indexed() -> bool:
            n = s.catalog.db.execute("SELECT count(*) FROM docs WHERE path LIKE 'drop/%' "
                                     "AND synced_fp IS vec_fp").fetchone()[0]
            return n >= len(burst) + 1

        load: dict[str, list[float]] = {"hybrid": [], "keyword": []}
        t = time.perf_counter()
        writer = threading.Thread(target=drop)
        writer.start()
        i = 0
        while not (not writer.is_alive() and indexed()):
            mode = "hybrid" if i % 2 == 0 else "keyword"
            load[mode].append(timed_search(s, i // 2, mode))
            i += 1
        took = time.perf_counter() - t
        w.idle.wait(60)
        for m in ("hybrid", "keyword"):
            rest[m] += [timed_search(s, i, m) for i in range(args.searches // 2)]
        invalid = {x.path: x.reason for x in s.catalog.invalid()}
        w.stop()
    shutil.rmtree(tmp)

    print(f"drop of a 5 MB file, a 256 Ki-character file and 1,000 files: all indexed in {took:.1f} s; "
          f"invalid: {invalid or 'none'}")
    print("| search mode | at rest p50 / p99 | while indexing p50 / p99 (n) | p99 ratio | goal |")
    print("|---|---|---|---|---|")
    for mode in ("hybrid", "keyword"):
        r50, r99 = np.percentile(rest[mode], 50) * 1e3, np.percentile(rest[mode], 99) * 1e3
        l50, l99 = np.percentile(load[mode], 50) * 1e3, np.percentile(load[mode], 99) * 1e3
        print(f"| {mode} | {r50:.1f} / {r99:.1f} ms | {l50:.1f} / {l99:.1f} ms ({len(load[mode])}) "
              f"| **{l99 / r99:.2f}** | ≤ 2 |")
        print(f"|   max | {max(rest[mode]) * 1e3:.0f} ms | {max(load[mode]) * 1e3:.0f} ms | | |")


if __name__ == "__main__":
    main()
