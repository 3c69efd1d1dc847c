#!/usr/bin/env python3
"""Sync benchmarks (issue #20), each figure beside its anchor measured in the same run.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_sync.py [N=27589] [--plumbing] [--work DIR]

- first push of N memories to a folder remote ÷ `rclone copy` of the same memory files (goal ≤ 1.5)
- bootstrap of a new replica from that remote ÷ import of an export with embeddings (goal ≤ 1.2),
  and the count embedded while bootstrapping (goal 0)
- one changed memory in the N-memory store: push on one side + pull on the other, wall time (goal
  ≤ 2 s) and bytes sent/received (goal: O(change), not O(store)); anchor: the store's memory bytes.
  Twice: pulled by a replica just opened, then by the same replica running (an owner)
- --three SECONDS: three replicas each writing 1 memory/s and syncing every --every seconds for that
  long; then the time until all agree after the writes stop (goal ≤ 2 intervals), conflicts lost 0

`--plumbing` uses a FAKE one-hot embedder (no model): everything but the model is measured. The
memories come from ../shared/bench/gen_corpus.py when it exists, else CPython's help paragraphs.
"""

from __future__ import annotations

import argparse
import io
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from sync_helpers import OneHotFakeEmbedder, every_memory  # noqa: E402  (the embedder is FAKE: --plumbing only)

from memfs.local import LocalOperations  # noqa: E402


def texts(n: int) -> list[str]:
    from conftest import filler_texts

    base = filler_texts(400)
    return [f"note {i}: {base[i % len(base)]}" for i in range(n)]


def open_replica(root: Path, plumbing: bool) -> LocalOperations:
    extra = {"embedder": OneHotFakeEmbedder()} if plumbing else {}
    return LocalOperations.open(root, watch=False, **extra)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def embedded(ops) -> int:
    with ops.owner.using() as store:
        return store.embedder.embedded


def bench_push_bootstrap(work: Path, n: int, plumbing: bool) -> tuple[LocalOperations, str]:
    a = open_replica(work / "a", plumbing)
    with a.owner.using() as store:
        store.add_many([{"content": t} for t in texts(n)])
    remote = str(work / "remote")
    _, copy_s = timed(lambda: subprocess.run(["rclone", "copy", str(a.layout.memories), str(work / "rclone-copy")],
                                             check=True))
    out, push_s = timed(lambda: a.sync(remote))
    print(f"first push of {n}: {push_s:.2f}s; rclone copy of the memory files: {copy_s:.2f}s; "
          f"ratio {push_s / copy_s:.2f} (goal <= 1.5); {out.bytes_sent / 1e6:.1f} MB sent")
    # Anchor: export with embeddings, then import into a new store.
    buf = io.BytesIO()
    a.export(buf, include_embeddings=True)
    (work / "export.json").write_bytes(buf.getvalue())
    imp = open_replica(work / "imported", plumbing)
    _, import_s = timed(lambda: imp.import_sources([str(work / "export.json")]))
    imp_embedded = embedded(imp)
    imp.close()
    b = open_replica(work / "b", plumbing)
    out, boot_s = timed(lambda: b.sync(remote))
    print(f"bootstrap of {n}: {boot_s:.2f}s; import of an export with embeddings: {import_s:.2f}s; ratio "
          f"{boot_s / import_s:.2f} (goal <= 1.2); embedded while bootstrapping: {out.embedded} "
          f"(import embedded {imp_embedded}); vectors reused {out.vectors_reused}")
    b.close()
    return a, remote


def bench_one_change(a: LocalOperations, work: Path, remote: str, plumbing: bool) -> None:
    """Twice: on a replica just opened (its first write into Chroma replays the vector log Chroma
    has not yet folded into its index: up to the collection's sync_threshold entries), then on the
    same replica running (as an owner is)."""
    b = open_replica(work / "b", plumbing)
    b.sync(remote)  # nothing new: a sync that brings nothing does not open the vector index
    store_bytes = sum(p.stat().st_size for p in a.layout.memories.rglob("*.json"))
    for label in ("just opened", "running"):
        mem_id = a.list(limit=1).memories[0].memory.id
        a.update(mem_id, tags=[label.replace(" ", "-")])
        (pa, ta) = timed(lambda: a.sync(remote))
        (pb, tb) = timed(lambda: b.sync(remote))
        print(f"one changed memory, pulling replica {label}: push {ta:.2f}s + pull {tb:.2f}s = {ta + tb:.2f}s "
              f"(goal <= 2 s); bytes sent {pa.bytes_sent}, received {pb.bytes_received}; the store's memory "
              f"files: {store_bytes} bytes (ratio {(pa.bytes_sent + pb.bytes_received) / store_bytes:.5f})")
        assert b.get(mem_id).memory.tags == (label.replace(" ", "-"),)
    b.close()


def bench_three(work: Path, seconds: float, every: float, plumbing: bool) -> None:
    remote = str(work / "remote3")
    reps = [open_replica(work / f"r{i}", plumbing) for i in range(3)]
    stop = threading.Event()
    written: list[list[str]] = [[], [], []]

    def run(i: int) -> None:
        ops, last = reps[i], 0.0
        k = 0
        while not stop.is_set():
            written[i].append(ops.add(f"replica {i} writes memory {k} at {time.time():.3f}").memory.id)
            k += 1
            if time.monotonic() - last >= every:
                ops.sync(remote)
                last = time.monotonic()
            stop.wait(1.0)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    stopped = time.monotonic()
    want = {m for w in written for m in w}
    rounds = 0
    while True:
        for r in reps:
            r.sync(remote)
        rounds += 1
        sets = [{m.memory.id for m in every_memory(r)} for r in reps]
        if sets[0] == sets[1] == sets[2] == want:
            break
    agree = time.monotonic() - stopped
    lost = len(want - sets[0])
    print(f"three replicas, 1 write/s each for {seconds:.0f}s, syncing every {every:.0f}s: all agree "
          f"{agree:.2f}s after the writes stop ({rounds} round(s) of three syncs; goal <= {2 * every:.0f}s); "
          f"{len(want)} memories, lost {lost}, conflicts {sum(len(r.conflicts()) for r in reps)}")
    for r in reps:
        r.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=27589)
    ap.add_argument("--work", type=Path, default=Path("/tmp/memfs-sync-bench"))
    ap.add_argument("--plumbing", action="store_true", help="a FAKE one-hot embedder: everything but the model")
    ap.add_argument("--three", type=float, default=0, metavar="SECONDS", help="run the three-replica case")
    ap.add_argument("--every", type=float, default=10.0)
    args = ap.parse_args()
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    print(f"# bench_sync n={args.n} plumbing={args.plumbing} (machine shared with other jobs: read the ratios)")
    if args.n:
        a, remote = bench_push_bootstrap(args.work, args.n, args.plumbing)
        bench_one_change(a, args.work, remote, args.plumbing)
        a.close()
    if args.three:
        bench_three(args.work, args.three, args.every, args.plumbing)
    shutil.rmtree(args.work, ignore_errors=True)


if __name__ == "__main__":
    main()
