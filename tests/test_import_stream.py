"""Streaming import (issue #25): a source is read record by record, once (the plan; the records to write
go to a spool, a temporary file, and are written from it in batches), never whole; memory stays flat
in the source's size.

Plumbing: a FAKE embedder (content hash to a one-hot vector, tests/sync_helpers.py) stands in for the
model wherever meaning plays no part, so thousands of records import in seconds.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from memfs import MemoryStore, export, import_write, importers, json_stream, migrations  # noqa: E402
from memfs.documents import content_hash  # noqa: E402
from memfs.importers import SourceError  # noqa: E402
from sync_helpers import OneHotFakeEmbedder  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def write_export(path: Path, n: int, *, note_chars: int = 0, model: str = OneHotFakeEmbedder.model_id) -> Path:
    """A memfs export of n memories, each with a vector under a valid proof for `model` (so an import
    into a store of that model reuses it) and, if asked, a metadata note of `note_chars` characters."""
    rng = np.random.default_rng(3)
    memories = []
    for i in range(n):
        content = f"plumbing record {i}: the import reads it, plans it, then writes it in a batch"
        vec = rng.standard_normal(384).astype(np.float32)
        vec /= np.linalg.norm(vec)
        memories.append({"content": content, "tags": ["plumbing"], "metadata": {"n": i, "note": "x" * note_chars},
                         "embedding": vec.tolist(),
                         "embedding_sha256": export.vector_proof(model, content_hash(content), vec)})
    path.write_bytes(orjson.dumps({"format": export.EXPORT_FORMAT, "model": model, "memories": memories,
                                   "count": n}))
    return path


# -- memory flat in the source's size -----------------------------------------------------------------

PEAK_SCRIPT = """
import re, sys
sys.path.insert(0, sys.argv[4])
from sync_helpers import OneHotFakeEmbedder
from memfs import MemoryStore, importers
with MemoryStore.open(sys.argv[1], create=True, embedder=OneHotFakeEmbedder()) as s:
    s.embedder.embed(["warm up"])
    report = importers.import_sources(s, [sys.argv[2]]).sources[0]
    assert (report.new, report.vectors_reused) == (int(sys.argv[3]),) * 2, report
