"""The document format (no model needed): defaults, validation messages, round trips, atomic writes."""

from datetime import datetime, timezone

import orjson
import pytest

from memfs.documents import FORMAT, from_bytes, parse_time
from memfs.errors import InvalidDocumentError, UnsupportedFormatError
from memfs.filestore import atomic_write, is_ignored_name, new_relpath, scan

T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


def parse(doc):
    data = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return from_bytes(data, default_id="inbox/x", default_time=T0)


def test_bare_content_gets_defaults():
    m = parse({"content": "hello"})
    assert (m.id, m.tags, m.type, m.metadata, m.created_at, m.updated_at) == ("inbox/x", (), "note", {}, T0, T0)


@pytest.mark.parametrize("doc, reason", [
    (b"{", "invalid JSON"),
    ([1, 2], "JSON object"),
    ({"text": "x"}, "missing 'content'"),
    ({"content": "  "}, "'content' is empty"),
    ({"content": "x", "tags": "ui"}, "'tags' must be a list"),
    ({"content": "x", "metadata": []}, "'metadata' must be a JSON object"),
    ({"content": "x", "created_at": "last tuesday"}, "ISO-8601"),
    ({"content": "x", "format": "other/1"}, "'format' must look like"),
    ({"content": "x", "id": ""}, "'id' must be"),
])
def test_invalid_documents_say_why(doc, reason):
    with pytest.raises(InvalidDocumentError, match=reason):
        parse(doc)


def test_newer_format_is_unsupported():
    with pytest.raises(UnsupportedFormatError, match="newer memfs"):
        parse({"content": "x", "format": "memfs.memory/2"})
    assert parse({"content": "x", "format": "memfs.memory/1"}).content == "x"


def test_round_trip_preserves_everything():
    doc = {"format": FORMAT, "id": "a", "content": "c", "tags": ["t"], "type": "decision", "namespace": "ns",
           "key": "k", "metadata": {"n": 1}, "created_at": "2025-01-01T00:00:00Z",
           "updated_at": "2025-01-02T00:00:00.500000Z", "expires_at": "2026-01-01T00:00:00Z", "source": "agent",
           "unknown": {"kept": True}}
    m = parse(doc)
    assert orjson.loads(m.to_bytes()) == doc
    assert parse(m.to_bytes()) == m


def test_content_hash_in_file_is_not_trusted():
    m = parse({"content": "real", "content_hash": "0" * 64})
    assert m.content_hash != "0" * 64 and "content_hash" not in m.to_dict()


def test_times_accept_offsets_and_dates():
    assert parse_time("2025-01-01") == datetime(2025, 1, 1, tzinfo=timezone.utc)
    assert parse_time("2025-01-01T02:00:00+02:00") == datetime(2025, 1, 1, tzinfo=timezone.utc)


def test_ignored_names():
    for name in [".a.json.swp", "a.json~", ".#a.json", "a.tmp", ".hidden.json", "a.txt", "4913"]:
        assert is_ignored_name(name), name
    assert not is_ignored_name("a.json")


def test_atomic_write_replaces_whole_and_leaves_no_temp(tmp_path):
    target = tmp_path / "d" / "m.json"
    atomic_write(target, b"one")
    atomic_write(target, b"two")
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["m.json"]
    assert list(scan(tmp_path)) == ["d/m.json"]


def test_new_relpath_is_humane_and_unique(tmp_path):
    rel = new_relpath(tmp_path, "abcdef0123456789", "User prefers dark theme!", T0)
    assert rel == "2025/01/02/user-prefers-dark-theme-abcdef01.json"
    atomic_write(tmp_path / rel, b"{}")
    assert new_relpath(tmp_path, "abcdef0123456789", "User prefers dark theme!", T0).endswith("-2.json")
