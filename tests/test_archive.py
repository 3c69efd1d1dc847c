"""Issue #11 findings 4, 5, 6, 7: hostile and damaged archives, built here, against the real codec,
the real restore transaction and the real `manage_data.py` command line."""

import hashlib
import io
import os
import tarfile
import zlib
from collections import namedtuple
from pathlib import Path

import orjson
import pytest
import zstandard
from click.testing import CliRunner

from memfs import archive as codec
from memfs import restore
from memfs.archive import CorruptBackupError, manifest_bytes, printable
from memfs.backups import BackupFile, create_backup, list_backups, md5_of
from memfs.errors import MemfsError
from memfs.filestore import Layout
from memfs.manage import cli
from memfs.tar_writer import CHUNK
from memfs.restore import restore_backup, verify_and_extract, verify_backup

shutil_usage = namedtuple("usage", "total used free")
CONTROL = [chr(c) for c in [*range(0x20), *range(0x7f, 0xa0)]]


@pytest.fixture
def layout(tmp_path) -> Layout:
    """A store's data/ made of plain files (the codec and the swap need no model)."""
    layout = Layout(tmp_path / "store")
    layout.create()
    for i in range(20):
        (layout.memories / f"m{i:02}.json").write_text(orjson.dumps({"content": f"memory {i}"}).decode())
    (layout.indexes / "catalog.sqlite").write_bytes(os.urandom(3 << 20))  # streamed: over one chunk
    (layout.embeddings / "seg").mkdir()
    (layout.embeddings / "seg" / "data_level0.bin").write_bytes(os.urandom(4096))
    return layout


def state(layout: Layout) -> dict[str, str]:
    return {p.relative_to(layout.data).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(layout.data.rglob("*")) if p.is_file() and "logs" not in p.parts
            and p.name != "memfs.lock"}


# -- building archives ------------------------------------------------------------------------------


def header(name: str, size: int, kind=tarfile.REGTYPE, fmt=tarfile.GNU_FORMAT) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime, info.mode = size, kind, 1735689600, 0o644
    return info.tobuf(fmt, "utf-8", "surrogateescape")


def member(name: str, data: bytes = b"{}", **kw) -> bytes:
    return header(name, len(data), **kw) + data + bytes(-len(data) % 512)


def v2_manifest(files: dict[str, bytes], **override) -> bytes:
    raw = orjson.loads(manifest_bytes(memfs_version="0.1.0", created_at="2025-01-01T00:00:00Z", kind="backup",
                                      host="h", memory_count=len(files), model_id="m",
                                      sizes={k: len(v) for k, v in files.items()}, dirs=[]))
    raw.update(override)
    return orjson.dumps(raw)


def v2_stream(files: dict[str, bytes], *, extra: bytes = b"", **override) -> bytes:
    """A well-formed format-2 tar stream, with `extra` members spliced in after the manifest."""
    checks = orjson.dumps({"files": {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}})
    return (member(codec.MANIFEST, v2_manifest(files, **override)) + extra
            + b"".join(member(k, v) for k, v in files.items()) + member(codec.CHECKSUMS, checks) + bytes(1024))


