#!/usr/bin/env python3
"""The owner every client shares (issue 9), each figure beside its anchor from the same run.

    .venv/bin/python bench/bench_owner.py [N] [--runs 20]

- a whole `memfs search` process while a warm owner runs: wall time p50/p95 (goal p50 ≤ 0.3 s),
  beside the same command with `--no-daemon` (it loads the model and opens the store itself)
- search through the owner's Unix socket ÷ in-process (LocalOperations), the same queries on the same
  store, alternated (goal p50 ≤ 1.2)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from memfs.local import LocalOperations  # noqa: E402
from memfs.lock import read_owner  # noqa: E402
from memfs.remote import RemoteOperations  # noqa: E402

GEN = HERE.parent.parent / "shared" / "bench" / "gen_corpus.py"
QUERIES = ["how do I open a file for reading", "what does the garbage collector do", "format a date as text",
           "compare two floating point numbers", "start a process and wait for it", "read environment variables",
           "parse command line options", "sort a list by a key", "what is a context manager",
           "how are exceptions chained"]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def build(root: Path, n: int) -> None:
    corpus = root.parent / "corpus"
    subprocess.run([sys.executable, str(GEN), str(corpus), str(n)], check=True, capture_output=True)
    docs = [json.loads(line) for line in (root.parent / "corpus.jsonl").read_text().splitlines()]
    with LocalOperations.open(root) as ops:
        with ops.owner.using() as store:
            store.add_many([{"content": d["content"], "tags": d.get("tags", [])} for d in docs])


def cli_search(root: Path, *extra: str) -> float:
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "memfs", "--root", str(root), *extra, "search", QUERIES[0], "-k", "5"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return time.perf_counter() - t


def start_owner(root: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "memfs", "--root", str(root), "serve"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        sock = read_owner(root / "data" / "memfs.lock").get("socket")
        if sock and os.path.exists(sock):
            with RemoteOperations(socket=sock) as r:
                try:
                    if r.health().status == "ok" and r.status().model_loaded:
                        return proc
                except Exception:
                    pass
        time.sleep(0.05)


def query_times(ops, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        for q in QUERIES:
            t = time.perf_counter()
            ops.search(q, k=5)
            out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=2000)
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="memfs-bench-owner-"))
    root = work / "store"
    t = time.perf_counter()
    build(root, args.n)
    print(f"store of {args.n} memories built in {time.perf_counter() - t:.0f}s")

    # 1. whole processes: through a warm owner vs --no-daemon, alternated
    warm, cold = [], []
    proc = start_owner(root)
    cli_search(root)  # first client run warms the page cache for the interpreter
    for _ in range(args.runs):
        warm.append(cli_search(root))
    proc.terminate()
    proc.wait()
    for _ in range(max(3, args.runs // 4)):
        cold.append(cli_search(root, "--no-daemon"))
    print(f"`memfs search` with a warm owner: p50 {pct(warm, 50):.3f}s p95 {pct(warm, 95):.3f}s "
          f"(goal p50 ≤ 0.3 s); with --no-daemon: p50 {pct(cold, 50):.3f}s p95 {pct(cold, 95):.3f}s; "
          f"ratio {pct(warm, 50) / pct(cold, 50):.2f}")

    # 2. the same queries in-process and through the socket, alternated twice
    local_t, remote_t = [], []
    for _ in range(2):
        with LocalOperations.open(root) as ops:
            ops.search("warm up the model", k=5)
            local_t += query_times(ops, 5)
        proc = start_owner(root)
        sock = read_owner(root / "data" / "memfs.lock")["socket"]
        with RemoteOperations(socket=sock) as ops:
            ops.search("warm up the connection", k=5)
            remote_t += query_times(ops, 5)
        proc.terminate()
        proc.wait()
    print(f"search in-process: p50 {statistics.median(local_t) * 1000:.1f} ms p99 {pct(local_t, 99) * 1000:.1f} ms; "
          f"through the owner's socket: p50 {statistics.median(remote_t) * 1000:.1f} ms "
          f"p99 {pct(remote_t, 99) * 1000:.1f} ms; ratio p50 "
          f"{statistics.median(remote_t) / statistics.median(local_t):.2f} (goal ≤ 1.2)")


if __name__ == "__main__":
    main()