print(re.search(r"VmHWM:\\s+(\\d+)", open("/proc/self/status").read()).group(1))
"""


def peak_mb(source: Path, store: Path, n: int) -> float:
    """Peak RSS (VmHWM, the process's own) of a fresh process importing `source` of n records."""
    run = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(store), str(source), str(n),
                          str(Path(__file__).parent)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return int(run.stdout.split()[-1]) / 1024


def test_plumbing_fake_embedder_import_memory_stays_flat_in_the_sources_size(tmp_path):
    """Four times the records, not four times the memory. Each record carries a vector and a 60,000
    character note (~68 KB of JSON): the 800-record source is 55 MB. Read whole, as before streaming,
    its import peaked 65 MB above the 200-record one's (139 -> 204 MB, measured on the old code);
    streamed, both hold one batch at a time (BATCH_CHARS: ~66 of these records) and the peaks differ
    by what the store keeps per memory (its vector index, SQLite's pages): 121 -> 126 MB."""
    n, note = 200, 60_000
    assert n * note > 2 * import_write.BATCH_CHARS  # both sizes take several batches: only the source's size differs
    small = peak_mb(write_export(tmp_path / "small.json", n, note_chars=note), tmp_path / "s1", n)
    big = peak_mb(write_export(tmp_path / "big.json", 4 * n, note_chars=note), tmp_path / "s4", 4 * n)
    assert big - small < 25, f"peak RSS {small:.0f} MB for {n} records, {big:.0f} MB for {4 * n}"


# -- the two readings -----------------------------------------------------------------------------------


def test_an_import_spanning_many_batches_writes_every_record_once(tmp_path, monkeypatch):
    monkeypatch.setattr(import_write, "BATCH", 7)
    src = write_export(tmp_path / "export.json", 50)
    seen = []
    with MemoryStore.open(tmp_path / "store", create=True, embedder=OneHotFakeEmbedder()) as s:
        r = importers.import_sources(s, [src, src], progress=lambda phase, done, total: seen.append((done, total)))
        assert [(x.new, x.duplicate, x.vectors_reused) for x in r.sources] == [(50, 0, 50), (0, 50, 0)]
        assert s.embedder.embedded == 0 and s.catalog.count() == 50 == s.vectors.count()
        assert seen[-1] == (50, 50) and all(total == 50 for _, total in seen)
        check = migrations.verify(s, r.sources[0].record_id)
        assert check.ok and check.checked == check.present == 50
        again = importers.import_sources(s, [src]).sources[0]
        assert (again.new, again.duplicate) == (0, 50)


def test_a_source_rewritten_after_its_plan_changes_nothing_that_is_written(tmp_path, monkeypatch):
    """The writes come from the plan's spool, not from a second reading: a source rewritten once it was
    planned (and its checksum compared) still imports what was planned, whole."""
    monkeypatch.setattr(import_write, "BATCH", 10)
    src = write_export(tmp_path / "export.json", 40)
    planned = orjson.loads(src.read_bytes())["memories"]
    run = import_write.BatchWriter.run

    def rewrite_then_run(writer):
        data = orjson.loads(src.read_bytes())
        data["memories"][25]["content"] = "changed between the plan and the writes"
        del data["memories"][30:]
        src.write_bytes(orjson.dumps(data))
        return run(writer)

    monkeypatch.setattr(import_write.BatchWriter, "run", rewrite_then_run)
    with MemoryStore.open(tmp_path / "store", create=True, embedder=OneHotFakeEmbedder()) as s:
        report = importers.import_sources(s, [src]).sources[0]
        assert (report.new, report.vectors_reused, report.status) == (40, 40, "completed")
        assert sorted(e.memory.content for e in s.list(limit=None)) == sorted(m["content"] for m in planned)
        assert s.embedder.embedded == 0 and s.vectors.count() == 40


def test_a_write_that_fails_mid_import_keeps_what_was_written_and_says_failed(tmp_path, monkeypatch):
    """A write that fails (here the second add_memories, as a full disk would) is the import's error: the
    batch before it stays, the migration record says failed, and running the import again adds the rest."""
    monkeypatch.setattr(import_write, "BATCH", 10)
    src = write_export(tmp_path / "export.json", 60)
    with MemoryStore.open(tmp_path / "store", create=True, embedder=OneHotFakeEmbedder()) as s:
        add_memories, calls = s.add_memories, []

        def fail_second(memories, **kw):
            calls.append(len(memories))
            if len(calls) == 2:
                raise OSError(28, "No space left on device")
            return add_memories(memories, **kw)

        monkeypatch.setattr(s, "add_memories", fail_second)
        with pytest.raises(OSError, match="No space left"):
            importers.import_sources(s, [src])
        assert calls == [10, 10] and s.catalog.count() == 10
        assert migrations.history(s.layout)[0]["status"] == "failed"
        monkeypatch.setattr(s, "add_memories", add_memories)
        again = importers.import_sources(s, [src]).sources[0]
        assert (again.new, again.duplicate) == (50, 10) and s.catalog.count() == 60


def test_the_spool_gives_back_each_record_as_planned(tmp_path):
    """What the plan spools comes back equal: the memory it checked (every field, times to the
    microsecond, unknown fields, integers to 64 bits), access, the vector with its shape, model, proof."""
    from memfs.documents import from_dict, utcnow
    from memfs.import_plan import Spool
    from memfs.source_records import SourceRecord

    docs = [{"id": "a1", "content": "a", "metadata": {"n": 2 ** 63 - 1, "m": -(2 ** 63), "f": 0.1, "u": "é\u2028"},
             "created_at": "2020-02-29T23:59:59.000001+05:00", "expires_at": "2999-01-01", "future_field": [1, {}]},
            {"content": "b", "tags": ["X", "y"], "namespace": "ns", "key": "k", "source": "there#1"},
            {"content": "c", "type": "decision"}]
    records = [SourceRecord("memories[0]", vector=np.arange(4, dtype=np.float32), access=(1.5, 3),
                            vector_model="m", vector_proof="p"),
               SourceRecord("line 2"),
               SourceRecord("r", vector=np.ones((2, 3), dtype=np.float32))]
    memories = [from_dict(d, default_id=f"id{i}", default_time=utcnow()) for i, d in enumerate(docs)]
    spool = Spool(tmp_path)
    try:
        for i, (rec, m) in enumerate(zip(records, memories)):
            spool.add(rec, m, f"h{i}", "old" if i == 1 else None)
        back = list(spool)
    finally:
        spool.close()
    assert [m for _, m, *_ in back] == memories
    assert [(h, updates) for _, _, h, updates, _ in back] == [("h0", None), ("h1", "old"), ("h2", None)]
    for rec, (got, *_) in zip(records, back):
        assert (got.location, got.access, got.vector_model, got.vector_proof) == \
            (rec.location, rec.access, rec.vector_model, rec.vector_proof)
        assert (got.vector is None) == (rec.vector is None)
        if rec.vector is not None:
            assert got.vector.shape == rec.vector.shape and np.array_equal(got.vector, rec.vector)


def test_a_truncated_or_broken_json_export_imports_nothing(tmp_path):
    src = write_export(tmp_path / "export.json", 30)
    data = src.read_bytes()
    cut = tmp_path / "cut.json"
    cut.write_bytes(data[:len(data) * 2 // 3])  # cut inside a record, well after the first batch's worth
    broken = tmp_path / "broken.json"
    broken.write_bytes(data.replace(b'"plumbing record 20:', b'plumbing record 20:', 1))  # a quote gone
    short = tmp_path / "short.json"
    short.write_bytes(data.replace(b'"count":30', b'"count":31'))
    with MemoryStore.open(tmp_path / "store", create=True, embedder=OneHotFakeEmbedder()) as s:
        for path, reason in ((cut, "ends inside a value"), (broken, "not valid JSON"), (short, "truncated")):
            with pytest.raises(SourceError, match=reason):
                importers.import_sources(s, [path])
        assert s.catalog.count() == 0 and not migrations.history(s.layout)


def test_an_integer_beyond_64_bits_in_a_json_export_refuses_that_record(tmp_path):
    src = write_export(tmp_path / "export.json", 3)
    data = orjson.loads(src.read_bytes())
    data["memories"][1]["metadata"]["n"] = 777  # a placeholder, replaced in the text below
    text = orjson.dumps(data).replace(b'"n":777', b'"n":123456789012345678901234567890', 1)
    src.write_bytes(text)
    with MemoryStore.open(tmp_path / "store", create=True, embedder=OneHotFakeEmbedder()) as s:
        r = importers.import_sources(s, [src]).sources[0]
        assert (r.new, r.invalid) == (2, 1)
        assert r.invalid_records[0].location == "memories[1]" and "beyond 64 bits" in r.invalid_records[0].reason


def test_an_export_whose_members_come_in_another_order_still_imports(tmp_path):
    """Streaming reads an object's members in the file's order; JSON leaves that order free. An export
    re-serialized with sorted keys (`model` after `memories`) and one with `memories` first (told its
    format) import whole, as they did when a file was read at once: the format is checked once the file
    is read, and vectors met before `model` are proven by embedding their text."""
    data = orjson.loads(write_export(tmp_path / "export.json", 5).read_bytes())
    sorted_keys = tmp_path / "sorted.json"
    sorted_keys.write_bytes(orjson.dumps(data, option=orjson.OPT_SORT_KEYS))
    memories_first = tmp_path / "memories-first.json"
    memories_first.write_bytes(orjson.dumps({"memories": data["memories"], "format": data["format"],
                                             "model": data["model"], "count": 5}))
    for path, fmt in ((sorted_keys, "auto"), (memories_first, "memfs")):
        with MemoryStore.open(tmp_path / f"store-{path.stem}", create=True, embedder=OneHotFakeEmbedder()) as s:
            r = importers.import_sources(s, [path], format=fmt).sources[0]
            assert (r.format, r.new, r.invalid, r.vectors_reused) == ("memfs", 5, 0, 0)
            assert s.catalog.count() == 5 == s.vectors.count()
    wrong = tmp_path / "wrong.json"
    wrong.write_bytes(orjson.dumps({"memories": data["memories"], "format": "other/1"}))
    with MemoryStore.open(tmp_path / "store-wrong", create=True, embedder=OneHotFakeEmbedder()) as s:
        with pytest.raises(SourceError, match="not a memfs export"):
            importers.import_sources(s, [wrong], format="memfs")
        assert s.catalog.count() == 0


# -- the JSON reader ------------------------------------------------------------------------------------

CASES = [
    {"format": "x", "memories": [{"a": "},{", "b": {"c": [1, {"d": "}]"}]}}, {"e": '\\"}'}, 1, "s", [], {}, None],
     "count": 3},
    {"memories": []},
    {"memories": [{"x": "}," * 50, "y": [{"z": 1}, {"z": 2}] * 10}]},
    {"a": {"memories": [1]}, "memories": [{"k": "é 😀 \u2028"}], "z": [1, 2.5e-3, {"q": "]"}, True, None]},
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("indent", [False, True])
def test_object_stream_hands_out_each_element_as_json_reads_it(tmp_path, monkeypatch, case, indent):
    monkeypatch.setattr(json_stream, "CHUNK", 5)  # every value cut by a chunk's end somewhere
    path = tmp_path / "case.json"
    path.write_bytes(orjson.dumps(case, option=orjson.OPT_INDENT_2 if indent else 0))
    stream = json_stream.ObjectStream(path, "memories")
    items = list(stream.items())
    assert [value for _, _, value in items] == case["memories"]
    assert [orjson.loads(raw) for _, raw, _ in items] == case["memories"]
    assert stream.head == {k: v for k, v in case.items() if k != "memories"} and stream.found_array


@pytest.mark.parametrize("text,error", [
    (b'{"memories": [{"a": 1}, {"b": 2}', "expected ',' or ']'"),
    (b'{"memories": [1,]}', "not valid JSON"),
    (b'{"memories": [{"a":1}] "x": 2}', "expected ',' or '}'"),
    (b'[{"a": 1}]', "expected '{'"),
    (b'{"memories": [{"a": 1}]} trailing', "more text after"),
    (b'{"memories": [{"a": "x}]}', "ends inside a value"),
])
def test_object_stream_refuses_what_is_not_one_json_object(tmp_path, text, error):
    path = tmp_path / "bad.json"
    path.write_bytes(text)
    with pytest.raises(json_stream.JsonStreamError, match=re.escape(error)):
        list(json_stream.ObjectStream(path, "memories").items())
