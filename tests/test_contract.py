"""The operations contract (memfs.ops.Operations): the same tests against both implementations.

`local` owns the store in this process; `remote` talks to a real owner subprocess (`memfs serve`) over
its Unix socket: one owner for the module, its store emptied before each test (fixture `root`). Both
must return the same types and raise the same error classes with the same messages, so no entry
point ever needs to know which one it holds.
"""

import os
import subprocess
import sys
import time

import pytest

from memfs.errors import BadRequestError, InvalidDocumentError, NotFoundError
from memfs.local import LocalOperations
from memfs.lock import read_owner
from memfs.ops import Retention
from memfs.query import Filters
from memfs.remote import RemoteOperations
from memfs.results import AddResult, BackupList, ListPage, MemoryRecord, SearchResult


def start_owner(root):
    """A real `memfs serve` on the store (Unix socket only); returns (process, socket path)."""
    proc = subprocess.Popen([sys.executable, "-m", "memfs", "--root", str(root), "serve"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        sock = read_owner(root / "data" / "memfs.lock").get("socket")
        if sock and os.path.exists(sock):
            try:
                with RemoteOperations(socket=sock) as r:
                    if r.health().status == "ok":
                        return proc, sock
            except Exception:
                pass
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("owner did not become ready")


@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    """One owner for the module's remote tests: (its store's root, its socket). An owner per test
    cost each remote test its start and a model load (~10 s of CI's time)."""
    root = tmp_path_factory.mktemp("owner") / "store"
    root.mkdir(parents=True)
    proc, sock = start_owner(root)
    yield root, sock
    proc.terminate()
    assert proc.wait(60) == 0


def emptied(root, sock) -> None:
    """The owner's store as a new one: every file gone (memories, key/values, hand-dropped and invalid
    files, backups), the owner told by a reindex; checked through the owner."""
    for d in (root / "data" / "memories", root / "backups"):
        for p in d.rglob("*"):
            if p.is_file():
                p.unlink()
    with RemoteOperations(socket=sock) as o:
        o.reindex()
        stats = o.stats()
        assert (stats.memories, stats.invalid_files, o.list_backups().backups) == (0, 0, [])


@pytest.fixture
def root(request, tmp_path):
    """A new store's root; for a remote test, the module owner's, emptied first."""
    callspec = getattr(request.node, "callspec", None)
    if callspec and callspec.params.get("ops") == "remote":
        root, sock = request.getfixturevalue("owner")
        emptied(root, sock)
        return root
    return tmp_path / "store"


@pytest.fixture(params=["local", "remote"])
def ops(request, root):
    if request.param == "local":
        o = LocalOperations.open(root)
        yield o
        o.close()
        return
    o = RemoteOperations(socket=request.getfixturevalue("owner")[1])
    yield o
    o.close()


def test_memory_round_trip(ops):
    added = ops.add("The deploy key rotates every ninety days", tags=["ops", "security"], metadata={"team": "infra"})
    assert isinstance(added, AddResult) and not added.duplicate and added.path.endswith(".json")
    again = ops.add("The deploy key rotates every ninety days")
    assert again.duplicate and again.memory.id == added.memory.id
    got = ops.get(added.memory.id)
    assert isinstance(got, MemoryRecord) and got.memory == added.memory and got.path == added.path
    updated = ops.update(added.memory.id, add_tags=["keys"], remove_tags=["ops"], metadata={"owner": "ana"})
    assert updated.memory.tags == ("security", "keys") and updated.memory.metadata == {"team": "infra", "owner": "ana"}
    removed = ops.remove(added.memory.id)
    assert removed.memory.id == added.memory.id
    with pytest.raises(NotFoundError, match=f"no memory with id '{added.memory.id}'"):
        ops.get(added.memory.id)


def test_invalid_input_is_refused_the_same_way(ops):
    with pytest.raises(InvalidDocumentError, match="'content' is empty"):
        ops.add("   ")
    with pytest.raises(BadRequestError, match="k must be between 1 and 1000"):
        ops.search("anything", k=0)
    with pytest.raises(BadRequestError, match="cursor"):
        ops.list(cursor="١٢")  # Arabic-Indic digits: isdigit() but not a cursor we gave out
    with pytest.raises(NotFoundError, match="no memory with id 'nope'"):
        ops.update("nope", content="x")


def test_list_pages_and_filters(ops):
    for n in range(5):
        ops.add(f"memory number {n} about the aquarium", tags=["fish"] if n % 2 else [])
    first = ops.list(limit=2)
    assert isinstance(first, ListPage) and len(first.memories) == 2 and first.next_cursor
    rest = ops.list(limit=10, cursor=first.next_cursor)
    assert len(rest.memories) == 3 and rest.next_cursor is None
    ids = [r.memory.id for r in first.memories + rest.memories]
    assert len(set(ids)) == 5
    fish = ops.list(Filters(tags=("fish",)))
    assert {r.memory.id for r in fish.memories} == {r.memory.id for r in first.memories + rest.memories
                                                    if "fish" in r.memory.tags}


def test_search_finds_a_paraphrase_and_applies_filters(ops):
    target = ops.add("The user prefers a dark colour scheme in every editor", tags=["prefs"]).memory.id
    ops.add("Quarterly revenue grew by four percent", tags=["finance"])
    ops.add("Error E4417 means the upstream certificate expired", tags=["ops"])
    result = ops.search("what theme does the user like", mode="semantic", k=3)
    assert isinstance(result, SearchResult) and result.hits[0].memory.id == target
    assert ops.search("E4417", mode="keyword").hits[0].memory.content.startswith("Error E4417")
    filtered = ops.search("what theme does the user like", mode="hybrid", filters=Filters(tags=("finance",)),
                          min_score=0)
    assert [h.memory.tags for h in filtered.hits] == [("finance",)]


def test_reindex_stats_and_health(ops, root):
    (root / "data" / "memories" / "dropped.json").write_text('{"content": "a memory dropped in by hand"}')
    (root / "data" / "memories" / "broken.json").write_text("{not json")
    report = ops.reindex()
    assert report.invalid and report.invalid[0].path == "broken.json"
    assert ops.get("dropped").memory.content == "a memory dropped in by hand"
    stats = ops.stats()
    assert stats.memories == 1 and stats.invalid_files == 1 and stats.model.endswith("all-MiniLM-L6-v2")
    health = ops.health()
    assert health.status == "ok" and health.index["memories"] == 1
    assert ops.status().running


def test_backups(ops, root):
    ops.add("kept in the backup")
    made = ops.backup(compression="zst")
    assert made.backup.startswith("backups/") and (root / made.backup).is_file() and made.pruned == []
    listed = ops.list_backups(verify="deep")
    assert isinstance(listed, BackupList) and listed.backups[0].status == "ok" and listed.bad == []
    assert ops.list_backups(verify="quick").backups[0].status == "checksum ok"
    assert listed.backups[0].retention == ["daily " + listed.backups[0].created[:10],
                                           "weekly " + "%04d-W%02d" % _iso_week(listed.backups[0].created),
                                           "monthly " + listed.backups[0].created[:7]]
    assert ops.validate(backups=True).ok
    plan = ops.prune(retention=Retention(0, 0, 0, 0), dry_run=True)
    assert [(e.name, e.keep) for e in plan.backups] == [(made.name, True)]
    dry = ops.restore("latest", dry_run=True)
    assert dry.dry_run and dry.memory_count == 1
    later = ops.add("added after the backup").memory.id
    done = ops.restore(made.name)
    assert done.memory_count == 1 and done.pre_restore.startswith("backups/pre_restore_") and done.problems == []
    with pytest.raises(NotFoundError):
        ops.get(later)
    with pytest.raises(NotFoundError, match="not a backup file"):
        ops.restore("nothing-like-a-backup.tar.gz")


def _iso_week(created: str):
    from datetime import date

    return date.fromisoformat(created[:10]).isocalendar()[:2]


def test_results_have_the_same_json_either_way(root, tmp_path):
    """The same requests on the same data, in-process and through an owner: identical JSON."""
    local = LocalOperations.open(root)
    mid = local.add("identical either way, about otters", tags=["t"]).memory.id
    volatile = {"seconds"}

    def snapshot(o):
        return {
            "get": o.get(mid).to_dict(),
            "list": o.list().to_dict(),
            "search": o.search("otters", mode="keyword").to_dict(),
            "stats": {k: v for k, v in o.stats().to_dict().items() if k not in ("disk_bytes", "last_reconcile")},
            "validate": {k: v for k, v in o.validate().to_dict().items() if k not in volatile},
            "backups": o.list_backups().to_dict(),
        }

    before = snapshot(local)
    local.close()
    proc, sock = start_owner(root)
    try:
        with RemoteOperations(socket=sock) as remote:
            assert snapshot(remote) == before
    finally:
        proc.terminate()
        assert proc.wait(60) == 0


def test_no_good_match_says_so_and_relative_times(ops):
    ops.add("The office plants are watered on Fridays")
    result = ops.search("what is the tax return deadline", mode="semantic")
    assert result.hits == [] and "no good match" in result.note
    assert ops.search("what is the tax return deadline", mode="semantic", min_score=0).hits
    from memfs.timeparse import parse_when

    recent = Filters(since=parse_when("7d"))
    assert len(ops.list(recent).memories) == 1
    assert ops.list(Filters(until=parse_when("last week"))).memories == []


def test_export_import_and_key_values(ops, root, tmp_path):
    import io

    ops.add("exported and imported back, about puffins", tags=["birds"])
    item = ops.kv_set("colour", {"fg": "teal"}, namespace="ui", ttl=3600)
    assert (item.namespace, item.key, item.value) == ("ui", "colour", {"fg": "teal"}) and item.expires_at
    assert ops.kv_get("colour", namespace="ui").value == {"fg": "teal"}
    assert [i.key for i in ops.kv_list(namespace="ui")] == ["colour"]
    out = io.BytesIO()
    report = ops.export(out, format="memfs")
    assert report.count == 2 and out.getvalue().endswith(b"}\n")
    dump = tmp_path / "export.json"
    dump.write_bytes(out.getvalue())
    again = ops.import_sources([str(dump)])
    assert not again.problems and sum(s.new for s in again.sources) == 0  # everything is there already
    assert ops.import_history()[-1]["counts"]["read"] == 2
    assert ops.kv_rm("colour", namespace="ui")
    with pytest.raises(NotFoundError):
        ops.kv_get("colour", namespace="ui")


def test_find_by_content_hash(ops):
    import hashlib

    added = ops.add("The staging database listens on port 5433", tags=["db"]).memory
    h = hashlib.sha256(added.content.encode()).hexdigest()
    found = ops.find(content_hash=h.upper())
    assert isinstance(found, MemoryRecord) and found.memory.id == added.id
    with pytest.raises(NotFoundError, match="no memory with content hash"):
        ops.find(content_hash="0" * 64)
    with pytest.raises(BadRequestError, match="not a content hash"):
        ops.find(content_hash="../../etc/passwd")


def test_remove_matching_is_a_dry_run_unless_told(ops):
    from memfs.results import RemoveResult

    keep = ops.add("keep me: the office closes at six", tags=["office"]).memory.id
    temp = {ops.add(f"scratch note {n} about the build", tags=["scratch", "build"]).memory.id for n in range(3)}
    with pytest.raises(BadRequestError, match="at least one filter"):
        ops.remove_matching(Filters())
    preview = ops.remove_matching(Filters(tags=("scratch",)))
    assert isinstance(preview, RemoveResult) and preview.dry_run and set(preview.removed) == temp
    assert len(ops.list().memories) == 4
    with pytest.raises(BadRequestError, match="more than 2 memories match"):
        ops.remove_matching(Filters(tags=("scratch",)), dry_run=False, limit=2)
    assert len(ops.list().memories) == 4
    done = ops.remove_matching(Filters(tags=("scratch", "build"), match="all"), dry_run=False)
    assert not done.dry_run and set(done.removed) == temp
    assert [r.memory.id for r in ops.list().memories] == [keep]


def test_passphrase_backups_are_deep_verified_by_list_and_validate(ops, root, tmp_path):
    """Issue #24 item 8: `list` and `validate --backups` take a passphrase file, through every door."""
    ops.add("Encrypted to a passphrase, and still verifiable")
    words, wrong = tmp_path / "pass", tmp_path / "wrong"
    words.write_text("correct horse battery staple\n")
    wrong.write_text("incorrect horse\n")
    made = ops.backup(passphrase_file=str(words))
    assert made.encrypted
    assert [b.status for b in ops.list_backups(verify="deep").backups] == ["encrypted"]
    assert [b.status for b in ops.list_backups(verify="deep", passphrase_file=str(words)).backups] == ["ok"]
    refused = ops.list_backups(verify="deep", passphrase_file=str(wrong))
    assert [b.status for b in refused.backups] == ["wrong key"] and refused.bad
    assert ops.validate(backups=True, passphrase_file=str(words)).ok
    problems = ops.validate(backups=True, passphrase_file=str(wrong)).problems
    assert [p.check for p in problems] == ["backup"] and "wrong key" in problems[0].message
