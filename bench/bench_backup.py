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

    .venv/bin/python bench/bench_backup.py [N] --issue11 [--repeat 3]

Issue #11 only (the rows above are not re-run):
- encrypted backup (age, X25519 recipient) ÷ plain backup of the same store   goal ≤ 1.15 (gz and zst)
- deep verify (`verify_backup`) ÷ (`tar -tzf` + `md5sum`) of the same archive   goal ≤ 1.5
- refusing a gzip bomb (2 GiB of zeros in a ~2 MB archive, a member missing from the manifest):
  peak bytes staged and time to refusal                                         goal ≤ manifest total, < 2 s

    .venv/bin/python bench/bench_backup.py [N] --issue24 [--repeat 3]

Issue #24 only: passphrase backups written and read by memfs/age_scrypt.py (streamed, scrypt 2^18 on
every host), and the deep verify that now reads the compressed stream to its trailer:
- passphrase backup gz ÷ plain backup gz of the same store
- deep verify of a passphrase backup gz ÷ deep verify of the plain one
- deep verify gz ÷ (`tar -tzf` + `md5sum`) of the same archive                  goal ≤ 1.5
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
from memfs import archive as codec  # noqa: E402
from memfs import restore as restore_mod  # noqa: E402
from memfs.encryption import generate_identity, parse_identities, parse_recipients  # noqa: E402
from memfs.restore import verify_backup  # noqa: E402

# The shared corpus generator: beside the checkout, or (from a git worktree) at /work/shared.
GEN = next((p for p in (HERE.parent.parent / "shared" / "bench" / "gen_corpus.py",
                         Path("/work/shared/bench/gen_corpus.py")) if p.exists()),
           HERE.parent.parent / "shared" / "bench" / "gen_corpus.py")
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


def _alternate(repeat: int, ours, anchor) -> tuple[float, float]:
    a, b = [], []
    for _ in range(repeat):
        b.append(timed(anchor))
        a.append(timed(ours))
    return statistics.median(a), statistics.median(b)


def _bomb_archive(directory: Path, size: int, manifest_first: bool) -> BackupFile:
    """A gz archive: a real-looking manifest, then `size` zero bytes in a member the manifest lacks."""
    import hashlib
    import tarfile
    import zlib

    import orjson

    def member(name, data):
        info = tarfile.TarInfo(name)
        info.size, info.mtime = len(data), 1735689600
        return info.tobuf(tarfile.GNU_FORMAT) + data + bytes(-len(data) % 512)

    files = {"data/memories/a.json": b'{"content": "x"}'}
    manifest = codec.manifest_bytes(memfs_version="0.1.0", created_at="2025-01-01T00:00:00Z", kind="backup",
                                    host="h", memory_count=1, model_id="m", sizes={k: len(v) for k, v in files.items()},
                                    dirs=[])
    v1 = orjson.dumps({"format": "memfs.backup/1", "created_at": "2025-01-01T00:00:00Z",
                       "files": {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}})
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ("memory_backup_20250101_000000.tar.gz" if manifest_first else "memory_backup_20250101_000001.tar.gz")
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    info = tarfile.TarInfo("data/memories/zeros.json")
    info.size = size
    with open(path, "wb") as f:
        if manifest_first:
            f.write(comp.compress(member(codec.MANIFEST, manifest)))
        f.write(comp.compress(info.tobuf(tarfile.GNU_FORMAT)))
        zeros = bytes(64 << 20)
        for left in range(size, 0, -len(zeros)):
            f.write(comp.compress(zeros[:left]))
        f.write(comp.compress(bytes(-size % 512)))
        f.write(comp.compress(b"".join(member(k, v) for k, v in files.items())))
        f.write(comp.compress(member(codec.MANIFEST, v1) if not manifest_first else
                              member(codec.CHECKSUMS, orjson.dumps({"files": {}}))))
        f.write(comp.compress(bytes(1024)) + comp.flush())
    sh(f"cd {directory} && md5sum {path.name} > {path.name}.md5")
    return BackupFile.parse(path)


