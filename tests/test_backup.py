"""manage_data.py against real archives, real Chroma and real subprocesses."""

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from memfs import MemoryStore
from memfs import archive
from memfs.backups import BackupFile, list_backups, md5_of, scan_backup_dir
from memfs.lock import StoreLock
from memfs.local import LocalOperations
from memfs.manage import cli

from conftest import filler_texts

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def populated(root):
    with MemoryStore.open(root, create=True) as s:
        s.add_many({"content": t, "tags": ["docs"]} for t in filler_texts(15))
        s.add("User prefers dark theme", tags=["ui"])
    return root


@pytest.fixture
def manage(populated, monkeypatch):
    """manage_data.py in this process, owning the store itself (tests/test_owner.py covers the owner)."""
    monkeypatch.setenv("MEMFS_DAEMON", "0")
    monkeypatch.setenv("MEMFS_LOCK_WAIT", "1")
    runner = CliRunner()

    def run(*args, code=0):
        result = runner.invoke(cli, ["--root", str(populated), *args])
        assert result.exit_code == code, result.output
        return result

    return run


def snapshot(root: Path) -> dict[str, bytes]:
    mem = root / "data" / "memories"
    return {p.relative_to(mem).as_posix(): p.read_bytes() for p in sorted(mem.rglob("*.json"))}


def searches(root: Path):
    with MemoryStore.open(root) as s:
        return [[(h.memory.id, round(h.score, 4)) for h in s.search(q, k=5, mode=m)]
                for q in ["dark theme", "string formatting", "exceptions"] for m in ("semantic", "keyword")]


def backups(root: Path) -> list[BackupFile]:
    return list_backups(root / "backups")[0]


@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_backup_delete_restore_gives_same_files_and_results_without_embedding(manage, populated, compression):
    files, results = snapshot(populated), searches(populated)
    out = orjson.loads(manage("backup", "--compression", compression, "--json").stdout)
    archive = populated / out["backup"]
    # md5sum -c works on what we wrote.
    check = subprocess.run(["md5sum", "-c", archive.name + ".md5"], cwd=archive.parent, capture_output=True, text=True)
    assert check.returncode == 0 and ": OK" in check.stdout
    # GNU tar reads what we wrote (our headers are hand-built ustar).
    listing = subprocess.run(["tar", "--zstd" if compression == "zst" else "-z", "-tvf", str(archive)],
                             capture_output=True, text=True)
    assert listing.returncode == 0, listing.stderr
    names = {line.split()[-1] for line in listing.stdout.splitlines()}
    assert "memfs-backup.json" in names and set(files) <= {n.removeprefix("data/memories/") for n in names}
    for part in ("memories", "embeddings", "indexes"):
        shutil.rmtree(populated / "data" / part)
    restored = orjson.loads(manage("restore", "latest", "--yes", "--json").stdout)
    assert restored["embedded"] == 0 and restored["problems"] == [] and restored["memory_count"] == 16
    assert snapshot(populated) == files
    assert searches(populated) == results
    with MemoryStore.open(populated) as s:
        assert s.reconcile().embedded == 0


def test_restore_reads_headers_as_tarfile_does_and_accepts_only_what_its_data_filter_accepts(manage, populated,
                                                                                                  tmp_path):
    """Restore parses our ustar headers itself and applies stricter checks than PEP 706's "data" filter
    (see archive_rules.check_member). Pin both to tarfile: same name/type/size/mode/mtime for every member
    of a real backup (with a name over 100 bytes, non-ASCII and a space), and the data filter accepts
    each one unchanged apart from the mode it would also set."""
    odd = populated / "data" / "memories" / ("n" * 120) / "café notes.json"
    odd.parent.mkdir()
    odd.write_text('{"content": "a memory at a long, non-ASCII path"}')
    out = orjson.loads(manage("backup", "--json").stdout)
    seen = set()
    with tarfile.open(populated / out["backup"]) as tar:
        for info in tar:
            if info.type == tarfile.GNUTYPE_LONGNAME:
                continue
            header = info.tobuf(tarfile.GNU_FORMAT if len(info.name.encode()) > 100 else tarfile.USTAR_FORMAT,
                                "utf-8", "surrogateescape")
            name, kind, size, mode, mtime = archive._parse_header(header[-tarfile.BLOCKSIZE:])
            if len(info.name.encode()) > 100:
                name = info.name  # carried by the GNU long-name member before it
            assert (name, kind, size, mode, mtime) == (info.name, info.type, info.size, info.mode, info.mtime)
            archive.check_member(name, kind)
            filtered = tarfile.data_filter(info, str(tmp_path))
            assert (filtered.name, filtered.type, filtered.size) == (info.name, info.type, info.size)
            seen.add(name)
    assert odd.relative_to(populated).as_posix() in seen
    shutil.rmtree(populated / "data" / "memories")
    manage("restore", "latest", "--yes")
    assert odd.read_text() == '{"content": "a memory at a long, non-ASCII path"}'