def write_archive(directory: Path, pieces, compression="gz", name="memory_backup_20250101_000000") -> BackupFile:
    """Compress a tar stream (bytes, or an iterable of pieces) into a backup file with a matching .md5."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.tar.{compression}"
    comp = zlib.compressobj(6, zlib.DEFLATED, 31) if compression == "gz" else \
        zstandard.ZstdCompressor(level=3).compressobj()
    with open(path, "wb") as f:
        for piece in ([pieces] if isinstance(pieces, bytes) else pieces):
            f.write(comp.compress(piece))
        f.write(comp.flush())
    (directory / f"{path.name}.md5").write_text(f"{md5_of(path)}  {path.name}\n")
    return BackupFile.parse(path)


def bomb(name: str, size: int):
    """A member of `size` zero bytes, generated as it is compressed (2 GiB never sits in memory)."""
    yield header(name, size)
    zeros = bytes(16 << 20)
    for left in range(size, 0, -len(zeros)):
        yield zeros[:left]


class Counting:
    """How many bytes of tar stream the restore decompressed, and how many it staged."""

    def __init__(self, monkeypatch):
        self.decompressed = self.staged = self.peak = 0
        real_next, real_write = codec.DecompressingSource.next_chunk, restore._MemberFile.write

        def next_chunk(source):
            chunk = real_next(source)
            self.decompressed += len(chunk or b"")
            return chunk

        def write(f, piece):
            self.staged += len(piece)
            self.peak = max(self.peak, self.staged)
            real_write(f, piece)

        monkeypatch.setattr(codec.DecompressingSource, "next_chunk", next_chunk)
        monkeypatch.setattr(restore._MemberFile, "write", write)


def refused_without_change(layout: Layout, archive: BackupFile, reason: str) -> CorruptBackupError:
    before = state(layout)
    n_backups = len(list_backups(layout.backups)[0])
    with pytest.raises(CorruptBackupError) as e:
        restore_backup(layout, archive)
    assert reason in str(e.value)
    assert archive.name in str(e.value) and "Nothing was changed" in str(e.value)  # finding 7
    assert state(layout) == before
    assert len(list_backups(layout.backups)[0]) == n_backups  # not even a pre-restore snapshot
    assert not list(layout.data.glob(".restore-*"))
    return e.value


# -- finding 6: verify means restorable ---------------------------------------------------------------


@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_a_real_backup_verifies_deep_and_quick_and_restores(layout, compression):
    made = create_backup(layout, compression=compression)
    deep = verify_backup(made)
    assert deep.status == "ok" and deep.memory_count == 20 and deep.total_bytes > 3 << 20
    assert verify_backup(made, deep=False).status == "checksum ok"
    # the manifest is the first member, the checksums the last
    names = [i.name for i in tarfile.open(made.path)] if compression == "gz" else None
    if names:
        assert names[0] == codec.MANIFEST and names[-1] == codec.CHECKSUMS
    before = state(layout)
    (layout.memories / "m00.json").unlink()
    result = restore_backup(layout, made)
    assert state(layout) == before and result.memory_count == 20 and result.pre_restore is not None


@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_a_truncated_archive_with_a_recomputed_md5_is_not_ok(layout, compression):
    """Finding 6: `list --verify` / `validate --backups` compared only the MD5 and said "ok"."""
    made = create_backup(layout, compression=compression)
    made.path.write_bytes(made.path.read_bytes()[: made.size * 2 // 3])
    made.md5_path.write_text(f"{md5_of(made.path)}  {made.name}\n")
    assert verify_backup(made, deep=False).status == "checksum ok"  # --quick: the checksum alone
    report = verify_backup(made)
    assert report.status == "corrupt" and not report.ok, report
    assert "truncated" in report.reason or "does not decompress" in report.reason
    from memfs.validate import _check_backups

    assert [p.message.split(":")[0] for p in _check_backups(layout, layout.backups)] == ["corrupt"]


def test_an_archive_of_a_newer_format_is_not_ok(layout, tmp_path):
    files = {"data/memories/a.json": b'{"content": "x"}'}
    archive = write_archive(tmp_path / "b", v2_stream(files, format="memfs.backup/9"))
    report = verify_backup(archive)
    assert report.status == "newer format" and "upgrade memfs" in report.reason
    before = state(layout)
    with pytest.raises(MemfsError, match="newer memfs"):
        restore_backup(layout, archive)
    assert state(layout) == before


def test_a_format_1_archive_still_verifies_and_restores(layout, tmp_path):
    """Backups made before issue #11 (manifest last, hashes only) stay restorable."""
    files = {"data/memories/a.json": b'{"content": "from format 1"}'}
    manifest = orjson.dumps({"format": "memfs.backup/1", "created_at": "2025-01-01T00:00:00Z", "memory_count": 1,
                             "files": {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}})
    archive = write_archive(tmp_path / "b", b"".join(member(k, v) for k, v in files.items())
                            + member(codec.MANIFEST, manifest) + bytes(1024))
    assert verify_backup(archive).status == "ok"
    restore_backup(layout, archive)
    assert (layout.memories / "a.json").read_bytes() == files["data/memories/a.json"]


