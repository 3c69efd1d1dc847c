"""Import from every source format, export in both formats, dedup, dry-run, provenance, migration
records (issue #13). Sources are written by tests/source_fixtures.py in each system's real schema;
the store behind them is real (model, Chroma, files)."""

from __future__ import annotations

import hashlib
import io
import os
import sqlite3
import sys
import tracemalloc
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from conftest import filler_texts  # noqa: E402
from memfs import MemoryStore, export, importers, kv, migrations  # noqa: E402
from memfs.catalog import Catalog  # noqa: E402
from memfs.catalog_rows import vector_fingerprint  # noqa: E402
from memfs.errors import NotFoundError  # noqa: E402
from memfs.importers import SourceError  # noqa: E402
from source_fixtures import (write_extended_memory_db, write_kg_jsonl, write_mms_json,  # noqa: E402
                             write_mms_sqlite, write_swarm_db)

T0 = 1_717_200_000  # 2024-06-01T00:00:00Z


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture
def sources(tmp_path) -> dict[str, Path]:
    d = tmp_path / "sources"
    swarm = write_swarm_db(d / "project" / ".swarm" / "memory.db", [
        {"key": "auth/decision", "value": "We use OAuth2 with PKCE for the mobile app", "namespace": "architecture",
         "metadata": {"agent": "architect"}, "created_at": T0, "access_count": 7, "accessed_at": T0 + 50},
        {"key": "task/42", "value": {"status": "done", "owner": "coder-1"}, "namespace": "tasks", "created_at": T0 + 60},
        {"key": "session/old", "value": "stale session notes", "namespace": "sessions", "created_at": 1000, "ttl": 60},
        {"key": "cache/warm", "value": "warm the CDN cache before the launch", "namespace": "default",
         "created_at": T0, "ttl": 10 ** 9},
    ])
    em = write_extended_memory_db(d / "extended_memory.db",
                                  {"user_settings": {"theme": "dark", "lang": "en"}, "retries": 3, "ratio": 0.25,
                                   "enabled": True, "nothing": None, "greeting": "hello there", "queue": [1, 2, 3]},
                                  pickled={"legacy_set": {1, 2, 3}})
    kg = write_kg_jsonl(d / "memory.jsonl",
                        [{"name": "Alice", "entityType": "person", "observations": ["prefers tea", "works on billing"]},
                         {"name": "Billing", "entityType": "service", "observations": ["owns invoices"]}],
                        [{"from": "Alice", "to": "Billing", "relationType": "maintains"}])
    mms_json = write_mms_json(d / "laptop_export.json", [
        {"content": "Deploys are frozen on Fridays after 3pm", "tags": ["ops", "policy"], "memory_type": "decision",
         "created_at": T0 + 3600.5, "metadata": {"origin": "retro"}},
        {"content": "The staging database is restored every Monday", "tags": ["ops"], "created_at": T0 + 7200},
    ])
    mms_sqlite = write_mms_sqlite(d / "sqlite_vec.db", [
        {"content": "Error E4417 means the disk is full on the ingest node", "tags": ["errors", "disk"],
         "memory_type": "incident", "created_at": T0 + 100.25},
        {"content": "Rotate the API keys every 90 days", "tags": ["security"], "created_at": T0 + 200},
    ])
    return {"swarm": swarm, "extended-memory": em, "kg-jsonl": kg, "mms-json": mms_json, "mms-sqlite": mms_sqlite}


def test_formats_are_detected_from_content(sources):
    for fmt, path in sources.items():
        assert importers.detect_format(importers.resolve_path(path)) == fmt
    # a claude-flow project folder means its .swarm/memory.db
    assert importers.resolve_path(sources["swarm"].parent.parent) == sources["swarm"]


