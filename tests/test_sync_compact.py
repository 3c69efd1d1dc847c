"""Issue #20, item 2: `memfs sync compact DEST` folds a replica's own old batches into one base object
and deletes them. Readers at every position (none read, some, all) end as if they had read every
original batch: the same memories, no false conflict, no lost one. Plumbing tests: the FAKE one-hot
embedder (tests/sync_helpers.py); nothing here depends on meaning. Crashes at each compaction step are
in tests/test_sync_crash.py, hostile bases in tests/test_sync_hostile.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from conftest import run_memfs
from memfs.errors import StoreBusyError
from memfs.sync.compact import CompactionRefused
from memfs.sync.remotes import FolderRemote, ObjectGone, RemoteError
from sync_helpers import conflict_ids, contents, fake_replica, random_world, remote_bytes, three_batches, tree_digest


def own_objects(remote: Path, ops) -> list[str]:
    prefix = ops.sync_status().remotes[0]["prefix"]
    return sorted(p.name for p in (remote / "replicas" / prefix).glob("*.mfs"))


@pytest.fixture
def history(tmp_path):
    """Replica a pushed three batches (adds, edits of one memory twice, a delete); b read only the
    first, d read all three; `original` is a copy of the remote before any compaction."""
    remote = tmp_path / "remote"
    a, b, d = (fake_replica(tmp_path, n) for n in "abd")
    ids = three_batches(a, str(remote), first_readers=[b])
    d.sync(str(remote))
    shutil.copytree(remote, tmp_path / "original")
    yield a, b, d, remote, ids
    a.close(), b.close(), d.close()


def test_after_compaction_readers_at_every_position_end_as_if_they_read_every_batch(history, tmp_path):
    a, b, d, remote, ids = history
    control = fake_replica(tmp_path, "control")  # reads the original batches, never compacted
    fresh = fake_replica(tmp_path, "fresh")
    try:
        control.sync(str(tmp_path / "original"))
        out = a.sync_compact(str(remote))
        assert out.objects_before == 3 and out.objects_removed == 3 and out.bytes_after < out.bytes_before
        assert own_objects(remote, a) == [out.base.rsplit("/", 1)[1]] and out.base.endswith(".base.mfs")
        fresh.sync(str(remote))  # position 0: bootstraps from the base alone
        b.sync(str(remote))  # position 1: its next object is gone; it reads the base instead
        d.sync(str(remote))  # position 3: reads the base as the next object (nothing new)
        expected = contents(control)
        assert contents(a) == expected and len(expected) == 5
        for o in (fresh, b, d):
            assert contents(o) == expected
            assert o.conflicts() == []
        # The chain goes on from the base: a batch after it reaches every reader.
        a.update(ids[3], content="edited after the compaction")
        a.sync(str(remote))
        for o in (fresh, b, d):
            o.sync(str(remote))
            assert contents(o) == contents(a) and o.conflicts() == []
        # Compacting again folds the base and the batch after it; a dry run first changes nothing.
        before = tree_digest(remote)
        dry = a.sync_compact(str(remote), dry_run=True)
        assert dry.objects_removed == 2 and tree_digest(remote) == before
        again = a.sync_compact(str(remote))
        assert again.objects_removed == 2 and len(own_objects(remote, a)) == 1
        late = fake_replica(tmp_path, "late")
        try:
            late.sync(str(remote))
            assert contents(late) == contents(a) and late.conflicts() == []
        finally:
            late.close()
    finally:
        control.close(), fresh.close()


def test_a_concurrent_edit_made_before_compaction_yields_exactly_one_conflict_with_the_loser_kept(history):
    a, b, _d, remote, ids = history
    b.update(ids[0], content="edited on b, never having seen a's edits")  # concurrent with a's two edits
    a.sync_compact(str(remote))
    for _ in range(2):
        b.sync(str(remote)), a.sync(str(remote))
    assert a.get(ids[0]).memory.content == b.get(ids[0]).memory.content
    assert conflict_ids(a) == conflict_ids(b) and len(conflict_ids(a)) == 1
    [conflict] = b.conflicts()
    assert {conflict["winner"]["doc"]["content"], conflict["loser"]["doc"]["content"]} == {
        "edited twice on a", "edited on b, never having seen a's edits"}
    assert contents(a) == contents(b)


def test_a_history_woven_through_two_replicas_compacted_on_both_reads_without_a_false_conflict(tmp_path):
    """a's kept version sits on top of b's, which sits on a version a folded away: the reader links them
    through the lineage both bases carry, never taking an edit made on top of another for a concurrent one."""
    remote = str(tmp_path / "remote")
    a, b, reader, control = (fake_replica(tmp_path, n) for n in ("a", "b", "reader", "control"))
    try:
        mem_id = a.add("the first version, from a").memory.id
        other = a.add("a memory nobody edits").memory.id
        for o in (a, reader, b):
            o.sync(remote)
        for i, (writer, then) in enumerate([(b, a), (a, b), (b, a), (a, b)]):  # edits taking turns
            writer.update(mem_id, content=f"version {i + 2}, from {'ab'[writer is b]}")
            writer.sync(remote), then.sync(remote)
        shutil.copytree(tmp_path / "remote", tmp_path / "original")
        control.sync(str(tmp_path / "original"))
        assert a.sync_compact(remote).objects_removed == 3 and b.sync_compact(remote).objects_removed == 2
        reader.sync(remote)  # it held the first version: everything since arrives through the two bases
        assert contents(reader) == contents(control) == contents(a) == contents(b)
        assert reader.get(mem_id).memory.content == "version 5, from a" and reader.get(other)
        assert reader.conflicts() == [] and control.conflicts() == []
    finally:
        for o in (a, b, reader, control):
            o.close()


def test_a_losing_version_still_in_the_inbox_survives_its_replicas_compaction(tmp_path):
    """a's edit lost a conflict and a then edited on top of the winner: the loser is not an ancestor of
    a's newest version, so folding it away would take the open conflict from every new replica."""
    import time

    remote = str(tmp_path / "remote")
    a, b, control, fresh = (fake_replica(tmp_path, n) for n in ("a", "b", "control", "fresh"))
    try:
        mem_id = a.add("the version both start from").memory.id
        a.sync(remote), b.sync(remote)
        a.update(mem_id, content="a's edit, which loses")
        time.sleep(0.01)
        b.update(mem_id, content="b's edit, made later, which wins")
        a.sync(remote), b.sync(remote), a.sync(remote)
        assert len(conflict_ids(a)) == 1
        a.update(mem_id, content="a's edit on top of the winner")
        a.sync(remote)
        shutil.copytree(tmp_path / "remote", tmp_path / "original")
        control.sync(str(tmp_path / "original"))
        a.sync_compact(remote)
        fresh.sync(remote), b.sync(remote)
        assert contents(fresh) == contents(control) == contents(a) == contents(b)
        assert conflict_ids(fresh) == conflict_ids(control) == conflict_ids(a) == conflict_ids(b)
        [conflict] = fresh.conflicts()
        assert conflict["loser"]["doc"]["content"] == "a's edit, which loses"
    finally:
        for o in (a, b, control, fresh):
            o.close()