# -- finding 5: decompression bombs -------------------------------------------------------------------


BOMB = 256 << 20  # the bench uses the 2 GiB; the refusal does not depend on the size


def test_a_bomb_member_missing_from_the_manifest_is_refused_at_its_header(layout, tmp_path, monkeypatch):
    files = {"data/memories/a.json": b'{"content": "x"}'}
    stream = v2_stream(files)
    head = member(codec.MANIFEST, v2_manifest(files))
    archive = write_archive(tmp_path / "b", [head, *bomb("data/memories/zeros.json", BOMB),
                                             bytes(-BOMB % 512), stream[len(head):]])
    assert archive.size < BOMB / 500
    counts = Counting(monkeypatch)
    refused_without_change(layout, archive, "not in the manifest")
    assert counts.peak == 0 and counts.decompressed < 8 << 20  # refused at the header, not after 256 MiB
    assert verify_backup(archive).status == "corrupt"  # the dry run: the same refusal, writing nothing


def test_a_member_longer_than_the_manifest_says_is_refused_at_its_header(layout, tmp_path, monkeypatch):
    files = {"data/memories/a.json": b"{}"}
    head = member(codec.MANIFEST, v2_manifest(files))
    archive = write_archive(tmp_path / "b", [head, *bomb("data/memories/a.json", BOMB), bytes(1024)])
    counts = Counting(monkeypatch)
    refused_without_change(layout, archive, "the manifest says 2")
    assert counts.peak == 0 and counts.decompressed < 8 << 20


def test_a_format_1_bomb_is_refused_before_anything_is_staged(layout, tmp_path, monkeypatch):
    """Manifest last (format 1), so its sizes are unknown until the end: the first pass writes nothing."""
    manifest = orjson.dumps({"format": "memfs.backup/1", "created_at": "2025-01-01T00:00:00Z", "memory_count": 1, "files": {}})
    archive = write_archive(tmp_path / "b", [*bomb("data/memories/zeros.json", 64 << 20),
                                             member(codec.MANIFEST, manifest), bytes(1024)])
    counts = Counting(monkeypatch)
    refused_without_change(layout, archive, "differ from the manifest")
    assert counts.peak == 0


def test_free_space_is_checked_against_the_manifest_total_before_staging(layout, monkeypatch):
    made = create_backup(layout)
    monkeypatch.setattr(restore.shutil, "disk_usage", lambda p: shutil_usage(1 << 40, 1 << 40, 1 << 20))
    counts = Counting(monkeypatch)
    before = state(layout)
    with pytest.raises(MemfsError, match=r"needs 3\.\d MB .* 1\.0 MB is free"):
        restore_backup(layout, made)
    assert counts.peak == 0 and state(layout) == before and not list(layout.data.glob(".restore-*"))


def test_a_dry_run_writes_nothing_at_all(layout, tmp_path):
    made = create_backup(layout)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert verify_backup(made).status == "ok"
    assert sorted(p for p in tmp_path.rglob("*")) == before


# -- finding 4: control characters ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["data/memories/a\nb.json", "data/memories/\x1b[2J\x1b[31mred.json",
                                  "data/memories/\x9b31mc1.json", "data/memories/bell\x07.json"],
                         ids=["newline", "esc", "c1-csi", "bel"])
