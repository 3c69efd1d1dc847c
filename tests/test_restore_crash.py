"""Issue #11 finding 0: the restore transaction is correct at every step.

As borg tests its repository: enumerate the transaction's steps and crash at each one (memfs.restore's
`crash_at` fault-injection point, os._exit in a real child process, as kill -9 would), then reopen and
check that the store is entirely old or entirely restored, byte for byte, with a pre-restore snapshot
whenever anything changed. Random kill timing never hit the sub-millisecond windows that lost data.
"""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from memfs import MemoryStore
from memfs.backups import STAGING_PREFIX, create_backup, list_backups
from memfs.filestore import Layout
from memfs.lock import StoreLock
from memfs.local import LocalOperations
from memfs.sync.state import replica_id
from memfs.restore import CRASH_EXIT, STEPS, finish_interrupted_restore, read_backup, verify_backup

from conftest import filler_texts

from memfs.archive import PARTS  # noqa: E402  (every part a backup holds and a restore swaps)
SWAPPED_FROM = STEPS.index("journal-swapping")  # from this step on, the restore is rolled forward


def fingerprint(root: Path) -> dict[str, str]:
    """SHA-256 of every file in the parts a restore swaps (our own markers aside)."""
    out = {}
    for part in PARTS:
        for p in sorted((root / "data" / part).rglob("*")):
            if p.is_file() and not p.name.startswith(STAGING_PREFIX):
                out[p.relative_to(root).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A real store (Chroma, catalog, 16 memories), a backup of it, then one more memory: restoring the
    backup changes every part."""
    root = tmp_path_factory.mktemp("crash") / "store"
    with MemoryStore.open(root, create=True) as s:
        s.add_many({"content": t, "tags": ["docs"]} for t in filler_texts(15))
        replica_id(s.layout)  # data/sync/ and data/conflicts/ are parts too (issue #20)
        (s.layout.data / "conflicts").mkdir()
        (s.layout.data / "conflicts" / "m1--0123456789abcdef.json").write_text('{"format": "memfs.conflict/1"}')
        lock = s.lock
        archive = create_backup(s.layout)
        s.add("Only in the old data", tags=["old"])
    assert lock is not None
    new = read_backup(archive).hashes
    old = fingerprint(root)
    assert old != new and all(any(k.startswith(f"data/{p}/") for k in new) for p in PARTS)
    return root, archive.name, old, new


@pytest.fixture
def store(template, tmp_path):
    src, name, old, new = template
    root = tmp_path / "store"
    shutil.copytree(src, root, symlinks=True)
    return root, root / "backups" / name, old, new


_CHILD = """
import sys
from pathlib import Path
from memfs import restore
from memfs.backups import BackupFile
from memfs.filestore import Layout
from memfs.lock import StoreLock

root, archive, step, what = sys.argv[1:5]
restore.crash_at = step
layout = Layout(Path(root))
StoreLock(layout.lock_file).acquire()
if what == "restore":
    restore.restore_backup(layout, BackupFile.parse(Path(archive)))
else:
    restore.finish_interrupted_restore(layout)
"""


def crash(root: Path, archive: Path, step: str, what: str = "restore") -> int:
    return subprocess.run([sys.executable, "-c", _CHILD, str(root), str(archive), step, what],
                          capture_output=True, text=True).returncode


def check_whole(root: Path, old: dict, new: dict, expect: str) -> None:
    layout = Layout(root)
    lock = StoreLock(layout.lock_file).acquire()
    try:
        finish_interrupted_restore(layout)
    finally:
        lock.release()
    now = fingerprint(root)
    assert now == (new if expect == "new" else old), f"store is neither entirely old nor entirely {expect}"
    assert not list((root / "data").glob(f"{STAGING_PREFIX}*")), "staging left behind"
    assert not [p for part in PARTS for p in (root / "data" / part).glob(f"{STAGING_PREFIX}*")], "marker left"
    pre = [b for b in list_backups(root / "backups")[0] if b.kind == "pre-restore"]
    if expect == "new":  # something changed: the replaced data is in a verified pre-restore snapshot
        assert len(pre) == 1
        assert verify_backup(pre[0]).status == "ok"
        assert read_backup(pre[0]).hashes == old
    with MemoryStore.open(root) as s:  # and the store opens and levels with nothing to embed
        assert s.reconcile().embedded == 0
        hits = s.search("Only in the old data", k=1, mode="keyword")
        assert bool(hits and "old data" in hits[0].memory.content) == (expect == "old")


@pytest.mark.parametrize("step", STEPS)
def test_a_crash_at_any_step_leaves_the_store_entirely_old_or_entirely_restored(store, step):
    root, archive, old, new = store
    assert crash(root, archive, step) == CRASH_EXIT, f"the restore never reached step {step}"
    check_whole(root, old, new, "new" if STEPS.index(step) >= SWAPPED_FROM else "old")


@pytest.mark.parametrize("first, second", [
    ("exchanged:memories", "exchanged:embeddings"),
    ("exchanged:indexes", "removing-old:memories"),
    ("removing-old:memories", "removed-old:indexes"),
    ("journal-swapped", "unmarked"),
    ("unmarked", "journal-removed"),
])
def test_a_crash_while_finishing_an_interrupted_restore_is_finished_by_the_next_open(store, first, second):
    root, archive, old, new = store
    assert crash(root, archive, first) == CRASH_EXIT
    assert crash(root, archive, second, what="finish") == CRASH_EXIT
    check_whole(root, old, new, "new")


def test_the_issue_scenario_markers_gone_journal_left_does_not_swap_back(store):
    """Issue #11 finding 0 exactly: killed after the markers went but with the journal still there. The
    old code swapped every part again at the next open, bringing the old data back."""
    root, archive, old, new = store
    assert crash(root, archive, "unmarked") == CRASH_EXIT
    staging = next((root / "data").glob(f"{STAGING_PREFIX}*"))
    assert (staging / "JOURNAL").read_text().strip() == "swapped"
    with LocalOperations.open(root) as ops:  # what every memfs command's owner does when it starts
        assert ops.reindex().embedded == 0
    memories = lambda fp: {k: v for k, v in fp.items() if k.startswith("data/memories/")}  # noqa: E731
    assert memories(fingerprint(root)) == memories(new)  # (opening rewrites the index files)
    assert not staging.exists()


def test_restore_in_process_leaves_no_staging_and_no_markers(store):
    root, archive, old, new = store
    assert crash(root, archive, "no-such-step") == 0
    assert fingerprint(root) == new
    assert not list((root / "data").glob(f"{STAGING_PREFIX}*"))
    assert os.listdir(root / "data" / "memories")
