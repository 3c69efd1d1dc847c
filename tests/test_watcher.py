"""The live indexer against a real filesystem, the real inotify observer, the real model and Chroma.

Every assertion polls for its result with a deadline; no fixed sleep is an assertion.
"""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from memfs import MemoryStore
from memfs.watcher import Watcher


def wait_until(predicate, timeout=30.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def write(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(doc) if not isinstance(doc, (bytes, str)) else
                     (doc.encode() if isinstance(doc, str) else doc))


def found(store, word):
    return [h.memory.id for h in store.search(word, k=5, mode="keyword")]


@pytest.fixture(params=["inotify", "polling"])
def watched(store, request):
    w = Watcher(store, polling=request.param == "polling", reconcile_every=3600).start()
    w.idle.wait(30)
    yield store, w
    w.stop()


def test_create_modify_delete(watched):
    store, _ = watched
    mem = store.layout.memories
    write(mem / "a.json", {"id": "a", "content": "zebracorn first draft"})
    wait_until(lambda: found(store, "zebracorn") == ["a"], what="create")
    for i in range(5):  # several writes per save
        write(mem / "a.json", {"id": "a", "content": f"quokkafish revision {i}"})
    wait_until(lambda: store.get("a").content == "quokkafish revision 4"
               and store.catalog.get("a").memory.content == "quokkafish revision 4", what="modify")
    assert found(store, "zebracorn") == []
    (mem / "a.json").unlink()
    wait_until(lambda: store.catalog.count() == 0 and store.vectors.count() == 0, what="delete")


def test_editor_atomic_save_and_sed(watched):
    store, _ = watched
    mem = store.layout.memories
    write(mem / "notes" / "x.json", {"content": "original wombatish text"})
    wait_until(lambda: found(store, "wombatish") == ["notes/x"], what="create")
    # vim/VS Code: write a temp file beside the target, rename it over the target.
    tmp = mem / "notes" / ".x.json.swp"
    write(tmp, {"content": "saved by editor narwhalish"})
    os.replace(tmp, mem / "notes" / "x.json")
    wait_until(lambda: found(store, "narwhalish") == ["notes/x"], what="atomic save")
    subprocess.run(["sed", "-i", "s/narwhalish/ocelotish/", str(mem / "notes" / "x.json")], check=True)
    wait_until(lambda: found(store, "ocelotish") == ["notes/x"] and found(store, "narwhalish") == [], what="sed -i")
    assert store.catalog.count() == 1


def test_rename_of_100_files_embeds_nothing(watched):
    store, w = watched
    mem = store.layout.memories
    for i in range(100):
        write(mem / "old" / f"m{i}.json", {"id": f"m{i}", "content": f"memory number {i} about capybaras"})
    wait_until(lambda: store.catalog.count() == 100, what="100 created")
    assert w.idle.wait(120), "the 100 files embedded"
    before = store.embedder.embedded
    (mem / "new").mkdir()
    for i in range(100):
        os.rename(mem / "old" / f"m{i}.json", mem / "new" / f"renamed{i}.json")
    wait_until(lambda: all(e.path.startswith("new/") for e in store.list(limit=None)), what="renames")
    assert store.embedder.embedded == before
    assert store.catalog.count() == 100 and len(store.vectors.ids()) == 100


def test_directory_moved_in_and_out(watched, tmp_path):
    store, _ = watched
    outside = tmp_path / "outside"
    for i in range(20):
        write(outside / f"f{i}.json", {"content": f"imported note {i} on axolotls"})
    os.rename(outside, store.layout.memories / "imported")
    wait_until(lambda: store.catalog.count() == 20, what="dir moved in")
    os.rename(store.layout.memories / "imported", tmp_path / "gone")
    wait_until(lambda: store.catalog.count() == 0 and store.vectors.count() == 0, what="dir moved out")


def test_new_subdirectory_filled_immediately(watched):
    store, _ = watched
    sub = store.layout.memories / "fresh" / "deeper"
    sub.mkdir(parents=True)
    for i in range(30):
        write(sub / f"n{i}.json", {"content": f"freshly dropped note {i} about pangolins"})
    wait_until(lambda: store.catalog.count() == 30, what="new subdirectory")


def test_git_checkout_of_hundreds_of_files(watched):
    store, _ = watched
    mem = store.layout.memories
    git = ["git", "-C", str(mem), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run(git + ["init", "-q"], check=True)
    for i in range(200):
        write(mem / f"g{i}.json", {"id": f"g{i}", "content": f"version one of note {i}"})
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "one"], check=True)
    wait_until(lambda: store.catalog.count() == 200, what="200 files")
    subprocess.run(git + ["checkout", "-qb", "two"], check=True)
    for i in range(200):
        write(mem / f"g{i}.json", {"id": f"g{i}", "content": f"second edition of item {i}"})
    subprocess.run(git + ["commit", "-qam", "two"], check=True)
    wait_until(lambda: len(found(store, '"second edition"')) == 5, what="edits")
    subprocess.run(git + ["checkout", "-q", "master"], check=False)
    subprocess.run(git + ["checkout", "-q", "main"], check=False)
    wait_until(lambda: found(store, '"second edition"') == [] and store.catalog.get("g7").memory.content
               == "version one of note 7", what="checkout back")
    assert store.catalog.count() == 200  # .git/ is never indexed