def test_names_with_control_characters_are_refused_and_never_printed_raw(layout, tmp_path, name):
    files = {"data/memories/a.json": b"{}"}
    archive = write_archive(tmp_path / "b", b"".join([member(name), member(codec.MANIFEST, orjson.dumps(
        {"format": "memfs.backup/1", "created_at": "2025-01-01T00:00:00Z", "memory_count": 0, "files": {}})), bytes(1024)]))
    error = refused_without_change(layout, archive, "control characters")
    assert not any(c in str(error) for c in CONTROL)
    # and the same inside a format-2 manifest
    archive2 = write_archive(tmp_path / "c", v2_stream({**files, name: b"{}"}), name="memory_backup_20250102_000000")
    error = refused_without_change(layout, archive2, "control characters")
    assert not any(c in str(error) for c in CONTROL)
    result = CliRunner().invoke(cli, ["--root", str(layout.root), "restore", str(archive2.path), "--yes"])
    assert result.exit_code == 3 and "control characters" in result.output
    assert not any(c in result.output.replace("\n", "") for c in CONTROL), repr(result.output)


def test_a_manifest_with_escape_sequences_in_its_fields_is_refused(layout, tmp_path):
    files = {"data/memories/a.json": b"{}"}
    archive = write_archive(tmp_path / "b", v2_stream(files, created_at="\x1b]0;pwned\x07"))
    error = refused_without_change(layout, archive, "malformed")
    assert "\x1b" not in str(error)


def test_printable_escapes_what_a_terminal_would_act_on():
    assert printable("ok name.json") == "ok name.json"
    assert printable("a\x1b[31mb\nc\u202ed\udc9b") == "a\\x1b[31mb\\nc\\u202ed\\udc9b"


# -- finding 7: messages ---------------------------------------------------------------------------


def test_a_damaged_gzip_stream_says_it_does_not_decompress_not_zlib_text(layout):
    made = create_backup(layout)
    data = bytearray(made.path.read_bytes())
    data[-8] ^= 0xFF  # the gzip trailer's CRC-32
    made.path.write_bytes(bytes(data))
    made.md5_path.write_text(f"{md5_of(made.path)}  {made.name}\n")
    error = refused_without_change(layout, made, "corrupted: the data does not decompress")
    assert "Error -3" not in str(error).split("(")[0]
    assert verify_backup(made).status == "corrupt"


def test_a_pax_header_is_refused_with_what_wrote_it_and_what_to_do(layout, tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("data/memories/café.json")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"{}"))
    archive = write_archive(tmp_path / "b", buf.getvalue())
    error = refused_without_change(layout, archive, "PAX")
    assert "--format=gnu" in str(error) and "tarfile" in str(error)


def test_a_giant_long_name_member_is_refused_before_it_is_read(layout, tmp_path):
    archive = write_archive(tmp_path / "b", header("././@LongLink", 1 << 30, kind=tarfile.GNUTYPE_LONGNAME,
                                                   fmt=tarfile.USTAR_FORMAT) + bytes(4096))
    refused_without_change(layout, archive, "long-name member")


def test_a_member_after_the_checksums_is_refused(layout, tmp_path):
    files = {"data/memories/a.json": b"{}"}
    stream = v2_stream(files)[:-1024] + member("data/memories/late.json") + bytes(1024)
    refused_without_change(layout, write_archive(tmp_path / "b", stream), "after the archive's last member")


def test_verify_and_extract_into_staging_holds_no_more_than_the_manifest_total(layout, tmp_path, monkeypatch):
    made = create_backup(layout)
    counts = Counting(monkeypatch)
    manifest = verify_and_extract(made, tmp_path / "staging")
    assert counts.peak == manifest["total_bytes"]


def test_a_file_edited_during_the_backup_restarts_it_so_the_manifest_stays_true(layout, monkeypatch):
    """The manifest (first member) promises each file's size; a hand edit meanwhile restarts the archive."""
    from memfs import backups

    real, calls = backups._add_file, []

    def add_file(sink, path, arcname, st):
        calls.append(arcname)
        if len(calls) == 1:  # while the first file goes in, someone appends to a later one
            with open(layout.memories / "m19.json", "a") as f:
                f.write(" ")
        return real(sink, path, arcname, st)

    monkeypatch.setattr(backups, "_add_file", add_file)
    made = create_backup(layout)
    assert verify_backup(made).status == "ok"
    assert calls.count("data/memories/m19.json") == 2  # the first attempt refused it, the second took it
    assert not list(layout.backups.glob(".*.partial"))


