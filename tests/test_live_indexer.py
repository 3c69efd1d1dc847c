"""Issue #24, items 1, 2 and 5: the live indexer under bursts, and an owner stopping or exiting idle
while it works. Real `memfs watch` / on-demand owner processes, real files, the real model and Chroma.
The catalog is read as another process sees it (read-only SQLite). Every wait polls with a deadline;
the only timings asserted are orders of events (an edit searchable while a burst still embeds)."""

import json
import re
import signal
import sqlite3
from pathlib import Path

import orjson

from conftest import filler_texts
from memfs.watcher import Watcher
from test_owner import owner_record, run, start_watch
from test_watcher import wait_until

BURST = 400


def _query(root: Path, sql: str, args=()) -> list[tuple]:
    db = sqlite3.connect(f"file:{root / 'data/indexes/catalog.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def keyword_hits(root: Path, word: str) -> list[str]:
    """What a keyword search finds: the FTS index the catalog answers from."""
    return [r[0] for r in _query(root, "SELECT d.id FROM fts JOIN docs d ON d.rowid = fts.rowid "
                                       "WHERE fts MATCH ?", (word,))]


def has_vector(root: Path, mem_id: str) -> bool:
    return bool(_query(root, "SELECT 1 FROM docs WHERE id = ? AND synced_fp IS vec_fp", (mem_id,)))


def burst_without_vectors(root: Path) -> int:
    return _query(root, "SELECT count(*) FROM docs WHERE path LIKE 'bulk/%' AND synced_fp IS NOT vec_fp")[0][0]


def burst_rows(root: Path) -> int:
    return _query(root, "SELECT count(*) FROM docs WHERE path LIKE 'bulk/%'")[0][0]


def drop_burst(mem: Path, n: int = BURST) -> None:
    (mem / "bulk").mkdir()
    for i, text in enumerate(filler_texts(n)):
        (mem / "bulk" / f"b{i:04}.json").write_bytes(orjson.dumps({"id": f"b{i}", "content": text}))


def test_an_edit_during_a_burst_is_searchable_at_once_and_embedded_before_the_burst(root):
    """Item 1: before, the edit waited behind the whole burst's embedding (33 s for 300 files)."""
    assert run(root, "init").returncode == 0
    mem = root / "data" / "memories"
    (mem / "notes").mkdir()
    (mem / "notes" / "rota.json").write_bytes(orjson.dumps({"id": "rota", "content": "the kitchen rota"}))
    watch = start_watch(root)
    try:
        wait_until(lambda: has_vector(root, "rota"), timeout=600, what="the note indexed (the model loaded)")
        drop_burst(mem)
        wait_until(lambda: burst_rows(root) == BURST and burst_without_vectors(root) < BURST, timeout=600,
                   what="the burst indexed by keyword and its embedding begun")
        (mem / "notes" / "rota.json").write_bytes(orjson.dumps({"id": "rota", "content": "the zanzibarflux rota"}))
        wait_until(lambda: keyword_hits(root, "zanzibarflux") == ["rota"], timeout=30, what="the edit by keyword")
        left_when_searchable = burst_without_vectors(root)
        wait_until(lambda: has_vector(root, "rota"), timeout=300, what="the edit's vector")
        left_when_embedded = burst_without_vectors(root)
        # Searchable by keyword while most of the burst still waits for its vectors, and embedded
        # ahead of the burst (within a round or two of 32), not after it.
        assert left_when_searchable > 100, left_when_searchable
        assert left_when_embedded > 40, left_when_embedded
        r = run(root, "search", "zanzibarflux rota", "--json")
        assert r.returncode == 0 and json.loads(r.stdout)["hits"][0]["id"] == "rota", r.stdout + r.stderr
        wait_until(lambda: burst_without_vectors(root) == 0, timeout=900, what="the burst embedded")
    finally:
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(600) == 0
    assert len(_query(root, "SELECT id FROM docs WHERE synced_fp IS vec_fp")) == BURST + 1


def test_a_keyword_hit_is_returned_before_its_vector_exists(store):
    """Item 1: hybrid search answers from the keyword index for a row whose vector is still to come."""
    mem = store.layout.memories
    (mem / "n.json").write_bytes(orjson.dumps({"id": "n", "content": "the quillwort inventory is due"}))
    store.reconcile(paths=["n.json"], embed=False)
    assert [p[0] for p in store.pending_vectors()] == ["n"] and store.vectors.count() == 0
    for mode in ("hybrid", "keyword"):
        r = store.search_result("quillwort inventory", mode=mode)
        assert [h.memory.id for h in r.hits] == ["n"], (mode, r.note)
    w = Watcher(store, reconcile_every=3600).start()
    try:
        assert w.idle.wait(600)
        assert store.pending_vectors() == [] and store.vectors.ids() == {"n"}
    finally:
        w.stop()


def test_stop_during_a_burst_finishes_the_batch_and_says_what_it_left(root):
    """Item 2: stop gave up after 30 s, closed the store under the batch ("Cannot operate on a closed
    database" in owner.log, the work lost) and still printed "pending changes applied"."""
    assert run(root, "init").returncode == 0
    mem = root / "data" / "memories"
    watch = start_watch(root)
    try:
        drop_burst(mem)
        wait_until(lambda: 0 < burst_without_vectors(root) < BURST, timeout=600, what="the burst embedding")
    finally:
        watch.send_signal(signal.SIGTERM)
        _, err = watch.communicate(timeout=600)  # the round under way finishes (minutes on a loaded host)
    assert watch.returncode == 0, err
    log = (root / "data" / "logs" / "owner.log").read_text()
    assert "closed database" not in log and "Traceback" not in err, err
    rows = _query(root, "SELECT count(*), sum(synced_fp IS NOT vec_fp) FROM docs WHERE path LIKE 'bulk/%'")[0]
    assert rows[0] == BURST  # every file reached the catalog before the store closed
    said = re.search(r"stopped; (.*); lock released", err)
    assert said, err
    if rows[1]:
        assert f"{rows[1]} memories still lack a vector, which the next start embeds" in said.group(1), err
    else:
        assert said.group(1) == "every change indexed and embedded", err
    # The next owner embeds what was handed over.
    r = run(root, "--no-daemon", "reindex", timeout=1800)
    assert r.returncode == 0, r.stderr
    assert burst_without_vectors(root) == 0


def test_idle_exit_waits_for_the_embedding_to_finish(root):
    """Item 2: the idle timer counted only queued paths, so an owner started on demand exited in the
    middle of a batch."""
    assert run(root, "init").returncode == 0
    r = run(root, "add", "an owner on demand", env={"MEMFS_IDLE_EXIT": "3"})
    assert r.returncode == 0, r.stderr
    pid = owner_record(root)["pid"]
    drop_burst(root / "data" / "memories")
    wait_until(lambda: not owner_record(root), timeout=900, what="idle exit")
    assert burst_without_vectors(root) == 0, "the owner exited idle with vectors still to embed"
    log = (root / "data" / "logs" / "owner.log").read_text()
    assert f"owner pid {pid} released the lock" in log and "closed database" not in log


# -- item 5 -------------------------------------------------------------------------------------------


def test_validate_right_after_a_drop_reports_pending_work_not_drift(root):
    """Before: "297 memories have no embedding", exit 1, for indexing still in progress."""
    assert run(root, "init").returncode == 0
    watch = start_watch(root)
    try:
        drop_burst(root / "data" / "memories")
        r = run(root, "validate", "--json", tool="manage")
        out = json.loads(r.stdout)
        assert r.returncode == 0 and out["problems"] == [], r.stdout + r.stderr
        assert out["pending"] > 0 and out["memory_files"] == BURST
        text = run(root, "validate", tool="manage")
        assert text.returncode == 0 and "no problems" in text.stdout, text.stdout
    finally:
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(600) == 0


def test_no_daemon_reindex_counts_what_the_reconcile_at_open_did(root):
    """Before: "0 added … 0 embedded" because opening the store had done the work already."""
    assert run(root, "init").returncode == 0
    mem = root / "data" / "memories"
    for i, text in enumerate(filler_texts(3)):
        (mem / f"n{i}.json").write_bytes(orjson.dumps({"content": text}))
    r = run(root, "--no-daemon", "reindex", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["added"] == 3 and out["embedded"] == 3 and out["vectors_written"] == 3, out
    again = json.loads(run(root, "--no-daemon", "reindex", "--json").stdout)
    assert again["added"] == 0 and again["embedded"] == 0  # counted once, not by every command


def test_a_closed_pipe_is_not_an_error(root):
    """`memfs … | head` printed a BrokenPipeError traceback (exit 3, "unexpected error")."""
    import subprocess
    import sys

    assert run(root, "init").returncode == 0
    for args in (["status"], ["list"], ["--no-daemon", "stats", "--json"]):
        p = subprocess.Popen([sys.executable, "-m", "memfs", "--root", str(root), *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        p.stdout.close()  # the reader is gone before the first line is written
        err = p.stderr.read().decode()
        assert p.wait(120) == 0 and "BrokenPipe" not in err and "Traceback" not in err, (args, err)


def test_each_invalid_file_is_logged_once_not_at_every_full_reconcile(store, caplog):
    mem = store.layout.memories
    (mem / "bad.json").write_text("{not json")
    w = Watcher(store, reconcile_every=3600).start()
    try:
        assert w.idle.wait(600)
        for _ in range(3):
            done = w.status().batches
            w.notify([], full=True)
            wait_until(lambda: w.status().batches > done, what="a full reconcile")
    finally:
        w.stop()
    said = [r.getMessage() for r in caplog.records if "bad.json" in r.getMessage()]
    assert len(said) <= 2 and any("invalid memory file bad.json" in m for m in said), said


def test_an_edit_beside_a_bulk_copy_gets_a_round_of_its_own():
    """The embedder's order (issue #24, item 1): a person's edit waits at most for the bulk round
    already running, then goes in a short round of hand edits alone; a bulk copy still fills rounds."""
    from memfs.watcher import next_round

    bulk = [(f"b{i}", f"import/2026/b{i:04d}.json", True) for i in range(100)]  # (id, path, new)
    edit = ("e1", "notes/edit.json", False)
    assert next_round(bulk + [edit], 32) == ["e1"]
    assert next_round(bulk, 32) == [f"b{i}" for i in range(32)]
    spread = [(f"s{i}", f"day{i}/s.json", True) for i in range(100)]  # a copy spread over small folders
    assert len(next_round(spread + [edit], 32)) == 32 and next_round(spread + [edit], 32)[0] == "e1"
    assert next_round([("n1", "notes/new.json", True), edit], 32) == ["e1", "n1"]
