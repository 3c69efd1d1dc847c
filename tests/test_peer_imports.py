"""Import from files the real peers wrote (issue #25): tests/fixtures/peers/, made by
scripts/make-peer-fixtures.sh with the versions in its VERSIONS file. The store is real (model, Chroma,
files); the round trip into mcp-memory-service runs its own importer in its own venv."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from memfs import MemoryStore, export, importers, migrations, source_readers  # noqa: E402
from memfs.errors import InvalidDocumentError  # noqa: E402
from source_fixtures import write_extended_memory_db, write_mms_json  # noqa: E402

PEERS = Path(__file__).parent / "fixtures" / "peers"
ROOT = Path(__file__).parent.parent


def by_content(store) -> dict:
    return {e.memory.content: e.memory for e in store.list()}


# -- mcp-memory-service 12.4.0 -----------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["mms-sqlite_vec.db", "mms-export.json"])
def test_mms_only_live_versions_with_store_partition_and_export_source(store, fixture):
    """Its versioned update leaves the old version in the table (superseded_by set) and its exporter
    writes both: only the live one is a memory. Its `store` partition becomes the namespace."""
    report = importers.import_sources(store, [PEERS / fixture]).sources[0]
    mems = by_content(store)
    assert report.new == 6 and report.invalid == 0
    assert "Rotate the API keys every 90 days" not in mems  # superseded by the 60-day version
    assert mems["Rotate the API keys every 60 days"].namespace == "work"
    assert mems["Error E4417 means the disk is full on the ingest node"].namespace == "work"
    assert mems["Deploys are frozen on Fridays after 3pm"].namespace is None  # its `default` store
    assert mems["Deploys are frozen on Fridays after 3pm"].metadata["origin"] == "retro"
    assert any("superseded" in w for w in report.warnings)
    if fixture.endswith(".json"):
        assert {m.metadata.get("export_source") for m in mems.values()} == {"vm"}  # the machine it came from


def mms_python() -> str | None:
    for candidate in (os.environ.get("MEMFS_MMS_PYTHON"), "/tmp/memfs-peers/mms-venv/bin/python"):
        if candidate and Path(candidate).is_file():
            ok = subprocess.run([candidate, "-c", "import sqlite3, mcp_memory_service; "
                                 "sqlite3.connect(':memory:').enable_load_extension(True)"], capture_output=True)
            if ok.returncode == 0:
                return candidate
    return None


def test_our_mms_export_adds_nothing_to_the_mms_store_it_came_from(store, tmp_path):
    """memfs ← mcp-memory-service's database; memfs → mms export → its own importer, into that same
    database: 0 rows added (its dedup hashes strip().lower() of the content)."""
    py = mms_python()
    if py is None:
        pytest.skip("mcp-memory-service is not installed: run scripts/make-peer-fixtures.sh mms "
                    "(or set MEMFS_MMS_PYTHON to a python that has it)")
    importers.import_sources(store, [PEERS / "mms-sqlite_vec.db"])
    out = tmp_path / "memfs-mms.json"
    with open(out, "wb") as f:
        export.export(store, f, format="mms")
    db = tmp_path / "sqlite_vec.db"
    shutil.copy(PEERS / "mms-sqlite_vec.db", db)
    run = subprocess.run([py, str(ROOT / "scripts" / "peers" / "mms_import.py"), str(db), str(out)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "MCP_MEMORY_ALLOW_HASH_EMBEDDINGS": "1", "MCP_MEMORY_USE_ONNX": "0"})
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["before"] == 6 and result["after"] == 6, result


def test_memfs_through_mms_format_keeps_source_and_adds_no_tag(store, tmp_path):
    store.add_many([{"content": "  Prefer Postgres for new services ", "source": "pagerduty#42", "tags": ["db"]}])
    buf = io.BytesIO()
    export.export(store, buf, format="mms")
    item = orjson.loads(buf.getvalue())["memories"][0]
    assert item["content_hash"] == export.mms_content_hash("prefer postgres for new services")
    (tmp_path / "mms.json").write_bytes(buf.getvalue())
    with MemoryStore.open(tmp_path / "back", create=True) as back:
        importers.import_sources(back, [tmp_path / "mms.json"])
        (m,) = [e.memory for e in back.list()]
        assert m.source == "pagerduty#42" and list(m.tags) == ["db"]


# -- the MCP reference memory server 2026.8.31 --------------------------------------------------------


def test_kg_relations_with_pipes_in_names_do_not_collide(store):
    report = importers.import_sources(store, [PEERS / "kg-memory.jsonl"]).sources[0]
    relations = {m.key: m for m in by_content(store).values() if m.type == "relation"}
    assert report.new == 10 and len(relations) == 4
    assert relations['relation:["A|x", "y", "B"]'].metadata == {"from": "A|x", "to": "B", "relationType": "y"}
    assert relations['relation:["A", "x|y", "B"]'].metadata == {"from": "A", "to": "B", "relationType": "x|y"}
    assert relations['relation:["Zoë \\"quoted\\"", "mentors", "Alice"]'].content == 'Zoë "quoted" mentors Alice'
    assert migrations.verify(store, report.record_id).ok


def test_verify_compares_every_record_and_a_lost_one_is_never_ok(store, monkeypatch):
    # the old key (parts joined by |, unescaped) loses one of the two relations at import...
    monkeypatch.setattr(source_readers, "relation_key", lambda s, r, d: f"relation:{s}|{r}|{d}")
    report = importers.import_sources(store, [PEERS / "kg-memory.jsonl"]).sources[0]
    assert report.new == 9
    check = migrations.verify(store, report.record_id)
    # ...and verify, comparing every record, says so: the key holds the other relation's content
    assert not check.ok and check.lost == 1 and check.missing == ["line 9"]


# -- extended-memory: integers beyond 64 bits ----------------------------------------------------------


def test_integers_beyond_64_bits_are_refused_never_rounded(store, tmp_path):
    src = write_extended_memory_db(tmp_path / "em.db", {"huge": 2 ** 70, "edge": 2 ** 63, "neg": -(2 ** 63),
                                                        "nested": {"id": 123456789012345678901234567890}})
    report = importers.import_sources(store, [src]).sources[0]
    assert (report.new, report.invalid) == (2, 2)
    reasons = {r.location: r.reason for r in report.invalid_records}
    assert "beyond 64 bits" in reasons["memory_store key='huge'"] and "string" in reasons["memory_store key='huge'"]
    assert "memory_store key='nested'" in reasons
    kept = {m.key: m.content for m in by_content(store).values()}
    assert kept == {"edge": str(2 ** 63), "neg": str(-(2 ** 63))}  # exactly the digits, no float


@pytest.mark.parametrize("text", ["1234567890123456789012", "[1, 1234567890123456789012]", '{"a":\n -1234567890123456789012}',
                                  '{"a": [{"b": 0}, 1234567890123456789012]}'])
def test_a_number_beyond_64_bits_is_found_wherever_json_lets_one_start(text):
    """The exact re-parse runs only where a long number can start (a 19-digit run inside a hex string,
    such as an export's vector proof, is not one); wherever it can, it still runs."""
    from memfs.source_records import loads_exact

    for t in (text, text.encode()):
        with pytest.raises(InvalidDocumentError, match="beyond 64 bits"):
            loads_exact(t)
    assert loads_exact('{"h": "e1234567890123456789012f", "n": 1234567890123456789}')["n"] == 1234567890123456789


def test_the_quick_scan_misses_no_long_integer_in_generated_json():
    """The scan that decides whether to re-parse exactly must flag every text holding an integer beyond
    64 bits, whatever the white space, signs, nesting and neighbours (strings of digits, hex, floats
    with long fractions, like an export's vectors)."""
    import json
    import random

    from memfs.source_records import MAX_EXACT_INT, MIN_EXACT_INT, _may_hold_long_int

    rng = random.Random(7)

    def number():
        digits = rng.choice([1, 5, 18, 19, 20, 21, 30])
        n = int("".join(rng.choice("123456789") + "".join(rng.choice("0123456789") for _ in range(digits - 1))))
        return -n if rng.random() < 0.5 else n

    def value(depth=0):
        kind = rng.choice(["int", "float", "str", "hex", "list", "obj"] if depth < 3 else ["int", "float", "str"])
        if kind == "int":
            return number()
        if kind == "float":
            return rng.choice([-1, 1]) * rng.random() * 10 ** rng.randint(-8, 3)
        if kind == "str":
            return f"{rng.choice(['', ' ', '-'])}{number()} words {rng.randint(0, 10 ** 25)}"
        if kind == "hex":
            return "".join(rng.choice("0123456789abcdef") for _ in range(64))
        if kind == "list":
            return [value(depth + 1) for _ in range(rng.randint(0, 4))]
        return {f"k{i}": value(depth + 1) for i in range(rng.randint(0, 4))}

    found = 0
    for _ in range(3000):
        text = json.dumps(value(), indent=rng.choice([None, 0, 1, "\t"]),
                          separators=rng.choice([(",", ":"), (", ", ": "), (" , ", " :  ")]))
        longs = []
        json.loads(text, parse_int=lambda t: longs.append(t) if not MIN_EXACT_INT <= int(t) <= MAX_EXACT_INT else 0)
        if longs:
            found += 1
            assert _may_hold_long_int(text.encode()), text
    assert found > 300  # the generator makes plenty of them


# -- vectors: proven for every record reused ----------------------------------------------------------


TEXTS = ["The payment service retries failed charges three times",
         "Night builds publish artifacts to the internal registry",
         "On-call engineers rotate every Tuesday at noon",
         "Customer exports are limited to 10,000 rows",
         "numpy float32 halves memory",
         "The search cluster runs on three dedicated nodes",
         "Feature flags are cleaned up after each release",
         "Backups are encrypted with age before upload"]


def test_a_memfs_export_with_some_swapped_vectors_reuses_only_the_proven_ones(store, tmp_path):
    store.add_many([{"content": t} for t in TEXTS])
    out = tmp_path / "export.json"
    with open(out, "wb") as f:
        export.export(store, f, include_embeddings=True)
    data = orjson.loads(out.read_bytes())
    a, b = data["memories"][2], data["memories"][4]
    a["embedding"], b["embedding"] = b["embedding"], a["embedding"]  # two vectors swapped, proofs kept
    out.write_bytes(orjson.dumps(data))
    with MemoryStore.open(tmp_path / "fresh", create=True) as fresh:
        before = fresh.embedder.embedded
        r = importers.import_sources(fresh, [out]).sources[0]
        assert (r.vectors_carried, r.vectors_reused) == (8, 6)
        assert fresh.embedder.embedded - before == 2  # exactly the swapped two, re-embedded
        assert "2 did not" in r.vector_check
        assert fresh.search("does float32 save memory", k=1)[0].memory.content == "numpy float32 halves memory"


def test_a_foreign_source_with_swapped_vectors_is_caught_and_never_served(store, tmp_path):
    vectors = store.embedder.embed(TEXTS)  # this model's vectors, as mcp-memory-service with MiniLM stores
    vectors[[1, 4]] = vectors[[4, 1]]
    src = write_mms_json(tmp_path / "laptop.json", [{"content": t} for t in TEXTS], vectors)
    with MemoryStore.open(tmp_path / "fresh", create=True) as fresh:
        r = importers.import_sources(fresh, [src]).sources[0]
        assert r.vectors_reused == 0 and "6 matched" in r.vector_check and "2 did not" in r.vector_check
        top = fresh.search("does float32 save memory", k=1)[0]
        assert top.memory.content == "numpy float32 halves memory"


# -- claude-flow 3.x ------------------------------------------------------------------------------------


CF3_DB = PEERS / "claude-flow-3.memory.db"
CF3_JSON = PEERS / "claude-flow-3.export.json"


def ms_time(value) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1000, timezone.utc)