def test_the_list_header_says_the_policy_and_what_each_status_means():
    from memfs.backups import describe_policy
    from memfs.restore import STATUS_MEANINGS
    from memfs.retention import Retention

    text = describe_policy(Retention(7, 4, 12, pre_restore=2, pre_restore_days=5))
    assert "7 days, 4 ISO weeks and 12 months" in text and "younger than 5 days" in text
    assert {"ok", "checksum ok", "encrypted", "missing", "mismatch", "corrupt", "newer format",
            "wrong key"} <= set(STATUS_MEANINGS)


def test_a_failed_pre_restore_snapshot_changes_nothing_and_leaves_no_staging(layout, monkeypatch):
    made = create_backup(layout)
    before = state(layout)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(restore, "create_backup", full_disk)
    with pytest.raises(OSError):
        restore_backup(layout, made)
    assert state(layout) == before and not list(layout.data.glob(".restore-*"))


# -- issue #24 item 6: every manifest field checked before anything is swapped, wherever it sits ---------

V1 = {"format": "memfs.backup/1", "created_at": "2025-01-01T00:00:00Z", "memory_count": 1}
BAD_FIELDS = {"format 3": {"format": "memfs.backup/3"}, "format 99": {"format": "memfs.backup/99"},
              "foreign": {"format": "tar.backup/1"}, "no format": {"format": None},
              "format 0": {"format": "memfs.backup/0"}, "format not text": {"format": ["memfs.backup/1"]},
              "count many": {"memory_count": "many"}, "count bool": {"memory_count": True},
              "count negative": {"memory_count": -1}, "no count": {"memory_count": None},
              "bad time": {"created_at": "yesterday"}, "kind": {"kind": "weekly"}, "host": {"host": 7}}


def _manifest_last(files: dict[str, bytes], override: dict) -> bytes:
    manifest = {**V1, "files": {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}, **override}
    manifest = {k: v for k, v in manifest.items() if v is not None}
    return b"".join(member(k, v) for k, v in files.items()) + member(codec.MANIFEST, orjson.dumps(manifest)) \
        + bytes(1024)


@pytest.mark.parametrize("where", ["last", "first"])
@pytest.mark.parametrize("override", BAD_FIELDS.values(), ids=BAD_FIELDS.keys())
def test_a_bad_manifest_is_refused_wherever_it_sits_and_nothing_is_swapped(layout, tmp_path, where, override):
    files = {"data/memories/a.json": b'{"content": "from the archive"}'}
    if where == "last":
        stream = _manifest_last(files, override)
    else:
        raw = orjson.loads(v2_manifest(files, **override))
        raw = {k: v for k, v in raw.items() if v is not None}
        checks = orjson.dumps({"files": {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}})
        stream = (member(codec.MANIFEST, orjson.dumps(raw)) + b"".join(member(k, v) for k, v in files.items())
                  + member(codec.CHECKSUMS, checks) + bytes(1024))
    archive = write_archive(tmp_path / "b", stream)
    report = verify_backup(archive)
    assert not report.ok and report.status in ("corrupt", "newer format"), report
    before = state(layout)
    with pytest.raises(MemfsError):
        restore_backup(layout, archive)
    assert state(layout) == before and not list(layout.data.glob(".restore-*"))
    result = CliRunner().invoke(cli, ["--root", str(layout.root), "restore", str(archive.path), "--yes"])
    assert result.exit_code == 3 and "unexpected error" not in result.output, result.output
    assert "Nothing was changed" in result.output or "nothing was changed" in result.output
    assert state(layout) == before