def test_compact_refuses_while_a_batch_waits_and_while_a_sync_of_the_store_runs(history, monkeypatch):
    from memfs.sync.operations import _sync_lock

    a, _b, _d, remote, _ids = history
    a.add("a change whose upload fails")
    with monkeypatch.context() as m:
        m.setattr(FolderRemote, "write_once", lambda *args: (_ for _ in ()).throw(RemoteError("disk gone")))
        with pytest.raises(RemoteError):
            a.sync(str(remote))
    before = tree_digest(remote)
    with pytest.raises(CompactionRefused, match="memfs sync DEST"):
        a.sync_compact(str(remote))
    assert tree_digest(remote) == before
    lock = _sync_lock(a.layout.root)
    lock.acquire()
    try:
        with pytest.raises(StoreBusyError) as e:
            a.sync_compact(str(remote))
        assert e.value.exit_code == 4
    finally:
        lock.release()
    a.sync(str(remote))
    assert a.sync_compact(str(remote)).objects_removed == 4


def test_a_listing_that_raced_with_a_deletion_fails_that_sync_cleanly_and_the_next_succeeds(history, monkeypatch):
    a, b, _d, remote, _ids = history
    stale = FolderRemote(remote).list("")  # what b lists just before a's compaction deletes
    a.sync_compact(str(remote))
    before, position = tree_digest(b.layout.data / "memories"), b.sync_status().remotes[0]["peers"]
    with monkeypatch.context() as m:
        m.setattr(FolderRemote, "list", lambda self, prefix: stale)
        with pytest.raises(ObjectGone, match="compacted it meanwhile"):
            b.sync(str(remote))
    assert tree_digest(b.layout.data / "memories") == before
    assert [p["seq"] for p in b.sync_status().remotes[0]["peers"]] == [p["seq"] for p in position]
    b.sync(str(remote))
    assert contents(b) == contents(a) and b.conflicts() == []