def test_import_every_format_keeps_times_and_provenance_and_twice_adds_nothing(store, sources):
    before = {name: fingerprint(p) for name, p in sources.items()}
    report = importers.import_sources(store, sources.values())
    by_fmt = {s.format: s for s in report.sources}
    assert {f: (s.read, s.new, s.expired, s.invalid) for f, s in by_fmt.items()} == {
        "swarm": (4, 3, 1, 0), "extended-memory": (8, 8, 0, 0), "kg-jsonl": (3, 3, 0, 0),
        "mms-json": (2, 2, 0, 0), "mms-sqlite": (2, 2, 0, 0)}
    assert all(s.status == "completed" and s.record_id for s in report.sources)
    assert store.catalog.count() == 18

    # key/value sources: values of every JSON type come back as they were
    assert kv.kv_get(store, "user_settings").value == {"theme": "dark", "lang": "en"}
    assert [kv.kv_get(store, k).value for k in ("retries", "ratio", "enabled", "nothing", "greeting", "queue")] == \
        [3, 0.25, True, None, "hello there", [1, 2, 3]]
    legacy = kv.kv_get(store, "legacy_set")  # pickled: kept opaque, never unpickled
    assert legacy.value_type == "base64-pickle" and legacy.warning and isinstance(legacy.value, str)
    assert any("never unpickles" in w for w in by_fmt["extended-memory"].warnings)
    decision = kv.kv_get(store, "auth/decision", namespace="architecture")
    assert decision.value == "We use OAuth2 with PKCE for the mobile app"
    assert decision.created_at == datetime.fromtimestamp(T0, timezone.utc)
    assert decision.access_count == 7 + 1  # carried over from the source, plus this read
    assert kv.kv_get(store, "task/42", namespace="tasks").value == {"status": "done", "owner": "coder-1"}
    with pytest.raises(NotFoundError):  # expired in the source: not imported
        kv.kv_get(store, "session/old", namespace="sessions")
    assert kv.kv_get(store, "cache/warm").expires_at == datetime.fromtimestamp(T0 + 10 ** 9, timezone.utc)

    # provenance: a source:<name> tag and `source` naming the file and the record
    m = store.get(decision.id)
    assert "source:claude-flow" in m.tags
    assert m.source == f"{sources['swarm'].resolve()}#memory_entries id=1"
    incident = next(e.memory for e in store.list() if "E4417" in e.memory.content)
    assert incident.created_at == datetime.fromtimestamp(T0 + 100.25, timezone.utc)
    assert incident.type == "incident" and {"errors", "disk", "source:mcp-memory-service"} <= set(incident.tags)
    assert incident.source.endswith("sqlite_vec.db#memories id=1")
    friday = store.search("when are deploys frozen", k=1, mode="semantic")[0].memory
    assert friday.content.startswith("Deploys are frozen") and friday.metadata["origin"] == "retro"
    assert kv.kv_get(store, "entity:Alice", namespace="kg").value.startswith("Alice (person)\nprefers tea")

    # the sources were only read
    assert {name: fingerprint(p) for name, p in sources.items()} == before
    # not even a journal, -wal or -shm beside them
    assert sorted(f.name for f in sources["swarm"].parent.iterdir()) == ["memory.db"]
    assert not any(p.with_name(p.name + suffix).exists() for p in sources.values() for suffix in ("-journal", "-shm"))

    # the same import again adds nothing
    files = snapshot(store.layout.memories.parent / "memories")
    again = importers.import_sources(store, sources.values())
    assert sum(s.new + s.updated for s in again.sources) == 0
    assert sum(s.duplicate for s in again.sources) == 18
    assert store.catalog.count() == 18
    after = {k: v for k, v in snapshot(store.layout.memories).items() if not k.startswith(".migrations/")}
    assert after == {k: v for k, v in files.items() if not k.startswith(".migrations/")}


def test_dry_run_counts_per_source_and_writes_nothing(store, sources):
    store.add("Deploys are frozen on Fridays after 3pm")  # already here: a duplicate
    store.catalog.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = snapshot(store.layout.data)
    report = importers.import_sources(store, sources.values(), dry_run=True)
    assert snapshot(store.layout.data) == before  # data/ byte-identical: no memory, no row, no record
    assert report.dry_run and all(s.status == "dry-run" and s.record_id is None for s in report.sources)
    mms = next(s for s in report.sources if s.format == "mms-json")
    assert (mms.new, mms.duplicate) == (1, 1)
    assert sum(s.new for s in report.sources) == 17
    assert not migrations.history(store.layout)
    text = importers.format_report(report)
    assert "dry run: would import 17 of 19 records from 5 source(s)" in text
    assert "new 1, duplicate 1, updated 0, invalid 0" in text