def test_a_format_2_manifest_last_or_a_format_1_manifest_first_is_refused(layout, tmp_path):
    files = {"data/memories/a.json": b"{}"}
    raw = v2_manifest(files)
    last = write_archive(tmp_path / "b", b"".join(member(k, v) for k, v in files.items())
                         + member(codec.MANIFEST, raw) + bytes(1024))
    assert "cannot be the archive's last member" in verify_backup(last).reason
    first = write_archive(tmp_path / "c", member(codec.MANIFEST, orjson.dumps(
        {**V1, "files": {k: hashlib.sha256(v).hexdigest() for k, v in files.items()}}))
        + b"".join(member(k, v) for k, v in files.items()) + bytes(1024))
    assert verify_backup(first).status == "corrupt"


# -- issue #24 item 11: the compressed stream read to its end; bidi controls refused ---------------------


def _gzip_ending_across_a_read(stream: bytes) -> bytes:
    """A gzip file of `stream` (plus zero padding) whose 8-byte trailer straddles a read of CHUNK
    bytes: the last tar block is decompressed one read before the trailer is checked."""
    for pad in range(0, 16384):
        comp = zlib.compressobj(0, zlib.DEFLATED, 31)
        data = comp.compress(stream + bytes(pad)) + comp.flush()
        if 0 < len(data) % CHUNK < 8:
            return data
    raise AssertionError("no padding put the trailer across a read")


@pytest.mark.parametrize("flip", [-6, -2], ids=["crc", "length"])
def test_a_flipped_gzip_trailer_is_corrupt_even_after_the_tar_has_ended(layout, tmp_path, flip):
    files = {"data/memories/a.json": os.urandom(CHUNK - 8192)}
    data = bytearray(_gzip_ending_across_a_read(v2_stream(files)))
    directory = tmp_path / "b"
    good = write_archive(directory, b"")
    good.path.write_bytes(bytes(data))
    good.md5_path.write_text(f"{md5_of(good.path)}  {good.name}\n")
    assert verify_backup(good).status == "ok"
    data[flip] ^= 0x01
    good.path.write_bytes(bytes(data))
    good.md5_path.write_text(f"{md5_of(good.path)}  {good.name}\n")
    report = verify_backup(good)
    assert report.status == "corrupt" and "does not decompress" in report.reason, report
    refused_without_change(layout, good, "does not decompress")


@pytest.mark.parametrize("compression", ["gz", "zst"])
@pytest.mark.parametrize("tail", [b"garbage", b"\x1f\x8b\x08\x00junk", b"\0" * 100], ids=["text", "gzip-magic", "zeros"])
def test_bytes_after_the_compressed_stream_are_corrupt(layout, compression, tail):
    made = create_backup(layout, compression=compression)
    with open(made.path, "ab") as f:
        f.write(tail)
    made.md5_path.write_text(f"{md5_of(made.path)}  {made.name}\n")
    report = verify_backup(made)
    assert report.status == "corrupt", report
    refused_without_change(layout, made, "corrupted")


def test_data_after_the_end_of_the_tar_is_corrupt_but_zero_padding_is_not(layout, tmp_path):
    files = {"data/memories/a.json": b"{}"}
    padded = write_archive(tmp_path / "b", v2_stream(files) + bytes(9 * 1024))  # GNU tar's 10 KiB record
    assert verify_backup(padded).status == "ok"
    smuggled = write_archive(tmp_path / "c", v2_stream(files) + member("data/memories/late.json", b"{}"))
    refused_without_change(layout, smuggled, "follows the end of the archive")


@pytest.mark.parametrize("char", ["\u202e", "\u202a", "\u2066", "\u2069", "\u200f", "\u061c"])
def test_names_with_bidi_controls_are_refused_with_the_control_characters(layout, tmp_path, char):
    name = f"data/memories/evil{char}nosj.exe"
    archive = write_archive(tmp_path / "b", v2_stream({"data/memories/a.json": b"{}", name: b"{}"}))
    error = refused_without_change(layout, archive, "control characters")
    assert char not in str(error)
    last = write_archive(tmp_path / "c", member(name) + member(codec.MANIFEST, orjson.dumps({**V1, "files": {}}))
                         + bytes(1024), name="memory_backup_20250102_000000")
    refused_without_change(layout, last, "control characters")