def test_invalid_file_reported_then_fixed(watched):
    store, w = watched
    mem = store.layout.memories
    write(mem / "bad.json", "{ not json")
    wait_until(lambda: [i["path"] for i in w.status().invalid] == ["bad.json"], what="reported")
    write(mem / "ok.json", {"content": "the watcher keeps working on lemurs"})
    wait_until(lambda: found(store, "lemurs") == ["ok"], what="still working")
    write(mem / "bad.json", {"content": "now fixed about tapirs"})
    wait_until(lambda: found(store, "tapirs") == ["bad"] and w.status().invalid == [], what="fixed")


def test_own_writes_are_not_embedded_twice(watched):
    store, w = watched
    before, batches = store.embedder.embedded, w.status().batches
    store.add("a memory written through the API about gibbons")
    # The observer reports the store's own write; the watcher looks, sees the file as indexed, moves on.
    wait_until(lambda: w.status().batches > batches and w.idle.is_set(), what="the write's event handled")
    assert store.embedder.embedded == before + 1
    assert w.reports[-1].added + w.reports[-1].updated == 0


def test_edits_while_stopped_are_picked_up_at_start(store):
    mem = store.layout.memories
    w = Watcher(store).start()
    write(mem / "keep.json", {"content": "stays around, about otters"})
    write(mem / "edit.json", {"content": "before the edit, about badgers"})
    write(mem / "drop.json", {"content": "will be deleted, about moles"})
    wait_until(lambda: store.catalog.count() == 3, what="initial")
    w.stop()
    write(mem / "edit.json", {"content": "after the edit, about weasels"})
    (mem / "drop.json").unlink()
    write(mem / "new.json", {"content": "added while stopped, about stoats"})
    w = Watcher(store).start()
    try:
        wait_until(lambda: found(store, "weasels") == ["edit"] and found(store, "stoats") == ["new"]
                   and found(store, "moles") == [] and store.catalog.count() == 3, what="startup reconcile")
    finally:
        w.stop()


def _catalog_count(root: Path) -> int:
    db = root / "data" / "indexes" / "catalog.sqlite"
    if not db.exists():
        return -1
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return con.execute("SELECT count(*) FROM docs WHERE synced_fp IS vec_fp").fetchone()[0]
    except sqlite3.OperationalError:
        return -1
    finally:
        con.close()


def wait_for_line(stream, text: str) -> None:
    for line in stream:
        if text in line:
            return
    raise AssertionError(f"process ended without printing {text!r}")


