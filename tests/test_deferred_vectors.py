"""Deferred Chroma upserts (VectorWriter.defer, on in an owner; issue #26): a small write returns once
its vector is cached and in the exact search's in-memory copy, and the Chroma upserts of writes in a
row follow as one. Real model, real Chroma, real processes for the crash."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from memfs import MemoryStore, vector_writes
from memfs.lock import is_held, read_owner
from memfs.query import Filters
from test_watcher import wait_until


@pytest.fixture
def deferring(root):
    s = MemoryStore.open(root, create=True)
    s.warm()  # the model, and the in-memory copy of the vectors searches read
    s.writer.defer = True
    yield s
    s.close()


def in_chroma(s: MemoryStore) -> set[str]:
    return set(s.vectors.collection.get(include=[])["ids"])


def test_a_deferred_store_is_searchable_at_once_and_reaches_chroma_soon(deferring, monkeypatch):
    s = deferring
    monkeypatch.setattr(vector_writes, "DEFER_SECONDS", 0.3)
    m = s.add("The Lisbon office is run by Ana Duarte", tags=["people"]).memory
    hits = s.search("who manages the Portugal branch", k=3, mode="semantic")
    assert hits and hits[0].memory.id == m.id  # read from the in-memory copy, before Chroma has it
    assert m.id not in in_chroma(s) and s.catalog.unsynced_among([m.id])  # still on its way
    s.writer.refresh_lag()
    assert not s.writer.lagging  # a deferred row is searchable: hybrid search need not fall back
    wait_until(lambda: m.id in in_chroma(s), timeout=10, what="the deferred upsert")
    wait_until(lambda: not s.catalog.unsynced_among([m.id]), timeout=10, what="the row marked synced")


def test_stores_in_a_row_share_one_chroma_upsert(deferring, monkeypatch):
    s = deferring
    monkeypatch.setattr(vector_writes, "DEFER_SECONDS", 30)  # only the row count ends the wait
    monkeypatch.setattr(vector_writes, "DEFER_ROWS", 8)
    calls = []
    real = s.vectors.upsert
    monkeypatch.setattr(s.vectors, "upsert", lambda ms, vs: (calls.append(len(ms)), real(ms, vs)))
    ids = [s.add(f"note {i}: the build cache for service {i} lives on node {i % 3}").memory.id for i in range(8)]
    wait_until(lambda: set(ids) <= in_chroma(s), timeout=20, what="eight stores upserted")
    assert calls == [8]


def test_delete_and_update_before_the_upsert_leave_chroma_right(deferring, monkeypatch):
    s = deferring
    monkeypatch.setattr(vector_writes, "DEFER_SECONDS", 30)
    gone = s.add("a note deleted before its vector reached Chroma").memory
    kept = s.add("the first draft of a note").memory
    s.remove(gone.id)
    s.update(kept.id, content="Backups are encrypted with age before upload")
    s.writer.flush_soon()
    assert in_chroma(s) == {kept.id}  # no orphan for the deleted one
    assert not s.catalog.unsynced_among([kept.id])
    hits = s.vectors.hnsw_query(s.embedder.embed_query("Backups are encrypted with age before upload"), 1, Filters())
    assert hits[0][0] == kept.id and hits[0][1] > 0.99  # Chroma holds the updated text's vector


def test_close_writes_what_was_deferred(root, monkeypatch):
    monkeypatch.setattr(vector_writes, "DEFER_SECONDS", 60)
    with MemoryStore.open(root, create=True) as s:
        s.warm()
        s.writer.defer = True
        mem_id = s.add("written to Chroma at close").memory.id
    with MemoryStore.open(root) as s:
        assert mem_id in in_chroma(s) and not s.catalog.unsynced_among([mem_id])


CRASH = textwrap.dedent("""
    import os, signal, sys
    from memfs import MemoryStore, vector_writes
    vector_writes.DEFER_SECONDS = 600
    s = MemoryStore.open(sys.argv[1])
    s.warm()
    s.writer.defer = True
    m = s.add("stored just before the process was killed").memory
    print(m.id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_kill_9_before_the_deferred_upsert_loses_nothing(root):
    MemoryStore.open(root, create=True).close()
    r = subprocess.run([sys.executable, "-c", CRASH, str(root)], capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr
    mem_id = r.stdout.split()[0]
    with MemoryStore.open(root) as s:
        assert mem_id not in in_chroma(s)  # killed before the upsert, as meant
        assert s.catalog.unsynced_among([mem_id])  # and the catalog says so
        s.reconcile()
        assert mem_id in in_chroma(s) and not s.catalog.unsynced_among([mem_id])
        hits = s.search("what was stored right before the crash", k=1, mode="semantic")
        assert hits and hits[0].memory.id == mem_id


def test_an_owner_killed_right_after_a_store_loses_nothing(root):
    """Through a real owner (defer on): kill -9 it right after a store answers; the next call's owner
    finds the row unsynced and gives Chroma its vector."""
    run = lambda *a: subprocess.run([sys.executable, "-m", "memfs", "--root", str(root), *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=300)
    assert run("init").returncode == 0
    added = run("add", "the owner died right after this store", "--json")
    assert added.returncode == 0, added.stderr
    mem_id = json.loads(added.stdout)["id"]
    lock = root / "data" / "memfs.lock"
    os.kill(read_owner(lock)["pid"], signal.SIGKILL)
    wait_until(lambda: not is_held(lock), timeout=120, what="lock released by the kernel")
    found = run("search", "which store came right before the owner died", "--mode", "semantic", "-k", "1", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout)["hits"][0]["id"] == mem_id
    assert run("stop").returncode == 0  # the search's owner, started on demand
    wait_until(lambda: not is_held(lock), timeout=60, what="the owner stopped")
    with MemoryStore.open(root) as s:
        assert mem_id in in_chroma(s) and not s.catalog.unsynced_among([mem_id])


def test_the_embedder_leaves_a_requests_own_rows_to_it_while_it_encodes(deferring, monkeypatch):
    """Between its catalog row and its vector, a store encodes without the state lock. The watcher's
    embedder, looking then, must leave that row to it (it upserted each alone, beside the request's
    own encode, ~10 ms of Chroma's time a store); once the store returns, the row is the flusher's."""
    import threading

    s = deferring
    monkeypatch.setattr(vector_writes, "DEFER_SECONDS", 30)
    encoding, go_on = threading.Event(), threading.Event()
    real = s.embedder.embed

    def slow_embed(texts):
        encoding.set()
        assert go_on.wait(30)
        return real(texts)

    monkeypatch.setattr(s.embedder, "embed", slow_embed)
    added = []
    store = threading.Thread(target=lambda: added.append(s.add("the on-call rota moves to Tuesdays").memory))
    store.start()
    assert encoding.wait(30)
    # Mid-store (the encoder runs ahead of the file and the row): once the row is in the catalog,
    # unsynced, the embedder finds nothing to do.
    def row_in_catalog() -> bool:
        with s.mutex:  # released by the store while it waits for its encode
            return len(s.catalog.unsynced_paths()) == 1

    wait_until(row_in_catalog, timeout=30, what="the store's catalog row")
    assert s.pending_vectors() == []
    assert s.embed_pending([r[0] for r in s.catalog.unsynced_paths()]).vectors_written == 0
    go_on.set()
    store.join(30)
    m = added[0]
    assert s.search("when is the on-call rotation", k=1, mode="semantic")[0].memory.id == m.id
    assert s.pending_vectors() == [] and m.id not in in_chroma(s)  # the flusher's, not the embedder's
    s.writer.flush_soon()
    assert m.id in in_chroma(s) and not s.catalog.unsynced_among([m.id])


def test_a_failed_store_leaves_its_rows_to_the_embedder(deferring, monkeypatch):
    """If the request's encode fails, its rows are no longer claimed: the embedder takes them."""
    s = deferring

    def broken(texts):
        raise RuntimeError("the model failed")

    monkeypatch.setattr(s.embedder, "embed", broken)
    with pytest.raises(RuntimeError):
        s.add("a note whose encode fails the first time")
    monkeypatch.undo()
    pending = s.pending_vectors()
    assert len(pending) == 1
    assert s.embed_pending([pending[0][0]]).vectors_written == 1