def test_an_encrypted_remote_compacts_without_plaintext_and_bootstraps_a_new_replica(tmp_path):
    (tmp_path / "pass.txt").write_text("correct horse battery staple\n")
    keys = {"passphrase_file": str(tmp_path / "pass.txt")}
    remote = str(tmp_path / "remote")
    a = fake_replica(tmp_path, "a")
    try:
        first = a.add("memory about zanzibar-octopus-7731", tags=["quokka-ledger-5519"]).memory.id
        a.sync(remote, **keys)
        a.update(first, content="memory about zanzibar-octopus-7731, edited")
        second = a.add("another one").memory.id
        a.sync(remote, **keys)
        out = a.sync_compact(remote, **keys)
        assert out.objects_removed == 2
        replica_id = a.sync_status().replica
        expected = contents(a)
    finally:
        a.close()
    blob = remote_bytes(Path(remote))
    for secret in ["zanzibar-octopus-7731", "quokka-ledger-5519", first, second, replica_id, "another one"]:
        assert secret.encode() not in blob, f"{secret!r} is readable on the remote"
    b = fake_replica(tmp_path, "b")
    try:
        b.sync(remote, **keys)
        assert contents(b) == expected and b.conflicts() == []
    finally:
        b.close()


def test_the_compact_command_reports_what_it_removed_and_says_it_is_safe_alongside_syncs(history, tmp_path):
    a, _b, _d, remote, _ids = history
    root = a.layout.root
    a.close()
    env = {"MEMFS_DAEMON": "0"}
    r = run_memfs("--root", str(root), "sync", "compact", "--help", env=env)
    assert r.returncode == 0 and "safe to run while other replicas sync" in " ".join(r.stdout.split())
    r = run_memfs("--root", str(root), "sync", "compact", str(remote), "--dry-run", "--json", env=env)
    assert r.returncode == 0, r.stderr
    dry = orjson.loads(r.stdout)
    assert dry["dry_run"] and dry["objects_removed"] == 3 and len(list(remote.rglob("*.mfs"))) == 3
    r = run_memfs("--root", str(root), "sync", "compact", str(remote), env=env)
    assert r.returncode == 0, r.stderr
    assert "removed 3 of 3" in r.stdout and f"{dry['bytes_before']} bytes before" in r.stdout
    r = run_memfs("--root", str(root), "sync", "compact", str(remote), "--quiet", env=env)
    assert (r.returncode, r.stdout) == (0, "")  # nothing left to fold
    (tmp_path / "pass.txt").write_text("a passphrase\n")  # this remote is not encrypted: refused, exit 3
    r = run_memfs("--root", str(root), "sync", "compact", str(remote), "--encrypt", "--passphrase-file",
                  str(tmp_path / "pass.txt"), env=env)
    assert r.returncode == 3 and "not encrypted" in r.stderr, (r.returncode, r.stderr)


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed (scripts/test.sh installs it)")
def test_compaction_through_a_real_sftp_server(tmp_path, sftp_rclone):
    from memfs.sync.remotes import RcloneRemote

    conf, remote_dir = sftp_rclone
    dest = f"memfs-sftp:{remote_dir}"
    a, b = fake_replica(tmp_path, "a"), fake_replica(tmp_path, "b")
    try:
        for i in range(3):
            a.add(f"memory {i} pushed through SFTP"), a.sync(dest, rclone_config=str(conf))
        out = a.sync_compact(dest, rclone_config=str(conf))
        assert out.objects_removed == 3 and [p.name for p in remote_dir.rglob("*.mfs")] == [out.base.rsplit("/")[-1]]
        b.sync(dest, rclone_config=str(conf))
        assert contents(b) == contents(a) and len(contents(b)) == 3
        with pytest.raises(ObjectGone):  # what a reader meets when a listed object was compacted meanwhile
            RcloneRemote(dest, config=conf).read("replicas/x/0000000001-0000000000000000.mfs")
    finally:
        a.close(), b.close()


@pytest.mark.parametrize("seed", range(4))
def test_random_histories_end_the_same_with_and_without_compaction(tmp_path, seed):
    """Two worlds play the same random edits, deletes and syncs on three replicas with the same
    deterministic clocks; in one, replicas also compact at random moments. Every replica, and a fresh
    one, ends with the same memories and the same losers in its inbox in both worlds."""
    import random

    rng = random.Random(seed)
    steps = ["add"] * 3 + ["edit"] * 5 + ["delete"] + ["sync"] * 5 + ["compact"] * 2
    plan = [(rng.choice(steps), rng.choice("abc"), rng.randrange(1000)) for _ in range(60)]
    plain = random_world(tmp_path / "plain", plan, compact=False)
    compacted = random_world(tmp_path / "compacted", plan, compact=True)
    assert compacted == plain
    assert len({tuple(v[0]) for v in plain.values()}) == 1  # and every replica converged