def test_claude_flow_3_database_every_live_row_exactly_deleted_absent_reimport_adds_nothing(store):
    assert importers.detect_format(CF3_DB) == "swarm"
    rows = _rows(CF3_DB)
    live = [r for r in rows if r["status"] != "deleted"]
    assert live and len(live) < len(rows), "the fixture should hold a deleted row"
    report = importers.import_sources(store, [CF3_DB]).sources[0]
    assert (report.new, report.invalid) == (len(live), 0)
    got = {(m.namespace, m.key): m for m in by_content(store).values()}
    assert len(got) == len(live)
    for r in live:  # field by field: claude-flow column -> memfs field
        m = got[(r["namespace"], r["key"])]
        table = [
            ("content", m.content, r["content"]),
            ("type", m.type, "kv"),
            ("tags", [t for t in m.tags if not t.startswith(("source:", "status:"))], json.loads(r["tags"] or "[]")),
            ("metadata", {k: v for k, v in m.metadata.items()
                          if k not in ("value_type", "claude_flow_type", "provenance_type", "owner_id", "status")},
             json.loads(r["metadata"] or "{}")),
            ("type column", m.metadata.get("claude_flow_type"), r["type"]),
            ("created_at", m.created_at, ms_time(r["created_at"])),
            ("updated_at", m.updated_at, ms_time(r["updated_at"])),
            ("expires_at", m.expires_at, ms_time(r["expires_at"])),
            ("archived", "status:archived" in m.tags, r["status"] == "archived"),
            ("source", m.source, f"{CF3_DB.resolve()}#memory_entries id={r['id']}"),
        ]
        for name, ours, theirs in table:
            assert ours == theirs, f"{r['key']}: {name}: {ours!r} != {theirs!r}"
        if r["access_count"]:
            assert store.catalog.access_of([m.id])[m.id][1] == r["access_count"]
    assert not any((r["namespace"], r["key"]) in got for r in rows if r["status"] == "deleted")
    again = importers.import_sources(store, [CF3_DB]).sources[0]
    assert (again.new, again.updated, again.duplicate) == (0, 0, len(live))
    assert migrations.verify(store, report.record_id).ok