def test_namespace_option_no_dedup_and_updates(store, tmp_path):
    a = write_swarm_db(tmp_path / "a" / "memory.db", [{"key": "k", "value": "from project a", "namespace": "default"},
                                                      {"key": "k", "value": "tasks of a", "namespace": "tasks"}])
    b = write_swarm_db(tmp_path / "b" / "memory.db", [{"key": "k", "value": "from project b", "namespace": "default"}])
    importers.import_sources(store, [a], namespace="proj-a")
    importers.import_sources(store, [b], namespace="proj-b")
    assert kv.kv_get(store, "k", namespace="proj-a").value == "from project a"
    assert kv.kv_get(store, "k", namespace="proj-a/tasks").value == "tasks of a"
    assert kv.kv_get(store, "k", namespace="proj-b").value == "from project b"
    # the same key with new content in the source: the memory is updated in place
    before = kv.kv_get(store, "k", namespace="proj-b")
    with sqlite3.connect(b) as db:
        db.execute("UPDATE memory_entries SET value = 'from project b, revised', updated_at = ?", (T0 + 10 ** 8,))
    r = importers.import_sources(store, [b], namespace="proj-b").sources[0]
    assert (r.new, r.updated) == (0, 1)
    after = kv.kv_get(store, "k", namespace="proj-b")
    assert after.id == before.id and after.value == "from project b, revised"

    twice = write_mms_json(tmp_path / "dups.json", [{"content": "same words"}, {"content": "same words"}])
    assert importers.import_sources(store, [twice]).sources[0].new == 1
    assert importers.import_sources(store, [twice], dedup=False).sources[0].new == 2
    assert sum(e.memory.content == "same words" for e in store.list()) == 3


def test_invalid_records_are_reported_with_location_and_never_stop_the_rest(store, tmp_path):
    swarm = write_swarm_db(tmp_path / "memory.db", [
        {"key": "good", "value": "a valid memory about caching"},
        {"key": "blank", "value": "   "},
        {"key": "bad-meta", "value": "metadata is broken", "metadata": None},
        {"key": "also-good", "value": "another valid memory about queues"},
    ])
    with sqlite3.connect(swarm) as db:  # a row another program wrote badly
        db.execute("UPDATE memory_entries SET metadata = '{not json' WHERE key = 'bad-meta'")
    kg = tmp_path / "memory.jsonl"
    kg.write_text('{"type":"entity","name":"A","entityType":"x","observations":["ok"]}\n{broken\n'
                  '{"type":"relation","from":"A","to":"B","relationType":"knows"}\n')
    report = importers.import_sources(store, [swarm, kg])
    sw, k = report.sources
    assert (sw.new, sw.invalid) == (2, 2) and (k.new, k.invalid) == (2, 1)
    assert [(r.location, r.reason) for r in sw.invalid_records] == [
        ("memory_entries id=2", "'value' is empty"),
        ("memory_entries id=3", "'metadata' is not JSON: '{not json'")]
    assert k.invalid_records[0].location == "line 2"
    assert report.problems
    record = migrations.load(store.layout, sw.record_id)
    assert record["counts"]["invalid"] == 2 and record["invalid_records"][0]["location"] == "memory_entries id=2"


