"""Issue #20: a sync, and a compaction (`memfs sync compact`), killed at every step of its transaction
(memfs.sync.steps' `crash_at`, os._exit in a real child process, as kill -9 would), and two replicas
syncing the same remote at the same moment: the remote stays readable, the next sync (or compact)
converges, no acknowledged change is lost.
Plumbing tests: the FAKE one-hot embedder (tests/sync_helpers.py); nothing here depends on meaning."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from memfs.errors import MemfsError
from memfs.sync.steps import COMPACT_STEPS, CRASH_EXIT, STEPS
from sync_helpers import contents, fake_replica, hand_delete, hand_edit, three_batches, tree_digest

TESTS = Path(__file__).parent

_CHILD = """
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from memfs.sync import steps
from sync_helpers import fake_replica
base, name, remote, step, action = sys.argv[2:7]
steps.crash_at = step
ops = fake_replica(Path(base), name)
ops.sync_compact(remote) if action == "compact" else ops.sync(remote)
ops.close()
"""


def child(base: Path, name: str, step: str = "", action: str = "sync") -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CHILD, str(TESTS), str(base), name, str(base / "remote"), step,
                             action], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """Replicas a and b that shared 6 memories, then each changed some (adds, edits, a delete) unsynced."""
    base = tmp_path_factory.mktemp("sync-crash")
    a, b = fake_replica(base, "a"), fake_replica(base, "b")
    ids = [a.add(f"shared memory number {i}").memory.id for i in range(6)]
    a.sync(str(base / "remote")), b.sync(str(base / "remote"))
    a.add("added on a after the first sync"), a.update(ids[0], content="edited on a")
    b.add("added on b after the first sync"), b.add("another added on b")
    hand_edit(b, ids[1], "edited by hand on b")
    hand_delete(b, ids[2])
    expected = {"added on a after the first sync", "edited on a", "added on b after the first sync",
                "another added on b", "edited by hand on b", *(f"shared memory number {i}" for i in (3, 4, 5))}
    a.close(), b.close()
    return base, expected


@pytest.mark.parametrize("step", STEPS)
def test_a_sync_killed_at_any_step_leaves_the_remote_readable_and_the_next_sync_converges(template, tmp_path, step):
    src, expected = template
    base = tmp_path / "w"
    shutil.copytree(src, base, symlinks=True)
    p = child(base, "b", step)
    _out, err = p.communicate(timeout=300)
    assert p.returncode == CRASH_EXIT, f"the sync never reached step {step}: {err[-2000:]}"
    # The remote is readable as it was left: a brand-new replica syncs from it without a refusal.
    fresh = fake_replica(base, "fresh")
    try:
        fresh.sync(str(base / "remote"))
    finally:
        fresh.close()
    a, b = fake_replica(base, "a"), fake_replica(base, "b")
    try:
        for _ in range(2):
            b.sync(str(base / "remote")), a.sync(str(base / "remote"))
        assert contents(a) == contents(b)
        texts = {r.memory.content for r in a.list(limit=100).memories}
        assert texts == expected
        assert a.conflicts() == [] and b.conflicts() == []
        # A batch's file outlives its row only until the next sync (a crash between the two).
        assert not list((b.layout.data / "sync" / "outbox").glob("*"))
    finally:
        a.close(), b.close()


def test_two_replicas_syncing_the_same_remote_at_the_same_moment(template, tmp_path):
    src, expected = template
    base = tmp_path / "w"
    shutil.copytree(src, base, symlinks=True)
    for _ in range(3):
        procs = [child(base, "a"), child(base, "b")]
        for p in procs:
            _out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-2000:]
    a, b = fake_replica(base, "a"), fake_replica(base, "b")
    try:
        a.sync(str(base / "remote")), b.sync(str(base / "remote"))
        assert contents(a) == contents(b)
        assert {r.memory.content for r in b.list(limit=100).memories} == expected
    finally:
        a.close(), b.close()


def test_a_queued_batch_is_sent_from_an_older_memfs_row_and_a_removed_one_is_named(template, tmp_path):
    """A batch waits in data/sync/outbox/ between a crash and the next sync. A row an older memfs queued
    holds the bytes itself: still sent. A batch whose file was removed: the sync says which, and the
    remote is left as it was."""
    src, _expected = template
    base = tmp_path / "w"
    shutil.copytree(src, base, symlinks=True)
    remote, sync_dir = base / "remote", base / "b" / "data" / "sync"

    def crash_with_a_batch_queued():
        p = child(base, "b", "collected")
        assert p.communicate(timeout=300) and p.returncode == CRASH_EXIT
        [file] = (sync_dir / "outbox").glob("*.mfs")
        with sqlite3.connect(sync_dir / "sync.sqlite") as db:
            [(seq, name)] = db.execute("SELECT seq, name FROM outbox").fetchall()
        return file, seq, name

    file, seq, name = crash_with_a_batch_queued()
    db = sqlite3.connect(sync_dir / "sync.sqlite")
    with db:
        db.execute("UPDATE outbox SET data = ? WHERE seq = ?", (file.read_bytes(), seq))
    db.close()
    file.unlink()
    b = fake_replica(base, "b")
    b.sync(str(remote))
    b.add("added on b after its older batch went out")
    b.close()
    assert (remote / name).is_file()

    before = tree_digest(remote)
    file, seq, _name = crash_with_a_batch_queued()
    file.unlink()
    b = fake_replica(base, "b")
    try:
        with pytest.raises(MemfsError, match=rf"sequence {seq}\) is missing: .*{file.name} was removed"):
            b.sync(str(remote))
    finally:
        b.close()
    assert tree_digest(remote) == before


@pytest.fixture(scope="module")
def compacted(tmp_path_factory):
    """Replica a pushed three batches; b read only the first; a is about to compact."""
    base = tmp_path_factory.mktemp("compact-crash")
    remote = str(base / "remote")
    a, b = fake_replica(base, "a"), fake_replica(base, "b")
    three_batches(a, remote, first_readers=[b])
    expected = contents(a)
    a.close(), b.close()
    return base, expected


@pytest.mark.parametrize("step", COMPACT_STEPS)
def test_a_compaction_killed_at_any_step_leaves_the_remote_readable_and_a_later_sync_or_compact_finishes(
        compacted, tmp_path, step):
    src, expected = compacted
    base = tmp_path / "w"
    shutil.copytree(src, base, symlinks=True)
    remote = str(base / "remote")
    a = fake_replica(base, "a")  # the copy is a new remote to a's state (its path is the key): a sync adopts a's
    a.sync(remote)               # objects there, as compact asks for objects its state does not know
    a.close()
    p = child(base, "a", step, "compact")
    _out, err = p.communicate(timeout=300)
    assert p.returncode == CRASH_EXIT, f"the compaction never reached step {step}: {err[-2000:]}"
    # Readable as it was left: a brand-new replica bootstraps the same set, the one at an old position
    # converges, and a (whose compaction died) syncs on from wherever it stopped.
    all_agree(base, remote, ("fresh", "b", "a"), expected)
    # A later compaction finishes the job: one object (a base) is left of a's, and everyone still agrees.
    a = fake_replica(base, "a")
    try:
        a.sync_compact(remote)
        prefix = a.sync_status().remotes[0]["prefix"]
        [left] = (base / "remote" / "replicas" / prefix).glob("*.mfs")
        assert left.name.endswith(".base.mfs")
        a.add("added on a after the compaction")
        a.sync(remote)
        expected = contents(a)
    finally:
        a.close()
    all_agree(base, remote, ("b", "fresh", "late"), expected)


def all_agree(base, remote, names, expected) -> None:
    """Each named replica, after one sync, holds `expected` and no conflict."""
    for name in names:
        o = fake_replica(base, name)
        try:
            o.sync(remote)
            assert contents(o) == expected and o.conflicts() == []
        finally:
            o.close()
