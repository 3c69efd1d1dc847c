"""Issue #14: hand edits that must never leave the index wrong.

Real files, the real model and Chroma, and a real owner: the in-process Watcher (the indexer every owner
runs), `memfs reindex` and `memfs watch` subprocesses. Unreadable files need a process without
CAP_DAC_OVERRIDE: as root, those subprocesses run under `setpriv` with it dropped, because root reads a
`chmod 000` file anyway. Every wait polls with a deadline; no timing is asserted.
"""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import pytest

from memfs import InvalidDocumentError, MemoryStore
from memfs.catalog_schema import SCHEMA_VERSION
from memfs.embedder import MiniLMEmbedder, model_input
from memfs.filestore import TEMP_NAME, Layout
from memfs.limits import EMBED_INPUT_CHARS, MAX_CONTENT_CHARS, MAX_FILE_BYTES
from memfs.validate import fix, validate
from memfs.watcher import Watcher
from test_watcher import wait_until

ROOT_USER = os.geteuid() == 0


def write(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(doc if isinstance(doc, bytes) else orjson.dumps(doc))


def keyword(store, word):
    return [h.memory.id for h in store.search(word, k=5, mode="keyword")]


def unprivileged(*args) -> list[str]:
    """A memfs command as a process that `chmod 000` really locks out (root's DAC override dropped)."""
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if ROOT_USER else []
    return [*prefix, sys.executable, "-m", "memfs", *args]


def memfs(root: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run(unprivileged("--root", str(root), *args), capture_output=True, text=True, timeout=300)


def _query(root: Path, sql: str) -> list[tuple]:
    """Read the catalog as another process sees it; nothing yet while the owner creates it."""
    db = sqlite3.connect(f"file:{root / 'data/indexes/catalog.sqlite'}?mode=ro", uri=True)
    try:
        return db.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def catalog_rows(root: Path) -> dict[str, tuple[str, str]]:
    """id -> (path, content)."""
    return {i: (p, c) for i, p, c in _query(root, "SELECT id, path, content FROM docs")}


def catalog_invalid(root: Path) -> dict[str, str]:
    return dict(_query(root, "SELECT path, reason FROM invalid"))


@pytest.fixture
def watched(store):
    w = Watcher(store, reconcile_every=3600).start()
    w.idle.wait(30)
    yield store, w
    w.stop()


# -- 1. a duplicated id's original is deleted ---------------------------------------------------------


def test_copy_then_delete_original_keeps_the_memory_reconcile(store):
    mem = store.layout.memories
    write(mem / "a.json", {"id": "X", "content": "the capybara original"})
    store.reconcile()
    shutil.copy2(mem / "a.json", mem / "b.json")
    report = store.reconcile()
    assert [i.path for i in report.invalid] == ["b.json"] and "duplicate id 'X'" in report.invalid[0].reason
    (mem / "a.json").unlink()
    report = store.reconcile()
    assert report.invalid == []
    assert store.catalog.get("X").path == "b.json" and keyword(store, "capybara") == ["X"]
    assert store.get("X").content == "the capybara original"
    assert store.vectors.ids() == {"X"}
    assert validate(store.layout).problems == []


def test_changing_the_originals_id_frees_it_for_the_copy(store):
    mem = store.layout.memories
    write(mem / "a.json", {"id": "X", "content": "the okapi original"})
    store.reconcile()
    write(mem / "b.json", {"id": "X", "content": "the okapi copy"})
    assert [i.path for i in store.reconcile().invalid] == ["b.json"]
    write(mem / "a.json", {"id": "Y", "content": "the okapi original"})  # as the error message advises
    assert store.reconcile().invalid == []
    assert store.catalog.get("X").path == "b.json" and store.catalog.get("Y").path == "a.json"
    assert store.vectors.ids() == {"X", "Y"}


def test_move_by_copy_under_the_watcher(watched):
    store, w = watched
    mem = store.layout.memories
    write(mem / "inbox" / "a.json", {"id": "X", "content": "the axolotl note"})
    wait_until(lambda: keyword(store, "axolotl") == ["X"], what="indexed")
    (mem / "archive").mkdir()
    shutil.copy2(mem / "inbox" / "a.json", mem / "archive" / "a.json")
    wait_until(lambda: [i.path for i in store.catalog.invalid()] == ["archive/a.json"], what="duplicate reported")
    (mem / "inbox" / "a.json").unlink()
    wait_until(lambda: store.catalog.invalid() == [] and store.catalog.path_for_id("X") == "archive/a.json",
               what="the copy takes over")
    assert keyword(store, "axolotl") == ["X"]
    # The vector follows the keyword index (issue #24, item 1): wait for it rather than assume it.
    wait_until(lambda: store.vectors.ids() == {"X"}, timeout=120, what="the vector")


def test_copy_then_delete_through_memfs_reindex(root):
    MemoryStore.init(root)
    mem = root / "data" / "memories"
    write(mem / "a.json", {"id": "X", "content": "the pangolin original"})
    assert memfs(root, "reindex").returncode == 0
    shutil.copy2(mem / "a.json", mem / "b.json")
    r = memfs(root, "reindex")
    assert r.returncode == 1 and "b.json: duplicate id 'X'" in r.stderr
    (mem / "a.json").unlink()
    r = memfs(root, "reindex")
    assert r.returncode == 0, r.stderr
    assert catalog_rows(root) == {"X": ("b.json", "the pangolin original")}


# -- 2. permissions fixed ---------------------------------------------------------------------------


def test_chmod_back_is_noticed_by_reindex(root):
    MemoryStore.init(root)
    mem = root / "data" / "memories"
    write(mem / "locked.json", {"id": "L", "content": "the quetzal note"})
    os.chmod(mem / "locked.json", 0o000)
    r = memfs(root, "reindex")
    assert r.returncode == 1 and "locked.json: unreadable" in r.stderr
    os.chmod(mem / "locked.json", 0o644)  # changes only the ctime
    r = memfs(root, "reindex")
    assert r.returncode == 0, r.stderr
    assert catalog_rows(root) == {"L": ("locked.json", "the quetzal note")} and catalog_invalid(root) == {}


def test_chmod_back_is_noticed_by_a_running_owner(root):
    MemoryStore.init(root)
    mem = root / "data" / "memories"
    # Its console log goes to a file: a pipe nobody reads fills up and blocks the owner's stop.
    log = open(root.parent / "watch.err", "w")
    owner = subprocess.Popen(unprivileged("--root", str(root), "watch"), stderr=log, text=True)
    try:
        wait_until(lambda: (root / "data/indexes/catalog.sqlite").exists(), 60, "owner started")
        write(mem / "valid.json", {"id": "V", "content": "the kakapo note"})
        wait_until(lambda: "V" in catalog_rows(root), 60, "owner indexing")
        # The file arrives locked (made under an ignored name, renamed in): the owner never saw it readable.
        write(mem / ".locked.json.swp", {"id": "L", "content": "the tuatara note"})
        os.chmod(mem / ".locked.json.swp", 0o000)
        os.rename(mem / ".locked.json.swp", mem / "locked.json")
        wait_until(lambda: "unreadable" in catalog_invalid(root).get("locked.json", ""), 60, "reported unreadable")
        assert "L" not in catalog_rows(root)
        os.chmod(mem / "locked.json", 0o644)
        wait_until(lambda: catalog_rows(root).get("L") == ("locked.json", "the tuatara note")
                   and catalog_invalid(root) == {}, 60, "owner indexed the file once readable")
        # A valid file that becomes unreadable keeps serving its last good version (get included).
        os.chmod(mem / "valid.json", 0o000)
        wait_until(lambda: "unreadable" in catalog_invalid(root).get("valid.json", ""), 60, "unreadable noticed")
        assert catalog_rows(root)["V"] == ("valid.json", "the kakapo note")
    finally:
        owner.send_signal(signal.SIGTERM)
        owner.wait(120)  # a stop finishes the pending work first (the model may still be loading)
        log.close()
        os.chmod(mem / "valid.json", 0o644)


# -- 3. a same-size edit whose mtime is put back ------------------------------------------------------


def same_size_edit(path: Path, old: str, new: str) -> None:
    """Edit in place, keep the size, put the mtime back (`touch -r`, tools that copy timestamps)."""
    assert len(old) == len(new)
    st = path.stat()
    path.write_bytes(path.read_bytes().replace(old.encode(), new.encode()))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_size == st.st_size and path.stat().st_mtime_ns == st.st_mtime_ns


def test_same_size_edit_with_mtime_restored_is_reindexed(store):
    mem = store.layout.memories
    write(mem / "n.json", {"id": "N", "content": "meeting moved to monday"})
    store.reconcile()
    same_size_edit(mem / "n.json", "monday", "friday")
    report = store.reconcile()
    assert report.updated == 1
    assert keyword(store, "friday") == ["N"] and keyword(store, "monday") == []


def test_same_size_edit_under_the_watcher(watched):
    store, _ = watched
    mem = store.layout.memories
    write(mem / "n.json", {"id": "N", "content": "deploy on tuesday"})
    wait_until(lambda: keyword(store, "tuesday") == ["N"], what="indexed")
    same_size_edit(mem / "n.json", "tuesday", "sundays")
    wait_until(lambda: keyword(store, "sundays") == ["N"] and keyword(store, "tuesday") == [], what="edit seen")


def test_validate_compares_hashes_and_fix_does_what_it_promises(store):
    mem = store.layout.memories
    write(mem / "n.json", {"id": "N", "content": "the budget is 4000"})
    write(mem / "m.json", {"id": "M", "content": "the deadline is june"})
    store.reconcile()
    # Drift no file state shows: the catalog row says something else than the file, state unchanged.
    with store.catalog.transaction():
        entry = store.catalog.get("N")
        store.catalog.put(entry.memory.replace(content="the budget is 9999"), entry.path, entry.state)
    store.reconcile()
    assert keyword(store, "9999") == ["N"]  # reconcile alone trusts the state
    same_size_edit(mem / "m.json", "june", "july")
    report = validate(store.layout)
    assert {(p.path, p.fixable) for p in report.problems} == {("n.json", True), ("m.json", True)}
    assert all("out of date" in p.message for p in report.problems)
    fix(store, report)
    assert validate(store.layout).problems == []
    assert keyword(store, "4000") == ["N"] and keyword(store, "july") == ["M"]


def test_manage_data_validate_fix_repairs_a_same_size_edit(root):
    with MemoryStore.open(root, create=True) as s:
        write(s.layout.memories / "n.json", {"id": "N", "content": "room 101 booked"})
        s.reconcile()
    same_size_edit(root / "data/memories/n.json", "101", "202")
    manage = [sys.executable, str(Path(__file__).parent.parent / "manage_data.py"), "--root", str(root)]
    r = subprocess.run([*manage, "validate", "--json"], capture_output=True, text=True, timeout=300)
    problems = orjson.loads(r.stdout)["problems"]
    assert r.returncode == 1 and [(p["path"], p["fixable"]) for p in problems] == [("n.json", True)]
    r = subprocess.run([*manage, "validate", "--fix", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert catalog_rows(root)["N"] == ("n.json", "room 202 booked")


# -- 4. large files -----------------------------------------------------------------------------------


def test_file_over_the_size_limit_is_reported_and_not_read(store):
    mem = store.layout.memories
    write(mem / "big.json", {"id": "B", "content": "a small first version about lemurs"})
    store.reconcile()
    big = b'{"id": "B", "content": "' + b"lemur " * (MAX_FILE_BYTES // 6 + 10) + b'"}'
    write(mem / "big.json", big)
    report = store.reconcile()
    assert [i.path for i in report.invalid] == ["big.json"]
    assert "over the 4,194,304-byte limit" in report.invalid[0].reason
    # Like any invalid file: the last good version stays, and get says why.
    rec = store.record("B")
    assert rec.memory.content == "a small first version about lemurs" and "limit" in rec.warning


def test_content_over_the_limit_is_refused_every_way_in(store):
    mem = store.layout.memories
    too_long = "x" * (MAX_CONTENT_CHARS + 1)
    with pytest.raises(InvalidDocumentError, match="over the limit of 262,144"):
        store.add(too_long)
    write(mem / "long.json", {"content": too_long})
    report = store.reconcile()
    assert [i.path for i in report.invalid] == ["long.json"] and "MAX_CONTENT_CHARS" in report.invalid[0].reason
    assert store.catalog.count() == 0 and store.vectors.count() == 0


def test_long_memory_is_indexed_from_a_cut_text_with_the_same_vector(store):
    words = " ".join(f"word{i % 997} beaver" for i in range(MAX_CONTENT_CHARS // 20))
    assert len(words) <= MAX_CONTENT_CHARS and len(model_input(words)) == EMBED_INPUT_CHARS
    write(store.layout.memories / "long.json", {"id": "L", "content": words})
    store.reconcile()
    assert store.catalog.get("L").memory.content == words  # stored whole, keyword-searchable whole
    assert keyword(store, "word996") == ["L"]
    # The model reads 256 word pieces: the cut changes nothing in the vector.
    from memfs.embedder import _load_model

    full = _load_model().encode([words], batch_size=1)[0]
    cached = store.vectors_for([store.catalog.get("L").hash])
    assert np.allclose(next(iter(cached.values())), full, atol=1e-5)


class BlockingFakeEmbedder(MiniLMEmbedder):
    """A plumbing double (meaning plays no part): texts containing SLOW wait until released."""

    def __init__(self):
        super().__init__()
        self.entered = threading.Event()
        self.release = threading.Event()

    def embed(self, texts):
        if any("SLOW" in t for t in texts):
            self.entered.set()
            assert self.release.wait(60)
        return np.tile(np.eye(1, self.dim, dtype=np.float32), (len(texts), 1))


def test_plumbing_fake_embedder_search_and_list_run_while_the_model_encodes(root):
    with MemoryStore.open(root, create=True, embedder=BlockingFakeEmbedder()) as store:
        store.add("already there: a note about herons")
        write(store.layout.memories / "slow.json", {"id": "S", "content": "SLOW memory about herons"})
        indexing = threading.Thread(target=store.reconcile)
        indexing.start()
        assert store.embedder.entered.wait(60)
        # The indexer is inside the model now; the state lock must be free for readers.
        got = []
        reader = threading.Thread(target=lambda: got.append((keyword(store, "herons"), len(store.list()))))
        reader.start()
        reader.join(30)
        answered, encoding_still = bool(got), indexing.is_alive()  # before the model is let go
        store.embedder.release.set()
        indexing.join(60)
        assert encoding_still and answered, "a search waited for the model"
        # The row is in the catalog (keyword finds it) before its vector exists.
        assert sorted(got[0][0]) == sorted([store.list()[-1].memory.id, "S"])
        assert store.vectors.ids() == store.catalog.ids()


def test_plumbing_fake_embedder_a_watcher_batch_reads_its_files_without_the_state_lock(root):
    """A burst of dropped files is read and parsed before the lock is taken: a search runs meanwhile."""
    with MemoryStore.open(root, create=True, embedder=BlockingFakeEmbedder()) as store:
        first = store.add("already there: a note about herons").memory.id
        for i in range(5):
            write(store.layout.memories / f"drop/{i}.json", {"id": f"D{i}", "content": f"dropped note {i}"})
        reading, release = threading.Event(), threading.Event()
        real_read = store.reconciler.read

        def slow_read(rel):
            if rel == "drop/3.json":
                reading.set()
                assert release.wait(60)
            return real_read(rel)

        store.reconciler.read = slow_read
        paths = [f"drop/{i}.json" for i in range(5)]
        batch = threading.Thread(target=lambda: store.reconcile(paths=paths))
        batch.start()
        assert reading.wait(30)
        got = []
        reader = threading.Thread(target=lambda: got.append(keyword(store, "herons")))
        reader.start()
        reader.join(10)
        answered, still_reading = bool(got), batch.is_alive()
        release.set()
        batch.join(60)
        assert still_reading and answered, "a search waited for the watcher's file reads"
        assert sorted(store.catalog.ids()) == sorted([first] + [f"D{i}" for i in range(5)])


def test_plumbing_fake_embedder_a_file_changed_after_the_early_read_is_read_again(root):
    """What was parsed before the lock is used only if the file's state is still the same under it."""
    with MemoryStore.open(root, create=True, embedder=BlockingFakeEmbedder()) as store:
        path = store.layout.memories / "e.json"
        write(path, {"id": "E", "content": "first words"})
        real_read_ahead = store.reconciler.read_ahead

        def read_ahead_then_edit(rels):
            early = real_read_ahead(rels)
            assert early["e.json"][1].content == "first words"
            write(path, {"id": "E", "content": "second, longer words"})  # between the read and the lock
            return early

        store.reconciler.read_ahead = read_ahead_then_edit
        store.reconcile(paths=["e.json"])
        assert store.get("E").content == "second, longer words"
        assert keyword(store, "longer") == ["E"]


@pytest.mark.skipif(sys.platform != "linux", reason="the nice value is per thread on Linux only")
def test_plumbing_fake_embedder_encoding_runs_below_the_priority_of_requests(root):
    """The model's encoding yields the CPU to searches (nice +10 on its thread); the caller's
    own priority is untouched."""
    seen = []

    class Recording(BlockingFakeEmbedder):
        def embed(self, texts):
            seen.append(os.getpriority(os.PRIO_PROCESS, 0))
            return super().embed(texts)

    before = os.getpriority(os.PRIO_PROCESS, 0)
    with MemoryStore.open(root, create=True, embedder=Recording()) as store:
        store.add_many([{"content": "a note"}, {"content": "another note"}])
        store.add("one more note")
    assert seen and all(n == min(19, before + 10) for n in seen), seen
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


# -- 5. get serves the last good version --------------------------------------------------------------


def test_get_serves_the_last_good_version_with_a_warning(store):
    mem = store.layout.memories
    write(mem / "g.json", {"id": "G", "content": "the gecko fact"})
    store.reconcile()
    assert store.record("G").warning is None
    (mem / "g.json").write_bytes(b'{"id": "G", "content": "the gec')  # truncated
    store.reconcile()
    rec = store.record("G")
    assert rec.memory.content == "the gecko fact" and rec.path == "g.json"
    assert rec.warning.startswith("g.json is invalid (invalid JSON") and str(mem) not in rec.warning
    assert rec.to_dict()["warning"] == rec.warning
    assert store.get("G").content == "the gecko fact"
    # The served last good version is not drift: validate reports the file, and promises no fix.
    assert [(p.check, p.path, p.fixable) for p in validate(store.layout).problems] == [("memory", "g.json", False)]
    # Unreadable (root reads a chmod 000 file, so a directory in its place stands in for it here).
    (mem / "g.json").unlink()
    (mem / "g.json").mkdir()
    rec = store.record("G")
    assert rec.memory.content == "the gecko fact" and "unreadable" in rec.warning and str(mem) not in rec.warning


def test_renaming_a_folder_keeps_the_last_good_versions_of_its_invalid_files(watched):
    store, _ = watched
    mem = store.layout.memories
    write(mem / "projects" / "p.json", {"id": "P", "content": "the ibex plan"})
    write(mem / "projects" / "q.json", {"id": "Q", "content": "the yak plan"})
    wait_until(lambda: store.catalog.count() == 2, what="indexed")
    (mem / "projects" / "p.json").write_bytes(b'{"id": "P", "content": ')  # broken by hand
    wait_until(lambda: [i.path for i in store.catalog.invalid()] == ["projects/p.json"], what="invalid seen")
    os.rename(mem / "projects", mem / "archive")
    wait_until(lambda: store.catalog.path_for_id("Q") == "archive/q.json"
               and [i.path for i in store.catalog.invalid()] == ["archive/p.json"], what="folder rename seen")
    rec = store.record("P")
    assert rec.path == "archive/p.json" and rec.memory.content == "the ibex plan" and "invalid" in rec.warning
    assert keyword(store, "ibex") == ["P"]
    wait_until(lambda: store.vectors.ids() == {"P", "Q"}, timeout=120, what="both vectors (they follow the catalog)")
    write(mem / "archive" / "p.json", {"id": "P", "content": "the ibex plan, fixed"})
    wait_until(lambda: store.catalog.invalid() == [] and store.record("P").warning is None
               and store.catalog.get("P").memory.content == "the ibex plan, fixed", what="fixed file indexed")


def test_get_through_memfs_serves_the_last_good_version_of_an_unreadable_file(root):
    MemoryStore.init(root)
    mem = root / "data" / "memories"
    write(mem / "u.json", {"id": "U", "content": "the narwhal fact"})
    assert memfs(root, "reindex").returncode == 0
    os.chmod(mem / "u.json", 0o000)
    try:
        r = memfs(root, "get", "U", "--json")
        assert r.returncode == 0, r.stderr
        assert orjson.loads(r.stdout)["content"] == "the narwhal fact"
    finally:
        os.chmod(mem / "u.json", 0o644)


# -- 6. temp files left by a crash --------------------------------------------------------------------


CRASH_IN_BULK_ADD = """
import os, signal, sys
from memfs import filestore
from memfs.store import MemoryStore

def die(path):  # every temp file is written; the process is killed before any rename
    os.kill(os.getpid(), signal.SIGKILL)

filestore.sync_filesystem = die
with MemoryStore.open(sys.argv[1]) as s:
    s.add_many([{"content": f"bulk memory number {i} about walruses"} for i in range(30)])
"""


def test_temp_files_of_a_killed_bulk_add_are_reported_then_removed_by_the_next_owner(root):
    MemoryStore.init(root)
    mem = root / "data" / "memories"
    r = subprocess.run([sys.executable, "-c", CRASH_IN_BULK_ADD, str(root)], capture_output=True, timeout=300)
    assert r.returncode == -signal.SIGKILL
    temps = [p for p in mem.rglob("*") if p.is_file()]
    assert len(temps) == 30 and all(TEMP_NAME.match(p.name) for p in temps)
    (mem / "notes.tmp").write_text("a person's own file")  # not our naming pattern: never touched
    problems = validate(Layout(root)).problems
    assert sorted(p.path for p in problems if p.check == "temp-file") == sorted(
        p.relative_to(mem).as_posix() for p in temps)
    assert all(p.fixable for p in problems if p.check == "temp-file")
    r = memfs(root, "reindex")
    assert r.returncode == 0, r.stderr
    assert [p for p in mem.rglob("*") if p.is_file()] == [mem / "notes.tmp"]
    assert not [p for p in validate(Layout(root)).problems if p.check == "temp-file"]


def test_a_temp_file_younger_than_the_owner_is_left_alone(store):
    mem = store.layout.memories
    old = mem / "2026" / ".x.json.0123abcd.tmp"
    young = mem / "2026" / ".y.json.89abcdef.tmp"
    for p in (old, young):
        write(p, b"{")
    opened = store.reconciler.opened_at
    os.utime(old, (opened - 60, opened - 60))
    os.utime(young, (opened + 60, opened + 60))  # a write in flight, as far as we know
    store.reconcile()
    assert not old.exists() and young.exists()


# -- 7. byte order mark, invalid UTF-8 ----------------------------------------------------------------


def test_a_bom_file_is_accepted_and_left_as_it_is(watched):
    store, _ = watched
    mem = store.layout.memories
    data = b"\xef\xbb\xbf" + orjson.dumps({"content": "written in notepad about ocelots"})
    write(mem / "win.json", data)
    wait_until(lambda: keyword(store, "ocelots") == ["win"], what="bom file indexed")
    assert store.catalog.invalid() == [] and (mem / "win.json").read_bytes() == data
    assert store.record("win").warning is None


def test_invalid_utf8_is_reported_with_its_byte(root):
    MemoryStore.init(root)
    mem = root / "data" / "memories"
    write(mem / "latin1.json", '{"content": "caf\u00e9"}'.encode("latin-1"))
    r = memfs(root, "reindex")
    assert r.returncode == 1
    assert "latin1.json: not UTF-8 (byte 16: e9)" in r.stderr and "surrogates" not in r.stderr


# -- the catalog's schema 2 ---------------------------------------------------------------------------


def test_a_schema_1_catalog_is_migrated_and_each_file_read_once_without_embedding(root):
    with MemoryStore.open(root, create=True) as s:
        s.add("the heron memory")
    db = sqlite3.connect(root / "data/indexes/catalog.sqlite")
    db.executescript("ALTER TABLE docs DROP COLUMN ctime_ns; ALTER TABLE invalid DROP COLUMN ctime_ns;"
                     "ALTER TABLE invalid DROP COLUMN dup_id; UPDATE meta SET value = '1' WHERE key = 'schema_version';")
    db.close()
    with MemoryStore.open(root) as s:
        assert s.catalog.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert [e.state.ctime_ns for e in s.list()] == [0]
        report = s.reconcile()
        assert (report.added, report.updated, report.removed, report.embedded) == (0, 0, 0, 0)
        assert [e.state.ctime_ns > 0 for e in s.list()] == [True]
        assert keyword(s, "heron") == [s.list()[0].memory.id]