def _rows(path: Path) -> list[dict]:
    db = sqlite3.connect(path)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM memory_entries ORDER BY rowid")]
    finally:
        db.close()


def test_claude_flow_3_export_json_is_read(store):
    assert importers.detect_format(CF3_JSON) == "swarm-json"
    data = json.loads(CF3_JSON.read_text())
    report = importers.import_sources(store, [CF3_JSON]).sources[0]
    assert (report.new, report.invalid) == (len(data["entries"]), 0)
    got = {(m.namespace, m.key): m for m in by_content(store).values()}
    for e in data["entries"]:
        m = got[(e["namespace"], e["key"])]
        assert m.content == e["value"] and m.type == "kv"
    # the database it came from, imported after, adds nothing new: same keys, same content
    again = importers.import_sources(store, [CF3_DB]).sources[0]
    assert again.new == sum(1 for r in _rows(CF3_DB) if r["status"] != "deleted") - len(data["entries"])


def test_claude_flow_3_archived_rows_are_kept_and_marked(store, tmp_path):
    """The CLI cannot archive, so this database is built from claude-flow 3.43.0's schema
    (source_fixtures.write_swarm3_db), not written by it."""
    from source_fixtures import write_swarm3_db

    src = write_swarm3_db(tmp_path / ".swarm" / "memory.db", [
        {"key": "old/plan", "content": "The old rollout plan, kept for reference", "status": "archived"},
        {"key": "gone", "content": "A removed note", "status": "deleted"},
        {"key": "live", "content": "The current rollout plan", "tags": ["plan"]}])
    report = importers.import_sources(store, [src]).sources[0]
    mems = {m.key: m for m in by_content(store).values()}
    assert report.new == 2 and set(mems) == {"old/plan", "live"}
    assert mems["old/plan"].metadata["status"] == "archived" and "status:archived" in mems["old/plan"].tags
    assert "status" not in mems["live"].metadata and "plan" in mems["live"].tags
    assert any("'deleted' left out" in w for w in report.warnings)
