#!/usr/bin/env python3
"""Backup benchmarks (issue 4), each beside the GNU tool on the same directories in the same run.

    .venv/bin/python bench/bench_backup.py [N=20000] [--repeat 3]

The N-memory store (with its real embeddings) is built once into bench/out/store-N and reused.
- backup gz  ÷ (`tar czf` + `md5sum`)          goal ≤ 1.3
- backup zst ÷ (`tar --zstd -cf` + `md5sum`)   goal ≤ 1.1
- restore    ÷ `tar -x` of the same archive    goal ≤ 1.5 (verify + extract + swap; and with the
  pre-restore snapshot and the post-restore reconcile, as `manage_data.py restore` runs it)
- validate wall time and files/s
Medians of --repeat runs, ours and the anchor alternating.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from memfs import MemoryStore  # noqa: E402
from memfs.backups import BackupFile, create_backup  # noqa: E402
from memfs.restore import restore_backup, verify_and_extract  # noqa: E402
from memfs.filestore import Layout  # noqa: E402
from memfs.validate import validate  # noqa: E402

GEN = HERE.parent.parent / "shared" / "bench" / "gen_corpus.py"
PARTS = ["data/memories", "data/embeddings", "data/indexes"]


def build_store(n: int) -> Path:
    root = HERE / "out" / f"store-{n}"
    if (root / "data" / "indexes" / "catalog.sqlite").exists():
        return root
    corpus = HERE / "out" / f"corpus-{n}" / "mem"
    subprocess.run([sys.executable, str(GEN), str(corpus), str(n)], check=True, capture_output=True)
    records = [json.loads(line) for line in open(corpus.parent / "corpus.jsonl")]
    t = time.perf_counter()
    with MemoryStore.open(root, create=True) as s:
        s.add_many(records)
    print(f"built {root} with {n} memories in {time.perf_counter() - t:.0f}s", file=sys.stderr)
    return root


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True, stdout=subprocess.DEVNULL)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    root = build_store(args.n)
    layout = Layout(root)
    work = HERE / "out" / "backup-bench"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    du = sum(p.stat().st_size for part in PARTS for p in (root / part).rglob("*") if p.is_file())
    files = sum(1 for part in PARTS for p in (root / part).rglob("*") if p.is_file())
    rows = []

    for comp, anchor_cmd in [("gz", "tar czf {out} -C {root} {parts} && md5sum {out} > {out}.md5"),
                             ("zst", "tar --zstd -cf {out} -C {root} {parts} && md5sum {out} > {out}.md5")]:
        ours, gnu = [], []
        made: BackupFile | None = None
        for i in range(args.repeat):
            out = work / f"gnu-{i}.tar.{comp}"
            gnu.append(timed(lambda: sh(anchor_cmd.format(out=out, root=root, parts=" ".join(PARTS)))))
            bdir = work / f"ours-{comp}-{i}"
            t = time.perf_counter()
            made = create_backup(layout, backup_dir=bdir, compression=comp)
            ours.append(time.perf_counter() - t)
        size_gnu, size_ours = (work / f"gnu-0.tar.{comp}").stat().st_size, made.size
        rows.append((f"backup {comp}", statistics.median(ours), statistics.median(gnu),
                     f"archive {size_ours / 1e6:.1f} MB (GNU {size_gnu / 1e6:.1f} MB)"))

    # Restore the gz archive into a scratch copy of the store, against `tar -x` of the same archive.
    archive = next((work / "ours-gz-0").glob("memory_backup_*.tar.gz"))
    b = BackupFile.parse(archive)
    extract, full, gnu = [], [], []
    for i in range(args.repeat):
        target = work / f"gnu-x-{i}"
        target.mkdir()
        gnu.append(timed(lambda: sh(f"tar -xzf {archive} -C {target}")))
        staging = work / f"staging-{i}"
        extract.append(timed(lambda: verify_and_extract(b, staging)))
        scratch = work / f"scratch-{i}"
        shutil.copytree(root, scratch)
        t = time.perf_counter()
        restore_backup(Layout(scratch), b)
        with MemoryStore.open(scratch) as s:
            embedded = s.reconcile().embedded
        full.append(time.perf_counter() - t)
        assert embedded == 0
        shutil.rmtree(scratch)
        shutil.rmtree(staging)
        shutil.rmtree(target)
    rows.append(("restore: verify md5 + extract + check manifest", statistics.median(extract),
                 statistics.median(gnu), "anchor: tar -xzf"))
    rows.append(("restore as run: + pre-restore snapshot (zst) + swap + reconcile", statistics.median(full),
                 statistics.median(gnu), "0 embeddings after restore"))

    v = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        report = validate(layout)
        v.append(time.perf_counter() - t)
    assert report.ok, report.problems[:3]
    shutil.rmtree(work)

    print(f"Store: {args.n:,} memories, {files:,} files, {du / 1e6:.0f} MB in {', '.join(PARTS)}; "
          f"median of {args.repeat} runs.\n")
    print("| operation | memfs s | anchor s | ratio | note |")
    print("|---|---|---|---|---|")
    for name, ours_s, anchor_s, note in rows:
        print(f"| {name} | {ours_s:.2f} | {anchor_s:.2f} | **{ours_s / anchor_s:.2f}** | {note} |")
    med = statistics.median(v)
    print(f"| validate (every file parsed, catalog, Chroma ids, model hash) | {med:.2f} | – | – | "
          f"{report.memory_files / med:,.0f} memory files/s |")


if __name__ == "__main__":
    main()
