"""Issue #20: a hostile or damaged remote is refused with a message naming the object, and nothing
local changes; encrypted remotes hold no plaintext and refuse a wrong key (exit 3). Plumbing tests:
the FAKE one-hot embedder (tests/sync_helpers.py), since no check here depends on meaning."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import orjson
import pytest

from conftest import run_memfs
from memfs.sync.objects import RemoteObjectError
from sync_helpers import contents, fake_replica, path_of, remote_bytes, tree_digest

SECRET_WORDS = ["zanzibar-octopus-7731", "quokka-ledger-5519"]


@pytest.fixture
def pair(tmp_path):
    a, b = fake_replica(tmp_path, "a"), fake_replica(tmp_path, "b")
    remote = tmp_path / "remote"
    a.add(f"first memory mentions {SECRET_WORDS[0]}", tags=["tag-" + SECRET_WORDS[1]])
    a.sync(str(remote))
    a.add("second memory, pushed in a second batch")
    a.sync(str(remote))
    yield a, b, remote
    a.close(), b.close()


def batches(remote: Path) -> list[Path]:
    return sorted(remote.glob("replicas/*/*.mfs"))


def refused(b, remote: Path, name_part: str) -> str:
    before = tree_digest(b.layout.data / "memories")
    with pytest.raises(RemoteObjectError) as e:
        b.sync(str(remote))
    assert name_part in str(e.value), str(e.value)
    assert tree_digest(b.layout.data / "memories") == before
    return str(e.value)


def test_a_truncated_object_is_refused_naming_it(pair):
    _a, b, remote = pair
    obj = batches(remote)[1]
    obj.write_bytes(obj.read_bytes()[:-40])
    assert "truncated or damaged" in refused(b, remote, obj.name)
    assert contents(b) == {}


def test_a_bit_flipped_object_is_refused_naming_it(pair):
    _a, b, remote = pair
    obj = batches(remote)[0]
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x01
    obj.write_bytes(bytes(data))
    refused(b, remote, obj.name)


def test_a_foreign_file_is_refused_naming_it(pair):
    _a, b, remote = pair
    (remote / "replicas" / "notes.txt").write_text("hello")
    refused(b, remote, "replicas/notes.txt")


def test_an_object_replayed_under_a_later_sequence_number_is_refused(pair):
    a, b, remote = pair
    first = batches(remote)[0]
    replay = first.with_name(f"{3:010d}-{first.name.split('-', 1)[1]}")
    shutil.copy(first, replay)
    assert "replay" in refused(b, remote, replay.name)


def test_a_remote_rolled_back_to_an_older_state_is_refused(pair):
    a, b, remote = pair
    b.sync(str(remote))
    a.add("third memory"), a.sync(str(remote))
    b.sync(str(remote))
    newest = batches(remote)[-1]
    newest.unlink()
    (batches(remote)[-1]).unlink()
    refused(b, remote, "older state")


def test_a_newer_format_version_is_refused(pair):
    _a, b, remote = pair
    marker = remote / "memfs-sync.json"
    marker.write_bytes(orjson.dumps({"format": "memfs.sync/2", "encrypted": False}))
    assert "upgrade memfs" in refused(b, remote, "memfs-sync.json")


def test_a_newer_format_inside_an_object_is_refused(pair, tmp_path):
    import hashlib

    _a, b, remote = pair
    obj = batches(remote)[0]
    data = obj.read_bytes().replace(b'"format":"memfs.sync/1"', b'"format":"memfs.sync/9"', 1)
    obj.unlink()
    renamed = obj.with_name(obj.name[:11] + hashlib.sha256(data).hexdigest()[:16] + ".mfs")
    renamed.write_bytes(data)
    assert "newer" in refused(b, remote, renamed.name)


@pytest.mark.parametrize("mode", ["recipient", "passphrase"])
def test_an_encrypted_remote_holds_no_plaintext_and_a_wrong_key_changes_nothing(tmp_path, mode):
    import pyrage

    a_root, b_root, remote = tmp_path / "a", tmp_path / "b", tmp_path / "remote"
    key = pyrage.x25519.Identity.generate()
    (tmp_path / "key.txt").write_text(str(key) + "\n")
    (tmp_path / "pass.txt").write_text("correct horse battery staple\n")
    if mode == "recipient":
        keys = ["--encrypt", "--recipient", str(key.to_public()), "--identity", str(tmp_path / "key.txt")]
        wrong_key = pyrage.x25519.Identity.generate()
        (tmp_path / "wrong.txt").write_text(str(wrong_key) + "\n")
        wrong = ["--encrypt", "--recipient", str(wrong_key.to_public()), "--identity", str(tmp_path / "wrong.txt")]
    else:
        keys = ["--encrypt", "--passphrase-file", str(tmp_path / "pass.txt")]
        (tmp_path / "wrong.txt").write_text("not the passphrase\n")
        wrong = ["--encrypt", "--passphrase-file", str(tmp_path / "wrong.txt")]
    a = fake_replica(tmp_path, "a")
    ids = [a.add(f"memory about {SECRET_WORDS[0]}", tags=[SECRET_WORDS[1]]).memory.id,
           a.add("another one").memory.id]
    a.sync(str(remote), **_keys(keys))
    a.close()
    blob = remote_bytes(remote)
    with open(a_root / "data" / "sync" / "replica.json", "rb") as f:
        replica_id = orjson.loads(f.read())["replica"]
    for secret in [*SECRET_WORDS, *ids, replica_id, "memory about", "another one"]:
        assert secret.encode() not in blob, f"{secret!r} is readable on the remote"
    # A wrong key, and no key, through the real command: exit 3, a clear message, nothing changed.
    env = {"MEMFS_DAEMON": "0"}
    run_memfs("--root", str(b_root), "init", env=env)
    before_b, before_remote = tree_digest(b_root / "data" / "memories"), tree_digest(remote)
    for attempt in (wrong, []):
        r = run_memfs("--root", str(b_root), "sync", str(remote), *attempt, env=env)
        assert r.returncode == 3, (r.returncode, r.stderr)
        assert "nothing was changed" in r.stderr.lower(), r.stderr
        assert tree_digest(b_root / "data" / "memories") == before_b
        assert not (b_root / "data" / "conflicts").exists()
        with sqlite3.connect(b_root / "data" / "sync" / "sync.sqlite") as db:
            assert db.execute("SELECT count(*) FROM peers").fetchone()[0] == 0
            assert db.execute("SELECT count(*) FROM heads").fetchone()[0] == 0
    assert tree_digest(remote) == before_remote
    b = fake_replica(tmp_path, "b")
    try:
        assert b.sync(str(remote), **_keys(keys)).applied == 2
        assert contents(b) == {i: c for i, c in contents(b).items()} and set(contents(b)) == set(ids)
    finally:
        b.close()


def _keys(argv: list[str]) -> dict:
    """The command line's key options as the operation's keyword arguments."""
    out = {}
    for flag, name in (("--recipient", "recipients"), ("--identity", "identity_file"),
                       ("--passphrase-file", "passphrase_file")):
        if flag in argv:
            value = argv[argv.index(flag) + 1]
            out[name] = [value] if name == "recipients" else value
    return out


# -- compaction (`memfs sync compact`): a base is verified like any object, and covers only its own replica

def test_a_truncated_base_is_refused_naming_it(pair):
    a, b, remote = pair
    base = remote / a.sync_compact(str(remote)).base
    base.write_bytes(base.read_bytes()[:-40])
    assert "truncated or damaged" in refused(b, remote, base.name)
    assert contents(b) == {}


def test_a_base_forged_under_another_replicas_prefix_is_refused_naming_it(pair, tmp_path):
    import hashlib

    from memfs.sync.objects import batch_name, decode, encode

    a, b, remote = pair
    c = fake_replica(tmp_path, "c")  # another replica, with a base of its own
    try:
        c.add("planted by c"), c.sync(str(remote)), c.add("more from c"), c.sync(str(remote))
        theirs = remote / c.sync_compact(str(remote)).base
    finally:
        c.close()
    # Placed as a's next object, with a's batches removed, so a reader must jump to it.
    a_prefix = a.sync_status().remotes[0]["prefix"]
    forged = decode(theirs.name, theirs.read_bytes())
    forged.seq, forged.prev = 3, None
    data = encode(forged)
    target = remote / batch_name(a_prefix, 3, data, base=True)
    target.write_bytes(data)
    for p in (remote / "replicas" / a_prefix).glob("000000000[12]-*.mfs"):
        p.unlink()
    assert hashlib.sha256(target.read_bytes()).hexdigest()[:16] in target.name
    assert "lies under" in refused(b, remote, target.name)
    assert contents(b) == {}


def test_an_object_removed_with_no_base_covering_it_is_refused(pair):
    _a, b, remote = pair
    batches(remote)[0].unlink()  # the second batch is still there
    assert "removed object" in refused(b, remote, "0000000001-*.mfs")
    assert contents(b) == {}


def test_a_pushed_version_id_is_the_one_every_reader_computes_from_the_file(tmp_path):
    """A push hashes the document the catalog keeps (no memory is written out again for it); that id
    must be the one computed from the file's memory, here and on the replica that checks it (plumbing:
    FAKE embedder), whatever optional fields and hand-written oddities the file holds."""
    from memfs.sync.versions import version_of, version_of_doc

    a = fake_replica(tmp_path, "a")
    try:
        a.add("plain")
        full = a.add("every field", tags=["x", "y"], type="decision",
                     metadata={"f": 0.1, "n": [1, None, {"k": "é"}]}).memory
        m = a.add("written by hand next").memory
        for mem_id, fields in [(full.id, dict(namespace="ns", key="k1", expires_at="2031-01-01T00:00:00Z")),
                               (m.id, dict(created_at="2025-01-31T09:00:00.123456+02:00", tags=[" spaced "],
                                           origins=["z", "a"], source="vim", content_hash="ignored", type=" note "))]:
            path = path_of(a, mem_id)
            path.write_bytes(orjson.dumps({**orjson.loads(path.read_bytes()), **fields}))
        with a.owner.using() as store:
            store.reconcile()
            entries = store.catalog.get_many(list(store.catalog.ids()))
            assert len(entries) == 3
            for e in entries.values():
                assert version_of_doc(e.doc) == version_of(store.read_file(e.path)) == version_of(e.memory)
        b = fake_replica(tmp_path, "b")
        a.sync(str(tmp_path / "remote")), b.sync(str(tmp_path / "remote"))
        assert contents(b) == contents(a)
        b.close()
    finally:
        a.close()