def test_restore_leaves_the_archive_and_the_pre_restore_backup_in_place(manage, populated):
    """Old script's flaw 1: its restore deleted backups/, the archive being restored included."""
    manage("backup")
    archive = backups(populated)[0]
    with MemoryStore.open(populated) as s:
        s.add("A memory made after the backup")
    result = manage("restore", str(archive.path), "--yes")
    names = {b.name for b in backups(populated)}
    assert archive.path.exists() and archive.md5_path.exists() and archive.name in names
    pre = [b for b in backups(populated) if b.kind == "pre-restore"]
    assert len(pre) == 1 and pre[0].checksum_state(verify=True) == "ok" and pre[0].name in result.output
    assert all("made after the backup" not in c.decode() for c in snapshot(populated).values())
    # The pre-restore backup holds the replaced data: restoring it brings the memory back.
    manage("restore", pre[0].name, "--yes")
    assert any("made after the backup" in c.decode() for c in snapshot(populated).values())


def test_validate_reports_every_problem(manage, populated):
    """Old script's flaw 2: its validate stopped at the first problem."""
    assert "no problems" in manage("validate").output
    mem = populated / "data" / "memories"
    (mem / "broken.json").write_text("{oops")                             # 1: invalid memory file
    (mem / "dropped.json").write_text('{"content": "not indexed yet"}')  # 2: catalog drift
    with MemoryStore.open(populated) as s:                                # 3: an orphan embedding
        s.vectors.collection.upsert(ids=["ghost"], embeddings=[[0.5] * 384])
    report = orjson.loads(manage("validate", "--json", code=1).stdout)
    found = {(p["check"], p["path"].rsplit("/", 1)[-1]) for p in report["problems"]}
    assert ("memory", "broken.json") in found
    assert ("catalog", "dropped.json") in found
    assert any(p["check"] == "vectors" and "belong to no memory" in p["message"] for p in report["problems"])
    assert len(report["problems"]) == 3
    fixed = orjson.loads(manage("validate", "--fix", "--json", code=1).stdout)
    assert [p["path"] for p in fixed["problems"]] == ["broken.json"]  # memory files are never "fixed"
    assert (mem / "broken.json").read_text() == "{oops"


def test_retention_keeps_tiers_and_checksums(manage, populated):
    """Old script's flaw 3: 'newest 7 files', no tiers, no checksum, pre-restore pushing real ones out."""
    manage("backup")
    for _ in range(3):
        manage("restore", "latest", "--yes")
    regular = [b for b in backups(populated) if b.kind == "backup"]
    assert len(regular) == 1 and all(b.checksum_state(verify=True) == "ok" for b in backups(populated))
    plan = orjson.loads(manage("prune", "--dry-run", "--json").stdout)["backups"]
    assert {p["name"]: p["keep"] for p in plan}[regular[0].name] is True