def issue11(args, root: Path, layout: Layout) -> None:
    work = HERE / "out" / "backup-bench-11"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    secret, public = generate_identity()
    recipients, identities = parse_recipients([public]), parse_identities(secret)
    rows = []
    for comp in ("gz", "zst"):
        n = iter(range(1000))
        enc, plain = _alternate(
            args.repeat,
            lambda: create_backup(layout, backup_dir=work / f"enc-{comp}-{next(n)}", compression=comp,
                                  recipients=recipients),
            lambda: create_backup(layout, backup_dir=work / f"plain-{comp}-{next(n)}", compression=comp))
        rows.append((f"encrypted backup {comp} (age, X25519) ÷ plain backup {comp}", enc, plain, "≤ 1.15"))
    for comp in ("gz", "zst"):
        made = create_backup(layout, backup_dir=work / f"verify-{comp}", compression=comp)
        flag = "-z" if comp == "gz" else "--zstd"
        deep, anchor = _alternate(args.repeat, lambda: verify_backup(made),
                                  lambda: sh(f"tar {flag} -tf {made.path} > /dev/null && md5sum {made.path}"))
        assert verify_backup(made).status == "ok"
        rows.append((f"deep verify {comp} ÷ (`tar {flag} -tf` + `md5sum`)", deep, anchor, "≤ 1.5"))
    if shutil.which("age"):
        enc = create_backup(layout, backup_dir=work / "verify-enc", compression="gz", recipients=recipients)
        (work / "key.txt").write_text(secret + "\n")
        deep, anchor = _alternate(args.repeat, lambda: verify_backup(enc, identities=identities),
                                  lambda: sh(f"age -d -i {work / 'key.txt'} {enc.path} | tar -tzf - > /dev/null"
                                             f" && md5sum {enc.path}"))
        rows.append(("deep verify, encrypted gz ÷ (`age -d` \\| `tar -tzf` + `md5sum`)", deep, anchor, "–"))

    print(f"Store: {args.n:,} memories ({root}); median of {args.repeat} runs, ours and the anchor alternating.\n")
    print("| operation | memfs s | anchor s | ratio | goal |")
    print("|---|---|---|---|---|")
    for name, ours_s, anchor_s, goal in rows:
        print(f"| {name} | {ours_s:.2f} | {anchor_s:.2f} | **{ours_s / anchor_s:.2f}** | {goal} |")

    print(f"\n| gzip bomb ({args.bomb_gib:g} GiB of zeros, a member missing from the manifest) | archive | manifest total | "
          "peak staged | decompressed before refusal | time to refusal |")
    print("|---|---|---|---|---|---|")
    staged = {"now": 0, "peak": 0}
    real_write = restore_mod._MemberFile.write

    def counting_write(f, piece):
        staged["now"] += len(piece)
        staged["peak"] = max(staged["peak"], staged["now"])
        real_write(f, piece)

    restore_mod._MemberFile.write = counting_write
    decompressed = {"n": 0}
    real_next = codec.DecompressingSource.next_chunk

    def counting_next(source):
        chunk = real_next(source)
        decompressed["n"] += len(chunk or b"")
        return chunk

    codec.DecompressingSource.next_chunk = counting_next
    scratch = work / "scratch"
    shutil.copytree(root, scratch)
    for label, first in (("format 2: manifest first (what memfs writes)", True),
                         ("format 1: manifest last (older memfs)", False)):
        bomb = _bomb_archive(work / "bombs", int(args.bomb_gib * (1 << 30)), first)
        staged.update(now=0, peak=0)
        decompressed["n"] = 0
        t = time.perf_counter()
        try:
            restore_backup(Layout(scratch), bomb)
            raise AssertionError("the bomb was restored")
        except codec.CorruptBackupError as e:
            took = time.perf_counter() - t
            reason = str(e).split(": ", 1)[1].split(". Nothing was changed")[0]
        print(f"| {label} | {bomb.size / 1e6:.1f} MB | 16 B | {staged['peak']} B | "
              f"{decompressed['n'] / 2**20:,.0f} MiB | {took:.2f} s ({reason}) |")
    restore_mod._MemberFile.write, codec.DecompressingSource.next_chunk = real_write, real_next
    shutil.rmtree(work)


def issue24(args, root: Path, layout: Layout) -> None:
    work = HERE / "out" / "backup-bench-24"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    words = "correct horse battery staple"
    n = iter(range(1000))
    rows = []
    enc, plain = _alternate(
        args.repeat, lambda: create_backup(layout, backup_dir=work / f"pass-{next(n)}", passphrase=words),
        lambda: create_backup(layout, backup_dir=work / f"plain-{next(n)}"))
    rows.append(("passphrase backup gz (streamed, scrypt 2^18) ÷ plain backup gz", enc, plain, "–"))
    locked = create_backup(layout, backup_dir=work / "verify-pass", passphrase=words)
    made = create_backup(layout, backup_dir=work / "verify-plain")
    assert verify_backup(locked, passphrase=words).status == "ok" and verify_backup(made).status == "ok"
    deep, anchor = _alternate(args.repeat, lambda: verify_backup(locked, passphrase=words),
                              lambda: verify_backup(made))
    rows.append(("deep verify, passphrase gz ÷ deep verify, plain gz", deep, anchor, "–"))
    deep, anchor = _alternate(args.repeat, lambda: verify_backup(made),
                              lambda: sh(f"tar -z -tf {made.path} > /dev/null && md5sum {made.path}"))
    rows.append(("deep verify gz, to the gzip trailer ÷ (`tar -z -tf` + `md5sum`)", deep, anchor, "≤ 1.5"))
    print(f"Store: {args.n:,} memories ({root}), archive {made.size / 1e6:.1f} MB; median of {args.repeat} runs, "
          "ours and the anchor alternating.\n")
    print("| operation | memfs s | anchor s | ratio | goal |")
    print("|---|---|---|---|---|")
    for name, ours_s, anchor_s, goal in rows:
        print(f"| {name} | {ours_s:.2f} | {anchor_s:.2f} | **{ours_s / anchor_s:.2f}** | {goal} |")
    shutil.rmtree(work)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--issue11", action="store_true", help="only the issue #11 measurements")
    ap.add_argument("--issue24", action="store_true", help="only the issue #24 measurements")
    ap.add_argument("--bomb-gib", type=float, default=2.0, help="size of the gzip bomb's zeros (GiB)")
    args = ap.parse_args()
    root = build_store(args.n)
    if args.issue11:
        return issue11(args, root, Layout(root))
    if args.issue24:
        return issue24(args, root, Layout(root))
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