def test_a_corrupt_or_locked_source_imports_nothing(store, tmp_path):
    corrupt = write_extended_memory_db(tmp_path / "corrupt.db", {f"k{i}": "v" * 500 for i in range(200)})
    data = bytearray(corrupt.read_bytes())
    data[8192:12288] = os.urandom(4096)  # a page in the middle of the table
    corrupt.write_bytes(bytes(data))
    with pytest.raises(SourceError, match="nothing was imported"):
        importers.import_sources(store, [corrupt], format="extended-memory")
    assert store.catalog.count() == 0

    locked = write_extended_memory_db(tmp_path / "locked.db", {"a": "value a", "b": "value b"})
    holder = sqlite3.connect(locked, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another program mid-write (rollback journal, as the service runs)
    try:
        with pytest.raises(SourceError, match="locked by another process"):
            importers.import_sources(store, [locked])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store.catalog.count() == 0 and not migrations.history(store.layout)

    good = write_extended_memory_db(tmp_path / "good.db", {"fine": "a fine value"})
    with pytest.raises(SourceError):  # a bad source among good ones: nothing from any of them
        importers.import_sources(store, [good, corrupt], format="extended-memory")
    assert store.catalog.count() == 0 and not migrations.history(store.layout)

    not_a_db = tmp_path / "notes.json"
    not_a_db.write_text('{"memories": [}')
    with pytest.raises(SourceError):
        importers.import_sources(store, [not_a_db], format="memfs")


def test_source_vectors_are_reused_only_when_they_are_this_models(store, tmp_path):
    texts = ["The payment service retries failed charges three times",
             "Night builds publish artifacts to the internal registry",
             "On-call engineers rotate every Tuesday at noon",
             "Customer exports are limited to 10,000 rows",
             "Feature flags are cleaned up after each release",
             "The search cluster runs on three dedicated nodes"]
    same = store.embedder.embed(texts)  # what mcp-memory-service with all-MiniLM-L6-v2 would have stored
    src = write_mms_sqlite(tmp_path / "same" / "sqlite_vec.db", [{"content": t} for t in texts], same)
    encoded = store.embedder.embedded
    report = importers.import_sources(store, [src]).sources[0]
    # a foreign source's vectors are proven only by embedding every text: compared, then ours stored
    assert report.vectors_carried == 6 and report.vectors_reused == 0
    assert "6 matched" in report.vector_check and "did not" not in report.vector_check
    assert store.embedder.embedded - encoded == 6  # each record once: the check's vectors are the ones stored
    assert store.search("how often do on-call shifts change", k=1)[0].memory.content.startswith("On-call")

    rng = np.random.default_rng(7)
    other = rng.normal(size=(2, 384)).astype(np.float32)  # another model's 384-dim space
    src2 = write_mms_json(tmp_path / "other.json", [{"content": "Backups are encrypted with age"},
                                                     {"content": "Logs are kept for thirty days"}], other)
    r2 = importers.import_sources(store, [src2]).sources[0]
    assert r2.vectors_reused == 0 and "2 did not" in r2.vector_check
    cached = store.vectors_for([hashlib.sha256(b"Backups are encrypted with age").hexdigest()])
    assert float(next(iter(cached.values())) @ (other[0] / np.linalg.norm(other[0]))) < 0.5


def test_export_then_import_into_an_empty_store_gives_the_same_memories(store, tmp_path):
    store.add_many([
        {"content": "User prefers dark theme", "tags": ["ui", "prefs"], "created_at": "2024-06-01T09:00:00Z"},
        {"content": "Incident 2024-07: the queue filled up", "type": "incident", "metadata": {"sev": 2},
         "created_at": "2024-07-03T10:11:12.345678Z", "updated_at": "2024-07-04T08:00:00Z", "source": "pagerduty"},
    ])
    kv.kv_set(store, "feature/x", {"enabled": True}, namespace="flags", ttl=3600)
    kv.kv_get(store, "feature/x", namespace="flags")
    out = tmp_path / "export.json"
    with open(out, "wb") as f:
        rep = export.export(store, f, include_embeddings=True)
    assert rep.count == 3 and orjson.loads(out.read_bytes())["count"] == 3

    with MemoryStore.open(tmp_path / "empty", create=True) as fresh:
        encoded = fresh.embedder.embedded
        r = importers.import_sources(fresh, [out]).sources[0]
        assert (r.format, r.new, r.vectors_reused) == ("memfs", 3, 3)
        assert fresh.embedder.embedded - encoded == 0  # every vector proven by its embedding_sha256
        a = {e.memory.id: e.memory for e in store.list()}
        b = {e.memory.id: e.memory for e in fresh.list()}
        assert a == b  # ids, timestamps, tags, content, metadata, namespace/key/expiry: all the same
        assert kv.kv_get(fresh, "feature/x", namespace="flags").access_count == 2  # carried, plus this read
        again = importers.import_sources(fresh, [out]).sources[0]
        assert (again.new, again.duplicate) == (0, 3)

    # One record twice in a file (same id, same content) is the same memory twice, --no-dedup or not:
    # a duplicate, not an id "used by a memory with other content".
    doubled = orjson.loads(out.read_bytes())
    doubled["memories"].append(doubled["memories"][0])
    doubled["count"] += 1
    (tmp_path / "doubled.json").write_bytes(orjson.dumps(doubled))
    with MemoryStore.open(tmp_path / "empty2", create=True) as fresh:
        r = importers.import_sources(fresh, [tmp_path / "doubled.json"], dedup=False).sources[0]
        assert (r.new, r.duplicate, r.invalid) == (3, 1, 0)


def test_mms_export_has_what_mcp_memory_service_importer_reads_and_comes_back(store, tmp_path):
    """mcp-memory-service cannot be installed here (torch/sqlite-vec/MCP stack); this replays the field
    reads of its src/mcp_memory_service/sync/importer.py (_import_single_file and
    _create_memory_from_dict) on our export."""
    store.add_many([{"content": "Prefer Postgres for new services", "tags": ["db"], "type": "decision"},
                    {"content": "The VPN drops idle sessions after 8h", "tags": ["net", "vpn"]}])
    kv.kv_set(store, "build/cache", "enabled on CI", namespace="ci")
    buf = io.BytesIO()
    export.export(store, buf, format="mms", filter_tags=["db", "vpn"])
    data = orjson.loads(buf.getvalue())
    # importer.py: validate the format, then read each memory's fields as it does
    assert "export_metadata" in data and "memories" in data
    assert data["export_metadata"]["total_memories"] == len(data["memories"]) == 2
    source_machine = data["export_metadata"].get("source_machine", "unknown")
    assert isinstance(source_machine, str)
    for md in data["memories"]:
        assert md.get("content_hash") == export.mms_content_hash(md["content"])  # its own rule: strip().lower()
        tags = md.get("tags", []).copy()
        assert all(isinstance(t, str) for t in tags)
        metadata = md.get("metadata", {}).copy()
        assert isinstance(metadata, dict)
        assert isinstance(md["created_at"], float) and isinstance(md.get("updated_at", md["created_at"]), float)
        assert isinstance(md.get("memory_type", "note"), str)
    # and memfs reads its own mms export back, ids included
    buf = io.BytesIO()
    export.export(store, buf, format="mms")
    (tmp_path / "mms.json").write_bytes(buf.getvalue())
    with MemoryStore.open(tmp_path / "back", create=True) as back:
        r = importers.import_sources(back, [tmp_path / "mms.json"], source_tag="laptop").sources[0]
        assert r.new == 3
        ours = {e.memory.id: (e.memory.content, e.memory.namespace, e.memory.key) for e in store.list()}
        theirs = {e.memory.id: (e.memory.content, e.memory.namespace, e.memory.key) for e in back.list()}
        assert ours == theirs
        assert all("source:laptop" in e.memory.tags for e in back.list())


def test_migration_records_history_and_verify(store, sources, tmp_path):
    report = importers.import_sources(store, [sources["swarm"], sources["mms-json"]])
    history = migrations.history(store.layout)
    assert [h["source"]["format"] for h in history] == ["swarm", "mms-json"]
    rec = history[0]
    assert rec["source"]["sha256"] == hashlib.sha256(sources["swarm"].read_bytes()).hexdigest()
    assert rec["status"] == "completed" and rec["counts"] == {"read": 4, "new": 3, "duplicate": 0, "updated": 0,
                                                              "invalid": 0, "expired": 1}
    assert rec["started_at"] <= rec["ended_at"]
    # kept with the data: inside memories/ (so backups carry it), never read as a memory
    assert (store.layout.memories / ".migrations" / f"{rec['id']}.json").is_file()
    store.reconcile()
    assert store.catalog.count() == 5
    import tarfile

    from memfs.backups import create_backup

    with tarfile.open(create_backup(store.layout).path) as tar:
        assert f"data/memories/.migrations/{rec['id']}.json" in tar.getnames()

    ok = migrations.verify(store, rec["id"])
    assert ok.ok and ok.checked == ok.present == 3 and not ok.source_changed and ok.records_sha256_matches

    gone = kv.kv_get(store, "task/42", namespace="tasks")
    store.remove(gone.id)
    bad = migrations.verify(store, report.sources[0].record_id[:20])  # a unique prefix will do
    assert not bad.ok and bad.missing == ["memory_entries id=2"]
    with pytest.raises(NotFoundError):
        migrations.verify(store, "no-such-record")


def test_export_streams_in_constant_memory(tmp_path):
    """Plumbing, not meaning: a fake embedder (hash to one-hot) fills the store quickly."""

    class OneHotEmbedder:  # fake: vectors carry no meaning
        model_id, dim, embedded = "fake-one-hot", 384, 0

        def embed(self, texts):
            out = np.zeros((len(texts), 384), np.float32)
            for i, t in enumerate(texts):
                out[i, hashlib.sha256(t.encode()).digest()[0] % 384] = 1
            return out

    def peak_for(n: int) -> int:
        with MemoryStore.open(tmp_path / f"s{n}", create=True, embedder=OneHotEmbedder()) as s:
            s.add_many([{"content": f"memory number {i} about topic {i % 97} " + "x" * 300} for i in range(n)])
            sink = open(os.devnull, "wb")
            tracemalloc.start()
            rep = export.export(s, sink)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert rep.count == n
            return peak

    small, big = peak_for(500), peak_for(3000)
    assert big < small * 1.5  # six times the memories, not six times the memory


def test_catalog_v1_is_migrated_in_place(tmp_path):
    path = tmp_path / "catalog.sqlite"
    db = sqlite3.connect(path)
    from memfs import catalog_schema as cat

    db.executescript(cat.SCHEMA)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    body = orjson.dumps({"format": "memfs.memory/1", "id": "a", "tags": [], "type": "kv", "namespace": "ns",
                         "key": "k", "metadata": {}, "created_at": "2024-01-01T00:00:00Z",
                         "updated_at": "2024-01-01T00:00:00Z", "expires_at": "2030-01-01T00:00:00Z"})
    db.execute("INSERT INTO docs(id, path, hash, size, mtime_ns, ino, type, created_ts, updated_ts, content, body, vec_fp)"
               " VALUES ('a', 'a.json', 'h', 1, 1, 1, 'kv', 0, 0, 'v', ?, 'fp')", (body,))
    db.commit()
    db.close()
    c = Catalog(path)
    assert c.get_meta("schema_version") == str(cat.SCHEMA_VERSION)
    assert c.ids_for_key("ns", "k") == ["a"]
    assert c.db.execute("SELECT expires_ts FROM docs").fetchone()[0] == datetime(2030, 1, 1, tzinfo=timezone.utc).timestamp()
    c.close()


def test_catalog_v3_keeps_each_rows_sync_state_its_cache_only_for_waiting_rows_and_is_compacted(tmp_path, store):
    """Migrations 4 and 5 (issue #26): fingerprints become digests without a row changing state, the
    cache keeps only the vectors of rows still waiting for the index, and the file is VACUUMed once."""
    from memfs import catalog_schema as cat

    records = store.add_many({"content": t, "tags": ["x"]} for t in filler_texts(6))
    store.update(records[0].memory.id, tags=["y"])
    path = store.layout.indexes / "catalog.sqlite"
    store.close()
    db = sqlite3.connect(path, isolation_level=None)
    state = dict(db.execute("SELECT id, synced_fp IS vec_fp FROM docs"))
    old_fp = {i: orjson.dumps([h, t, c, orjson.loads(tags)]).decode() for i, h, t, c, tags in db.execute(
        "SELECT d.id, d.hash, d.type, d.created_ts, json_group_array(g.tag) FROM docs d"
        " JOIN doc_tags g ON g.doc = d.rowid GROUP BY d.id")}
    db.execute("UPDATE docs SET vec_fp = ?, synced_fp = ? WHERE id = ?", (old_fp[records[1].memory.id],) * 2
               + (records[1].memory.id,))  # as a version-3 memfs wrote them, whole
    db.execute("UPDATE docs SET vec_fp = ?, synced_fp = 'an older one' WHERE id = ?",
               (old_fp[records[2].memory.id], records[2].memory.id))  # waiting for the index
    state[records[2].memory.id] = 0
    hashes = dict(db.execute("SELECT id, hash FROM docs"))
    db.executemany("INSERT OR REPLACE INTO embed_cache VALUES ('m', ?, zeroblob(1536))", [(h,) for h in hashes.values()])
    db.execute("PRAGMA auto_vacuum = NONE")
    db.execute("VACUUM")
    db.execute("UPDATE meta SET value = '3' WHERE key = 'schema_version'")
    db.close()
    c = Catalog(path)
    try:
        assert c.get_meta("schema_version") == str(cat.SCHEMA_VERSION)
        assert dict(c.db.execute("SELECT id, synced_fp IS vec_fp FROM docs")) == state
        assert {len(fp) for (fp,) in c.db.execute("SELECT vec_fp FROM docs")} == {16}
        assert c.db.execute("SELECT vec_fp FROM docs WHERE id = ?", (records[1].memory.id,)).fetchone()[0] == \
            vector_fingerprint(records[1].memory)  # what a reconcile computes: the row is not written again
        assert [h for (h,) in c.db.execute("SELECT hash FROM embed_cache")] == [hashes[records[2].memory.id]]
        assert c.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    finally:
        c.close()


def test_pickled_values_are_never_unpickled(store, tmp_path, monkeypatch):
    import pickle

    class Exploit:  # what a hostile old store could hold: unpickling it would run code
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    src = write_extended_memory_db(tmp_path / "em.db", {"plain": "text"}, pickled={"evil": Exploit()})

    def refuse(*a, **k):
        raise AssertionError("memfs called pickle.loads")

    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    report = importers.import_sources(store, [src]).sources[0]
    assert report.new == 2 and not (tmp_path / "pwned").exists()
    item = kv.kv_get(store, "evil")
    assert item.value_type == "base64-pickle" and item.type == "pickle" and "never unpickles" in item.warning
