#!/usr/bin/env python3
"""Searches while big hand drops are indexed (issue #14, finding 4), beside their anchor from the same run.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_handedits.py [--searches 300]

A store of 1,000 memories with the live indexer running. Anchor: search latency at rest. Then a 5 MB
file, a file at the content limit (256 Ki characters) and a burst of 1,000 new files are dropped into
data/memories/ at once, and searches run back to back until every file is indexed with its vector.
Reported: p50/p99 of each, and p99 under load ÷ p99 at rest (goal ≤ 2), for hybrid (the default:
the query is embedded, beside the indexer's encoding) and keyword searches. Half the searches at rest
run before the drop and half after, so a drift in the machine's load falls on both sides.

Then the burst case of issue #24, item 1: a person edits one memory (notes/edit.json, a new word each
time, saved as an editor does) again and again, first at rest, then while a second burst of 1,000 new
files is indexed and embedded. Reported beside each other: how long until the edit is found by keyword
search (goal: p95 ≤ 1 s during the burst) and until its vector is indexed, the latter also in units of
one full embedding round of the bulk copy measured in the same run (goal: ≤ one small batch after it is keyword-searchable).
`--only edits` runs just this part.

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


def edit_once(s, mem: Path, i: int) -> tuple[float, float]:
    """Save notes/edit.json with a new word; (seconds until keyword search finds it, until its vector
    is indexed)."""
    word = f"zqedit{i}x"
    tmp = mem / "notes" / ".edit.json.swp"
    tmp.write_bytes(orjson.dumps({"id": "edit", "content": f"the {word} rota for the kitchen, revision {i}"}))
    t0 = time.perf_counter()
    os.replace(tmp, mem / "notes" / "edit.json")
    until(lambda: [h.memory.id for h in s.search(word, k=1, mode="keyword")] == ["edit"], step=0.005)
    keyword = time.perf_counter() - t0
    until(lambda: all(mem_id != "edit" for mem_id, _, _ in s.pending_vectors()), step=0.005)
    return keyword, time.perf_counter() - t0


def edits_during_burst(s, w, mem: Path, burst: list[dict], edits_at_rest: int, limit: float | None = None) -> None:
    """Issue #24, item 1: edit latency at rest, then during a 1,000-file burst."""
    rounds: list[tuple[int, float, int]] = []  # (rows written, seconds, round size) per embedder call
    embed_pending = s.embed_pending

    def timed_round(ids, **kw):
        t = time.perf_counter()
        report = embed_pending(ids, **kw)
        rounds.append((report.vectors_written, time.perf_counter() - t, kw.get("round_size", w.embed_batch)))
        return report

    s.embed_pending = timed_round  # measure each embedding round (the bench's instrument only)
    (mem / "notes").mkdir(exist_ok=True)
    rest = []
    for i in range(edits_at_rest):
        rest.append(edit_once(s, mem, i))
        time.sleep(0.1)
    rest_rounds = len(rounds)

    def drop() -> None:
        (mem / "burst2").mkdir()
        for r in burst:
            (mem / "burst2" / f"{r['id']}.json").write_bytes(orjson.dumps({"content": r["content"]}))

    def burst_left() -> int:
        return sum(1 for _, path, _ in s.pending_vectors() if path.startswith("burst2/"))

    t = time.perf_counter()
    writer = threading.Thread(target=drop)
    writer.start()
    time.sleep(0.3)
    during = []
    i = edits_at_rest
    while (writer.is_alive() or burst_left()) and (limit is None or time.perf_counter() - t < limit):
        during.append(edit_once(s, mem, i))
        i += 1
        time.sleep(0.1)
    took = time.perf_counter() - t
    left = burst_left()
    writer.join()
    if limit is None:
        w.idle.wait(600)
    burst_rounds = rounds[rest_rounds:]
    # The unit: one full round (embed_batch rows) of a bulk copy. While a person edits, the copy runs in
    # shorter rounds (watcher.PERSON_ROUND), so the unit is also taken from a copy of 128 more files
    # made once nobody edits (after watcher.PERSON_WINDOW): rounds of full size, nothing else running.
    from memfs import watcher as watcher_module

    time.sleep(watcher_module.PERSON_WINDOW)
    vectors = s.vectors.count()
    (mem / "burst3").mkdir()
    for r in burst[:128]:
        (mem / "burst3" / f"{r['id']}.json").write_bytes(orjson.dumps({"content": r["content"] + " (again)"}))
    until(lambda: s.vectors.count() == vectors + 128, step=0.05)
    # A bulk call writes several rounds (watcher.BULK_ROUNDS); its time per round is the unit.
    full = [sec / -(-n // size) for n, sec, size in rounds[rest_rounds:] if size == w.embed_batch and n >= size]
    small = [sec for n, sec, _size in burst_rounds if 0 < n < w.embed_batch]
    round_s = float(np.median(full)) if full else float("nan")
    kw_rest, sem_rest = np.array(rest).T * 1e3
    kw, sem = np.array(during).T * 1e3
    behind = (sem - kw) / (round_s * 1e3)
    how = f"indexed and embedded in {took:.1f} s" if not left else \
        f"indexed; edits stopped after {took:.0f} s with {left} files still to embed (--burst-seconds)"
    print(f"\nan edit during a burst of 1,000 new files (issue #24, item 1): burst {how}, "
          f"{len(full)} rounds of {w.embed_batch} (median {round_s * 1e3:.0f} ms) and {len(small)} short ones "
          f"(median {np.median(small) * 1e3 if small else float('nan'):.0f} ms); "
          f"{len(during)} edits during it, {len(rest)} at rest")
    print("| edit → | at rest p50 / p95 | during the burst p50 / p95 (n) | p95 ratio | goal |")
    print("|---|---|---|---|---|")
    print(f"| keyword-searchable | {np.percentile(kw_rest, 50):.0f} / {np.percentile(kw_rest, 95):.0f} ms "
          f"| {np.percentile(kw, 50):.0f} / {np.percentile(kw, 95):.0f} ms ({len(kw)}) "
          f"| **{np.percentile(kw, 95) / np.percentile(kw_rest, 95):.2f}** | p95 ≤ 1 s |")
    print(f"| vector indexed | {np.percentile(sem_rest, 50):.0f} / {np.percentile(sem_rest, 95):.0f} ms "
          f"| {np.percentile(sem, 50):.0f} / {np.percentile(sem, 95):.0f} ms ({len(sem)}) "
          f"| **{np.percentile(sem, 95) / np.percentile(sem_rest, 95):.2f}** | – |")
    print(f"| vector after keyword, in bulk rounds | – | p50 {np.percentile(behind, 50):.2f} / p95 "
          f"{np.percentile(behind, 95):.2f} / max {behind.max():.2f} rounds | – | ≤ 1 round |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--searches", type=int, default=300, help="searches per mode at rest")
    ap.add_argument("--edits", type=int, default=20, help="edits at rest (issue #24's burst case)")
    ap.add_argument("--only", choices=["searches", "edits"], help="run one part only")
    ap.add_argument("--base", type=int, default=1000, help="memories in the store before the drops")
    ap.add_argument("--burst-seconds", type=float, help="edits: stop editing after this long into the burst")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="memfs-handedits-bench-"))
    subprocess.run([sys.executable, str(GEN), str(tmp / "corpus" / "mem"), "3000"], check=True, capture_output=True)
    records = [json.loads(line) for line in open(tmp / "corpus" / "corpus.jsonl")]
    base, burst, burst2 = records[1000:2000], records[:1000], records[2000:]
    five_mb = orjson.dumps({"content": ("lorem ipsum dolor sit amet " * 200_000)[: 5 * 1024 * 1024]})
    at_limit = orjson.dumps({"content": ("a long memory about migrating the billing service " * 6000)[: 256 * 1024]})

    with MemoryStore.open(tmp / "live", create=True) as s:
        s.add_many({"content": r["content"]} for r in base[: args.base])
        w = Watcher(s, reconcile_every=3600).start()
        w.idle.wait(60)
        mem = s.layout.memories
        if args.only == "edits":
            edits_during_burst(s, w, mem, burst2, args.edits, args.burst_seconds)
            w.stop()
            shutil.rmtree(tmp)
            return
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
        if args.only is None:
            edits_during_burst(s, w, mem, burst2, args.edits, args.burst_seconds)
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