def _hold_lock(root: Path):
    """A separate process that owns the store, as a running writer would."""
    code = ("import sys, time; from memfs.lock import StoreLock; from pathlib import Path;"
            "StoreLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(60)")
    p = subprocess.Popen([sys.executable, "-c", code, str(root / "data" / "memfs.lock")], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_backup_while_another_process_owns_the_store_exits_4(manage, populated):
    """Old script's flaw 4: it copied live data while the service was writing."""
    holder = _hold_lock(populated)
    try:
        result = manage("backup", code=4)
        assert "in use by pid" in result.output and str(holder.pid) in result.output
    finally:
        holder.kill()
        holder.wait()
    manage("backup")


def test_a_stray_with_an_impossible_date_breaks_no_command_and_is_left_alone(manage, populated):
    """Issue #11 finding 1: `memory_backup_20251340_250000.tar.gz` made backup, list, prune, restore latest
    and validate --backups die with a traceback (exit 1), so a nightly cron backup stopped."""
    stray = populated / "backups" / "memory_backup_20251340_250000.tar.gz"
    stray.parent.mkdir(exist_ok=True)
    stray.write_bytes(b"not a backup")
    manage("backup")
    manage("list")
    manage("list", "--verify")
    manage("prune")
    manage("restore", "latest", "--yes")
    assert "no problems" in manage("validate", "--backups").output
    assert stray.read_bytes() == b"not a backup"
    assert [s.describe() for s in scan_backup_dir(populated / "backups").strays] == [
        "not a memfs backup (impossible date 20251340_250000)"]


def test_quiet_success_prints_nothing_and_logs_one_line(manage, populated):
    assert manage("backup", "--quiet").output == ""
    log = (populated / "data" / "logs" / "manage-data.log").read_text().splitlines()
    assert len(log) == 1 and "backup ok memory_backup_" in log[0]


def test_exit_codes(manage, populated):
    manage("backup")                                     # 0
    (populated / "data" / "memories" / "bad.json").write_text("[")
    manage("validate", code=1)                           # 1
    manage("restore", code=2)                            # 2: click usage
    manage("restore", "no-such-file.tar.gz", "--yes", code=3)
    lock = StoreLock(populated / "data" / "memfs.lock").acquire()
    try:
        manage("prune", code=4)                          # 4
    finally:
        lock.release()


# -- refused before any change ------------------------------------------------------------------


def _refused(manage, populated, archive: Path, *extra, reason: str):
    before = snapshot(populated)
    count = len(backups(populated))
    result = manage("restore", str(archive), "--yes", *extra, code=3)
    assert reason in result.output, result.output
    assert snapshot(populated) == before
    assert len(backups(populated)) == count  # not even a pre-restore backup was made
    assert not list((populated / "data").glob(".restore-*"))


def test_bit_flipped_archive_is_refused(manage, populated):
    manage("backup")
    archive = backups(populated)[0].path
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    _refused(manage, populated, archive, reason="does not match its checksum")
    # Without the checksum, the manifest's per-file hashes (or gzip's CRC) still catch it.
    _refused(manage, populated, archive, "--no-verify", reason="")


def test_truncated_archive_is_refused(manage, populated):
    manage("backup")
    archive = backups(populated)[0].path
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    _refused(manage, populated, archive, reason="does not match its checksum")
    _refused(manage, populated, archive, "--no-verify", reason="truncated")


def test_wrong_or_missing_md5_is_refused(manage, populated):
    manage("backup")
    b = backups(populated)[0]
    b.md5_path.write_text("0" * 32 + "  " + b.name + "\n")
    _refused(manage, populated, b.path, reason="does not match its checksum")
    b.md5_path.unlink()
    _refused(manage, populated, b.path, reason="missing or unreadable")


def _hostile_archive(backup_dir: Path, members) -> Path:
    path = backup_dir / "memory_backup_20250101_000000.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    (backup_dir / (path.name + ".md5")).write_text(f"{md5_of(path)}  {path.name}\n")
    return path


def _file(name, data=b"{}"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name, kind, target=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info, None


@pytest.mark.parametrize("members, reason", [
    ([_file("../x")], "leaves the archive"),
    ([_file("data/memories/../../../x")], "leaves the archive"),
    ([_file("/etc/x")], "leaves the archive"),
    ([_special("data/memories/link", tarfile.SYMTYPE, "/tmp"), _file("data/memories/link/x")], "is a link"),
    ([_special("data/memories/dev", tarfile.CHRTYPE)], "device or special file"),
    ([_file("data/memories/a.json")], "no manifest"),
], ids=["dotdot", "nested-dotdot", "absolute", "symlink-then-file", "device", "no-manifest"])
def test_hostile_members_are_refused(manage, populated, tmp_path, members, reason):
    manage("backup")
    archive = _hostile_archive(tmp_path, members)
    _refused(manage, populated, archive, reason=reason)
    assert not (tmp_path / "x").exists() and not Path("/tmp/x").exists()


# -- kill -9 -------------------------------------------------------------------------------------


def _manage_proc(root: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "manage_data.py"), "--root", str(root), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _big_blob(root: Path) -> None:
    # Incompressible bytes in memories/ make archiving take long enough to be interrupted.
    (root / "data" / "memories" / "blob.bin").write_bytes(os.urandom(48 << 20))


@pytest.mark.parametrize("delay", [0.3, 1.0, 1.6, 2.2, 3.0])
def test_kill_during_backup_leaves_nothing_that_looks_good(manage, populated, delay):
    _big_blob(populated)
    p = _manage_proc(populated, "backup")
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    for b in backups(populated):
        assert b.checksum_state(verify=True) == "ok", b.name  # anything listed as a backup is whole
    manage("backup")
    listed = orjson.loads(manage("list", "--verify", "--json").stdout)
    assert listed["incomplete"] == [] and all(r["status"] == "ok" for r in listed["backups"])


@pytest.mark.parametrize("delay", [0.5, 1.2, 2.0, 2.8, 3.6])
def test_kill_during_restore_leaves_old_or_new_data(manage, populated, delay):
    _big_blob(populated)
    manage("backup")
    new = snapshot(populated)
    with MemoryStore.open(populated) as s:
        s.add("Only in the old data")
    old = snapshot(populated)
    p = _manage_proc(populated, "restore", "latest", "--yes")
    time.sleep(delay)
    p.send_signal(signal.SIGKILL)
    p.wait()
    with LocalOperations.open(populated) as ops:  # the next owner finishes an interrupted swap
        ops.reindex()
    now = snapshot(populated)
    assert now in (old, new)
    if now == new:
        pre = [b for b in backups(populated) if b.kind == "pre-restore"]
        assert len(pre) == 1 and pre[0].checksum_state(verify=True) == "ok"
    assert not list((populated / "data").glob(".restore-*"))


def test_list_and_validate_take_a_passphrase_file(manage, populated, tmp_path):
    """Issue #24 item 8: passphrase backups could never be deep-verified by `list` or `validate --backups`."""
    words = tmp_path / "pass"
    words.write_text("correct horse battery staple\n")
    manage("backup", "--encrypt", "--passphrase-file", str(words))
    assert "encrypted" in manage("list", "--verify").output
    listing = manage("list", "--verify", "--passphrase-file", str(words)).output
    assert " ok " in listing and "encrypted " not in listing.split("status:")[0].split("KEPT BECAUSE")[1]
    assert "no problems" in manage("validate", "--backups", "--passphrase-file", str(words)).output
    (tmp_path / "wrong").write_text("wrong\n")
    assert "wrong key" in manage("validate", "--backups", "--passphrase-file", str(tmp_path / "wrong"), code=1).output


# -- issue #24 item 10: what restore and backup say is what they did -----------------------------------


def test_restore_counts_every_memory_it_embedded(manage, populated, tmp_path):
    """An archive without vectors (memories only): opening the restored store embedded every memory,
    and the restore said "0 re-embedded"."""
    from memfs.backups import create_backup
    from memfs.filestore import Layout

    bare = Layout(tmp_path / "bare")
    bare.create()
    shutil.copytree(populated / "data" / "memories", bare.memories, dirs_exist_ok=True)
    made = create_backup(bare, backup_dir=populated / "backups")
    out = manage("restore", str(made.path), "--yes").output
    assert "restored" in out and "16 memories, 16 re-embedded" in out, out
    assert "no problems" in manage("validate").output
    again = manage("restore", str(made.path), "--yes", "--json").stdout
    assert orjson.loads(again)["embedded"] == 16  # the archive has no catalog, so no cached vectors either


def test_a_pruned_pre_restore_snapshot_is_named_once_in_the_output_and_in_the_log(manage, populated):
    from datetime import datetime, timedelta, timezone

    from memfs.backups import create_backup
    from memfs.filestore import Layout

    layout = Layout(populated)
    month_ago = datetime.now(timezone.utc) - timedelta(days=30)
    snaps = [create_backup(layout, kind="pre-restore", now=month_ago + timedelta(hours=h)) for h in range(4)]
    out = manage("backup").output
    oldest = snaps[0].name
    assert [line for line in out.splitlines() if oldest in line] == [
        f"pruned pre-restore snapshot {oldest} (the data replaced by a restore on {month_ago:%Y-%m-%d %H:%M} UTC)"]
    assert all(s.path.exists() for s in snaps[1:]) and not snaps[0].path.exists()
    logs = populated / "data" / "logs"
    assert f"pruned pre-restore snapshot {oldest}" in (logs / "manage-data.log").read_text()
    assert f"pruned pre-restore snapshot {oldest}" in (logs / "memfs.log").read_text()


def test_two_concurrent_backups_through_the_owner_both_wait_their_turn_and_succeed(populated):
    """docs/backups.md said a second concurrent run exits 4; through the owner it waits for the first
    and succeeds (decided: cron and a person may overlap, and each archive is a consistent snapshot)."""
    from test_contract import start_owner

    _big_blob(populated)
    proc, _ = start_owner(populated)
    try:
        runs = [_manage_proc_piped(populated, "backup", "--no-prune") for _ in range(2)]
        results = [(p.wait(300), p.stdout.read(), p.stderr.read()) for p in runs]
    finally:
        proc.terminate()
        proc.wait(60)
    assert [code for code, _, _ in results] == [0, 0], results
    made = [b for b in backups(populated) if b.kind == "backup"]
    assert len(made) == 2 and len({b.name for b in made}) == 2
    listed = orjson.loads(CliRunner().invoke(cli, ["--root", str(populated), "list", "--verify", "--json"]).stdout)
    assert [r["status"] for r in listed["backups"]] == ["ok", "ok"]


def _manage_proc_piped(root: Path, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(REPO / "manage_data.py"), "--root", str(root), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
