"""The Python API and reconcile, against real files, the real model and real Chroma."""

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import orjson
import numpy as np
import pytest

from memfs import InvalidDocumentError, MemoryStore, NotFoundError, StoreBusyError
from memfs.documents import FORMAT

from conftest import filler_texts


def write_json(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(doc if isinstance(doc, bytes) else orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def test_round_trip(store):
    r = store.add("User prefers dark theme", tags=["ui", "prefs"], metadata={"by": "test"})
    assert not r.duplicate
    m = store.get(r.memory.id)
    assert (m.content, m.tags, m.metadata) == ("User prefers dark theme", ("ui", "prefs"), {"by": "test"})
    file = store.path_of(m.id)
    on_disk = orjson.loads(file.read_bytes())
    assert on_disk["format"] == FORMAT and on_disk["created_at"].endswith("Z")
    assert b"\n  " in file.read_bytes()  # pretty-printed for people

    updated = store.update(m.id, content="User prefers a light theme", add_tags=["changed"], remove_tags=["prefs"])
    assert updated.tags == ("ui", "changed") and updated.updated_at > m.updated_at
    assert store.get(m.id).content == "User prefers a light theme"
    assert [h.memory.id for h in store.search("light theme", k=1)] == [m.id]
    assert [e.memory.id for e in store.list()] == [m.id]

    store.remove(m.id)
    assert not file.exists()
    with pytest.raises(NotFoundError):
        store.get(m.id)
    assert store.search("light theme", k=3) == []


def test_same_content_returns_existing(store):
    first = store.add("Remember the milk")
    again = store.add("Remember the milk", tags=["other"])
    assert again.duplicate and again.memory.id == first.memory.id
    copy = store.add("Remember the milk", allow_duplicate=True)
    assert not copy.duplicate and copy.memory.id != first.memory.id
    assert store.catalog.count() == 2


def test_add_many_keeps_input_order_and_checks_everything_first(store):
    # Embedded longest first (for the model's batching); results still follow the input.
    texts = ["short one", "a much longer memory " * 20, "mid-length memory text " * 3, "short one"]
    results = store.add_many([{"content": t} for t in texts])
    assert [r.memory.content for r in results] == texts
    assert [r.duplicate for r in results] == [False, False, False, True]
    assert results[3].memory.id == results[0].memory.id  # the first of equal contents is the one kept
    with pytest.raises(InvalidDocumentError):
        store.add_many([{"content": "never written"}, {"content": ""}])
    with pytest.raises(InvalidDocumentError, match="already exists"):
        store.add_many([{"id": "same", "content": "one"}, {"id": "same", "content": "two"}])
    assert store.catalog.count() == 3  # neither bad call wrote anything
    assert len(list(store.layout.memories.rglob("*.json"))) == 3
    assert [h.memory.content for h in store.search("never written", k=5, mode="keyword")] == []


def test_update_keeps_unknown_fields(store):
    path = store.layout.memories / "hand" / "x.json"
    write_json(path, {"id": "x1", "content": "kept fields", "custom": {"a": 1}, "priority": 5})
    store.reconcile()
    store.update("x1", add_tags=["t"])
    doc = orjson.loads(path.read_bytes())
    assert doc["custom"] == {"a": 1} and doc["priority"] == 5 and doc["tags"] == ["t"]


def test_rebuild_from_files_gives_identical_results(store):
    store.add_many({"content": t} for t in filler_texts(40))
    queries = ["how do I format strings", "exceptions and errors", "numbers", "import a module"]

    def results():
        return [[(h.memory.id, round(h.score, 4)) for h in store.search(q, k=5, mode=mode)]
                for q in queries for mode in ("semantic", "keyword", "hybrid")]

    before = results()
    root = store.layout.root
    store.close()
    shutil.rmtree(root / "data" / "embeddings")
    shutil.rmtree(root / "data" / "indexes")
    with MemoryStore.open(root) as again:
        report = again.reconcile()
        assert report.added == 40 and report.embedded == 40
        store = again
        assert results() == before


def test_second_reconcile_embeds_nothing(store):
    store.add_many({"content": t} for t in filler_texts(20))
    first = store.reconcile()
    counter = store.embedder.embedded
    second = store.reconcile()
    assert (first.embedded, second.embedded) == (0, 0)
    assert store.embedder.embedded == counter
    assert (second.added, second.updated, second.removed, second.vectors_missing) == (0, 0, 0, 0)


def test_bare_file_is_indexed_and_broken_file_reported(store):
    mem = store.layout.memories
    write_json(mem / "inbox" / "bare.json", {"content": "The staging database password rotates monthly"})
    write_json(mem / "inbox" / "broken.json", b'{"content": "half a file')
    report = store.reconcile()
    assert report.added == 1
    assert [(i.path, "invalid JSON" in i.reason) for i in report.invalid] == [("inbox/broken.json", True)]
    hit = store.search("when does the db password change", k=1, mode="semantic")[0]
    assert (hit.memory.id, hit.path) == ("inbox/bare", "inbox/bare.json")
    # Fixing the file indexes it and clears the report.
    write_json(mem / "inbox" / "broken.json", {"content": "now whole"})
    report = store.reconcile()
    assert report.invalid == [] and report.added == 1


def test_temp_and_swap_files_are_not_memories(store):
    mem = store.layout.memories
    for name in [".x.json.swp", "x.json~", ".hidden.json", "x.tmp", ".#x.json", "notes.txt"]:
        write_json(mem / name, {"content": "not a memory"})
    write_json(mem / ".git" / "y.json", {"content": "not a memory either"})
    assert store.reconcile().scanned == 0


def test_rename_embeds_nothing(store):
    r = store.add("Rename me and I keep my vector")
    src = store.path_of(r.memory.id)
    dst = store.layout.memories / "elsewhere" / "renamed.json"
    dst.parent.mkdir()
    os.rename(src, dst)
    before = store.embedder.embedded
    report = store.reconcile()
    assert (report.moved, report.added, report.removed, report.embedded) == (1, 0, 0, 0)
    assert store.embedder.embedded == before
    assert store.path_of(r.memory.id) == dst


def test_invalid_edit_keeps_last_good_version(store):
    r = store.add("Original text about the release train")
    path = store.path_of(r.memory.id)
    path.write_text('{"content": "broken')
    report = store.reconcile()
    assert [i.path for i in report.invalid] == [r.path]
    assert store.search("release train", k=1, mode="keyword")[0].memory.id == r.memory.id
    write_json(path, {"id": r.memory.id, "content": "Fixed text about the deploy window"})
    report = store.reconcile()
    assert (report.invalid, report.updated) == ([], 1)
    assert store.search("deploy window", k=1, mode="keyword")[0].memory.id == r.memory.id


def test_duplicate_id_in_two_files_is_reported(store):
    mem = store.layout.memories
    write_json(mem / "a.json", {"id": "same", "content": "first"})
    write_json(mem / "b.json", {"id": "same", "content": "second"})
    report = store.reconcile()
    assert store.catalog.count() == 1
    assert len(report.invalid) == 1 and "duplicate id 'same'" in report.invalid[0].reason


def test_newer_format_is_refused_clearly(store):
    write_json(store.layout.memories / "future.json", {"format": "memfs.memory/9", "content": "from the future"})
    report = store.reconcile()
    assert "newer memfs" in report.invalid[0].reason and "upgrade" in report.invalid[0].reason
    with pytest.raises(InvalidDocumentError):
        store.add("x", format="memfs.memory/9")


def test_lost_vectors_are_embedded_again(store):
    ids = [r.memory.id for r in store.add_many({"content": t} for t in filler_texts(10))]
    before = store.vectors.stored(ids)
    # Chroma can lose recent vectors (chroma-core/chroma #6975): simulate that loss directly. Each
    # vector is kept once (issue #26), so what Chroma lost is embedded again, and comes back the same.
    store.vectors.delete(ids[:4])
    store.vectors.collection.upsert(ids=["orphan"], embeddings=[[0.1] * 384])
    report = store.reconcile()
    assert (report.vectors_missing, report.vectors_orphaned, report.embedded) == (4, 1, 4)
    assert store.vectors.ids() == set(ids)
    after = store.vectors.stored(ids)
    assert all(np.allclose(after[i][1], before[i][1], atol=1e-5) and after[i][0] == before[i][0] for i in ids)
    assert store.catalog.cache_size() == 0


def test_each_vector_is_kept_once_and_read_back_from_the_index(root):
    """Issue #26: the embedding cache holds only what the index does not have yet, and the catalog
    gives the space back; exports, hybrid ranking, a tag change and a rebuild still embed nothing."""
    with MemoryStore.open(root, create=True) as store:
        records = store.add_many({"content": t, "tags": ["a"]} for t in filler_texts(300))
        assert store.catalog.cache_size() == 0 and store.vectors.count() == 300
        before = store.embedder.embedded
        hashes = [r.memory.content_hash for r in records]
        kept = store.vectors_for(hashes)
        assert set(kept) == set(hashes)
        first = records[0].memory
        assert np.allclose(kept[first.content_hash], store.embedder.embed([first.content])[0], atol=1e-5)
        before += 1
        store.update(first.id, tags=["b"])  # same content: its vector is read back from the index
        assert store.embedder.embedded == before and store.catalog.cache_size() == 0
        store.vectors.close()  # not the in-memory copy: Chroma itself
        assert set(store.vectors_for(hashes)) == set(hashes)
        assert store.rebuild_vectors() == 300 and store.embedder.embedded == before
        assert store.vectors.ids() == {r.memory.id for r in records} and store.catalog.cache_size() == 0
        store.writer._cache_indexed()  # a rebuild stopped right after staging: the next reconcile tidies
        assert store.catalog.cache_size() == 300
        assert store.reconcile().embedded == 0 and store.catalog.cache_size() == 0
        other = store.add(first.content + " More.")  # other content: embedded
        assert store.embedder.embedded == before + 1 and other.memory.id in store.vectors.ids()
        assert store.search(first.content, k=1)[0].memory.id == first.id
    chroma = sqlite3.connect(root / "data" / "embeddings" / "chroma.sqlite3")
    assert chroma.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # compacted once at close (Chroma: NONE)
    assert chroma.execute("PRAGMA freelist_count").fetchone()[0] < 64
    db = sqlite3.connect(root / "data" / "indexes" / "catalog.sqlite")
    assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    assert db.execute("PRAGMA freelist_count").fetchone()[0] < 64  # given back at close
    (pages,) = db.execute("SELECT count(*) FROM dbstat WHERE name = 'embed_cache'").fetchone()
    assert pages <= 1  # the vectors (450 KB) are not in the catalog


def test_removed_file_leaves_every_index(store):
    r = store.add("Ephemeral memory about tea")
    store.path_of(r.memory.id).unlink()
    report = store.reconcile()
    assert report.removed == 1
    assert store.catalog.count() == 0 and store.vectors.count() == 0
    assert store.search("tea", k=3, mode="keyword") == []


def test_second_open_is_refused_while_held(root, store):
    with pytest.raises(StoreBusyError) as e:
        MemoryStore.open(root)
    assert "in use by pid" in str(e.value) and e.value.exit_code == 4


def test_stale_lock_is_taken_over(root):
    MemoryStore.init(root)
    (root / "data" / "memfs.lock").write_text('{"pid": 999999, "host": "gone", "url": null}')
    with MemoryStore.open(root) as s:
        assert s.lock.recovered_from["pid"] == 999999


def test_open_uninitialised_root_says_what_to_do(tmp_path):
    from memfs import StoreNotInitializedError

    with pytest.raises(StoreNotInitializedError, match="memfs init"):
        MemoryStore.open(tmp_path / "nothing")


def test_move_over_another_file_and_swapping_names(store):
    mem = store.layout.memories
    write_json(mem / "a.json", {"id": "A", "content": "alpha memory"})
    write_json(mem / "b.json", {"id": "B", "content": "bravo memory"})
    write_json(mem / "c.json", {"id": "C", "content": "charlie memory"})
    store.reconcile()
    # Two files swap names: both are moves, no path collision, nothing embedded.
    os.rename(mem / "a.json", mem / "tmp.json")
    os.rename(mem / "b.json", mem / "a.json")
    os.rename(mem / "tmp.json", mem / "b.json")
    report = store.reconcile()
    assert (report.moved, report.embedded) == (2, 0)
    assert (store.catalog.get("A").path, store.catalog.get("B").path) == ("b.json", "a.json")
    # `mv b.json c.json` replaces C by A: C is gone, A lives at c.json.
    os.replace(mem / "b.json", mem / "c.json")
    report = store.reconcile()
    assert store.catalog.get("C") is None and store.catalog.get("A").path == "c.json"
    assert store.vectors.ids() == {"A", "B"}


@pytest.mark.parametrize("when", ["writing files", "writing vectors"])
def test_add_many_killed_midway_loses_nothing(root, when):
    """kill -9 during a bulk add: at the next open every file written is indexed, with its vector."""
    n = 1500
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parent.parent)!r})
        from memfs import MemoryStore
        docs = [{{"content": f"memory {{i}} on the routes of arctic terns"}} for i in range({n})]
        with MemoryStore.open({str(root)!r}, create=True) as s:
            print("open", flush=True)
            s.add_many(docs)
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "open"
    files = lambda: sum(1 for _ in (root / "data" / "memories").rglob("*.json"))  # noqa: E731
    deadline = time.monotonic() + 120
    while files() < (300 if when == "writing files" else n) and time.monotonic() < deadline:
        time.sleep(0.01)
    if when == "writing vectors":
        time.sleep(1.0)
    p.send_signal(signal.SIGKILL)
    p.wait()
    written = files()
    assert 0 < written <= n
    with MemoryStore.open(root) as s:
        report = s.reconcile()
        if when == "writing vectors":  # the kill did land between files and vectors
            assert report.embedded > 0 and written == n
        ids = s.catalog.ids()
        assert len(ids) == written and s.vectors.ids() == ids
        assert s.reconcile().embedded == 0
