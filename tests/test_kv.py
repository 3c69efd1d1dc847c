"""Key/value in memfs's model (issue #13): (namespace, key) unique, TTL enforced at once and swept,
reads counted in the catalog and never by rewriting files. Real model, real Chroma, real files."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import orjson
import pytest

from memfs import MemoryStore, kv
from memfs.documents import utcnow
from memfs.errors import InvalidDocumentError, NotFoundError
from memfs.query import Filters


def test_values_of_every_json_type_round_trip(store):
    values = {"s": "plain text", "empty": "", "blank": "  ", "i": 42, "f": 2.5, "t": True, "f0": False,
              "none": None, "list": [1, "two", {"three": 3}], "obj": {"theme": "dark", "n": [1, 2]}}
    for key, value in values.items():
        kv.kv_set(store, key, value)
    for key, value in values.items():
        item = kv.kv_get(store, key)
        assert item.value == value and type(item.value) is type(value)
    # a text value is the memory's content as written, so it is searchable as such
    assert store.search("plain text", k=1, mode="keyword")[0].memory.key == "s"
    assert kv.kv_get(store, "obj").type == "dict" and kv.kv_get(store, "none").type == "none"
    item = kv.kv_get(store, "obj", touch=False)
    assert kv.KVItem.from_dict(orjson.loads(orjson.dumps(item.to_dict()))) == item  # through the owner and back


def test_namespace_and_key_are_unique(store):
    first = kv.kv_set(store, "db/engine", "postgres")
    second = kv.kv_set(store, "db/engine", "postgres 16", ttl=3600)
    assert second.id == first.id  # the same memory, rewritten in place
    assert kv.kv_get(store, "db/engine").value == "postgres 16"
    assert len(store.catalog.ids_for_key("default", "db/engine")) == 1
    other = kv.kv_set(store, "db/engine", "sqlite", namespace="tests")
    assert other.id != first.id
    assert [(i.namespace, i.key, i.value) for i in kv.kv_list(store, namespace=None)] == [
        ("default", "db/engine", "postgres 16"), ("tests", "db/engine", "sqlite")]
    assert store.catalog.count() == 2
    with pytest.raises(InvalidDocumentError):
        kv.kv_set(store, "  ", "no key")


def test_hand_written_duplicate_keys_serve_the_newest(store):
    d = store.layout.memories / "inbox"
    d.mkdir()
    for name, content, updated in (("a", "old value", "2024-01-01T00:00:00Z"), ("b", "new value", "2025-01-01T00:00:00Z")):
        (d / f"{name}.json").write_bytes(orjson.dumps({"content": content, "namespace": "default", "key": "dup",
                                                       "updated_at": updated}))
    store.reconcile()
    assert kv.kv_get(store, "dup").value == "new value"
    assert [i.value for i in kv.kv_list(store)] == ["new value"]
    kv.kv_set(store, "dup", "fixed")  # writes the newest; removing the stray is the person's call
    assert kv.kv_get(store, "dup").value == "fixed"
    assert kv.kv_rm(store, "dup") and not kv.kv_list(store)  # rm takes every holder of the key


def test_ttl_expiry_is_immediate_and_the_sweep_removes_and_logs(store, caplog):
    kv.kv_set(store, "session/token", "short lived session token for the build agent", ttl=1)
    kv.kv_set(store, "keep", "a value without expiry")
    item = kv.kv_get(store, "session/token")
    path = store.path_of(item.id)
    assert item.expires_at is not None and path.exists()
    time.sleep(1.2)
    with pytest.raises(NotFoundError):
        kv.kv_get(store, "session/token")
    with pytest.raises(NotFoundError):
        store.get(item.id)
    assert [i.key for i in kv.kv_list(store)] == ["keep"]
    assert item.id not in [e.memory.id for e in store.list(Filters())]
    for mode in ("semantic", "keyword", "hybrid"):
        assert item.id not in [h.memory.id for h in store.search("session token build agent", k=5, mode=mode)]
    assert path.exists()  # gone from every read at once; the file waits for the sweep
    with caplog.at_level(logging.INFO, logger="memfs"):
        removed = kv.sweep_expired(store)
    assert [m.id for m in removed] == [item.id] and not path.exists()
    assert any("expired: removed" in r.message and item.id in r.message for r in caplog.records)
    assert store.catalog.count() == 1 and item.id not in store.vectors.ids()
    # the key is free again
    assert kv.kv_set(store, "session/token", "renewed").value == "renewed"


def test_the_sweep_spares_a_file_edited_to_live_longer(store):
    item = kv.kv_set(store, "k", "value", ttl=3600)
    path = store.path_of(item.id)
    doc = orjson.loads(path.read_bytes())
    doc["expires_at"] = (utcnow() + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_bytes(orjson.dumps(doc))  # edited by hand, not yet reconciled
    assert kv.sweep_expired(store, now=utcnow() + timedelta(hours=2)) == []
    assert path.exists()


def test_reads_are_counted_in_the_catalog_not_in_the_file(store):
    item = kv.kv_set(store, "counter", "read me")
    path = store.path_of(item.id)
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    for _ in range(3):
        got = kv.kv_get(store, "counter")
    assert got.access_count == 3 and got.accessed_at is not None
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert kv.kv_get(store, "counter", touch=False).access_count == 3
    # kept across a reindex, a move of the file, and an edit of the value
    store.reconcile()
    moved = store.layout.memories / "moved.json"
    path.rename(moved)
    store.reconcile()
    kv.kv_set(store, "counter", "read me again")
    assert kv.kv_get(store, "counter", touch=False).access_count == 3


def test_kv_through_store_methods_and_reopen(root):
    with MemoryStore.open(root, create=True) as s:
        s.kv_set("a", {"x": 1}, namespace="n1", tags=["cfg"])
        assert s.kv_get("a", namespace="n1").value == {"x": 1}
        assert [i.key for i in s.kv_list(namespace="n1")] == ["a"]
    with MemoryStore.open(root) as s:
        s.reconcile()
        assert s.kv_get("a", namespace="n1").access_count == 2
        assert "cfg" in s.get(s.kv_get("a", namespace="n1").id).tags
        assert s.kv_rm("a", namespace="n1")
        with pytest.raises(NotFoundError):
            s.kv_rm("a", namespace="n1")