def test_kill_9_mid_burst_then_restart_converges(root):
    MemoryStore.init(root)
    env = {**os.environ, "MEMFS_ROOT": str(root)}
    cmd = [sys.executable, "-m", "memfs", "watch"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_line(p.stderr, "watching")
    mem = root / "data" / "memories" / "burst"
    for i in range(300):
        write(mem / f"b{i}.json", {"content": f"burst memory {i} about the red panda population"})
    wait_until(lambda: _catalog_count(root) > 0, timeout=60, what="some indexed")
    p.send_signal(signal.SIGKILL)
    p.wait()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_line(p.stderr, "watching")
        wait_until(lambda: _catalog_count(root) == 300, timeout=120, what="converged")
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(30) == 0
    with MemoryStore.open(root) as s:  # the lock was released by the clean stop
        assert s.vectors.ids() == {f"burst/b{i}" for i in range(300)}
        assert s.reconcile().embedded == 0


def test_lost_events_are_recovered_by_the_periodic_reconcile(store, monkeypatch):
    """inotify overflow drops events silently (watchdog #654): the periodic stat-only reconcile recovers."""
    w = Watcher(store, reconcile_every=0.5)
    monkeypatch.setattr(w, "notify", lambda *a, **k: None)  # every event lost
    w.start()
    try:
        write(store.layout.memories / "missed.json", {"content": "an event nobody heard, about quolls"})
        wait_until(lambda: found(store, "quolls") == ["missed"], what="periodic reconcile")
    finally:
        w.stop()


def test_plumbing_the_heap_is_given_back_once_a_bulk_is_embedded(root, monkeypatch):
    """#24 item 5 (plumbing, FAKE embedder: meaning plays no part): an owner kept ~0.8 GB after a bulk
    indexing that a fresh owner does not need. Once more than TRIM_AFTER texts are embedded and the
    embedder goes idle, it hands the heap back; a few hand edits do not trigger it."""
    from sync_helpers import OneHotFakeEmbedder

    from memfs import watcher

    given_back = []
    monkeypatch.setattr(watcher, "give_back_memory", lambda: given_back.append(time.monotonic()))
    store = MemoryStore.open(root, create=True, embedder=OneHotFakeEmbedder())
    w = Watcher(store, polling=False, reconcile_every=3600).start()
    try:
        w.idle.wait(30)
        mem = store.layout.memories
        for i in range(3):
            write(mem / f"e{i}.json", {"id": f"e{i}", "content": f"a hand edit {i}"})
        wait_until(lambda: store.vectors.count() == 3 and w.idle.is_set(), what="three edits embedded")
        assert given_back == []
        n = watcher.TRIM_AFTER + 40
        for i in range(n):
            write(mem / "bulk" / f"b{i}.json", {"id": f"b{i}", "content": f"bulk note number {i}"})
        wait_until(lambda: store.vectors.count() == n + 3, what="the bulk embedded")
        wait_until(lambda: len(given_back) == 1, what="the heap given back")
    finally:
        w.stop()
        store.close()


def test_give_back_memory_returns_freed_heap_to_the_system():
    """The mechanism itself, in a fresh process: ~200 MB of freed malloc chunks pinned under a live
    one stay resident until give_back_memory (glibc malloc_trim) returns them."""
    script = """
import sys
from memfs.watcher import give_back_memory
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) // 1024
chunks = [bytes(1024) + bytes([i % 256]) for i in range(200_000)]  # 1 KiB each: malloc, not pymalloc
pin = bytes(1024) + b'pin'  # allocated last: the heap's top stays in use
del chunks
before = rss()
give_back_memory()
print(before, rss())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    before, after = map(int, out.stdout.split())
    assert before - after > 100, (before, after)


def test_plumbing_while_a_person_edits_a_bulk_copy_goes_on_in_short_rounds(root, monkeypatch):
    """#24 item 1 (plumbing: a FAKE embedder that takes 5 ms a text, meaning plays no part). A bulk copy
    is embedded in rounds of EMBED_BATCH; once a hand edit is applied, the rounds after it are
    PERSON_ROUND long for PERSON_WINDOW seconds, so the person's next edit waits behind a short round."""
    from sync_helpers import OneHotFakeEmbedder

    from memfs import watcher

    class SlowFake(OneHotFakeEmbedder):
        def embed(self, texts):
            time.sleep(0.005 * len(texts))
            return super().embed(texts)

    monkeypatch.setattr(watcher, "PERSON_WINDOW", 600.0)  # a loaded machine must not see the window close
    store = MemoryStore.open(root, create=True, embedder=SlowFake())
    sizes: list[tuple[int, list]] = []  # (round size, ids) of each embedding call
    real = store.embed_pending
    monkeypatch.setattr(store, "embed_pending",
                        lambda ids, round_size, keep_going=None: sizes.append((round_size, list(ids)))
                        or real(ids, round_size=round_size, keep_going=keep_going))
    w = Watcher(store, polling=False, reconcile_every=3600).start()
    try:
        w.idle.wait(30)
        mem = store.layout.memories
        for i in range(600):
            write(mem / "bulk" / f"b{i}.json", {"id": f"b{i}", "content": f"bulk note number {i}"})
        wait_until(lambda: sizes, what="the bulk's first embedding call")
        write(mem / "notes" / "edit.json", {"id": "edit", "content": "a person's edit"})
        wait_until(lambda: store.vectors.count() == 601, timeout=120, what="everything embedded")
    finally:
        w.stop()
        store.close()
    calls = [(size, len(ids)) for size, ids in sizes]
    edit = next(i for i, (_size, ids) in enumerate(sizes) if "edit" in ids)
    assert sizes[edit][1] == ["edit"], calls  # a round of its own, before the rest of the copy
    assert all(size == watcher.EMBED_BATCH for size, _ids in sizes[:edit]), calls  # the copy alone: full rounds
    assert sizes[edit + 1:] and all(size == watcher.PERSON_ROUND for size, _ids in sizes[edit + 1:]), calls


def test_plumbing_the_tail_of_a_bulk_copy_is_short_rounds_too_while_a_person_edits(root, monkeypatch):
    """#24 item 1 (plumbing: a FAKE embedder, meaning plays no part). The last rows of a bulk copy (fewer
    than EMBED_BATCH) are not several rounds in one call, but while a person edits they are still
    embedded PERSON_ROUND at a time, not all together. A CI run once saw a round of 16 here."""
    from sync_helpers import OneHotFakeEmbedder

    from memfs import watcher

    store = MemoryStore.open(root, create=True, embedder=OneHotFakeEmbedder())
    try:
        for i in range(10):
            write(store.layout.memories / "bulk" / f"b{i}.json", {"id": f"b{i}", "content": f"bulk note {i}"})
        store.reconcile(embed=False)
        assert len(store.pending_vectors()) == 10
        sizes: list[int] = []
        real = store.embed_pending
        monkeypatch.setattr(store, "embed_pending", lambda ids, round_size, keep_going=None:
                            sizes.append(round_size) or real(ids, round_size=round_size, keep_going=keep_going))
        w = Watcher(store, polling=False)  # not started: its embedding round is called by hand
        w._person_at = time.monotonic()  # a hand edit was just embedded before the copy's rows
        assert w._embed_round()
        assert sizes == [watcher.PERSON_ROUND] and store.pending_vectors() == []
        w._person_at = float("-inf")  # nobody edits: the same tail is one round
        write(store.layout.memories / "bulk" / "b0.json", {"id": "b0", "content": "bulk note, changed"})
        store.reconcile(embed=False)
        assert w._embed_round() and sizes[-1] == watcher.EMBED_BATCH
    finally:
        store.close()
