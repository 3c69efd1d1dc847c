"""A full disk: the user is told what happened, and nothing is lost (a real tmpfs of a few MB)."""

import os
import subprocess

import orjson
import pytest
from click.testing import CliRunner

from memfs.cli import cli as memfs_cli
from memfs.manage import cli as manage_cli


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory):
    """Take every free byte, and return the filler so a test can give the space back."""
    filler = directory / "filler.bin"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * (1 << 16))
                f.flush()
        except OSError:
            pass
    return filler


def test_full_disk_add_and_backup_fail_cleanly(small_disk):
    root = small_disk / "store"
    run = CliRunner().invoke
    assert run(memfs_cli, ["--root", str(root), "init"]).exit_code == 0
    first = run(memfs_cli, ["--root", str(root), "add", "kept safe through a full disk", "--json"])
    assert first.exit_code == 0, first.output
    path = root / "data" / "memories" / orjson.loads(first.stdout)["path"]
    before = path.read_bytes()
    filler = fill(small_disk)

    result = run(memfs_cli, ["--root", str(root), "update", orjson.loads(first.stdout)["id"],
                             "--content", "x" * 200_000])
    assert result.exit_code == 3 and "nothing was lost" in result.output
    assert "no space left" in result.output or "disk is full" in result.output
    assert path.read_bytes() == before
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]

    result = run(manage_cli, ["--root", str(root), "backup"])
    assert result.exit_code == 3 and ("no space left" in result.output or "disk is full" in result.output)
    assert not [p for p in (root / "backups").iterdir()]  # no partial left behind

    os.unlink(filler)
    assert run(manage_cli, ["--root", str(root), "backup", "--quiet"]).exit_code == 0
    assert run(memfs_cli, ["--root", str(root), "reindex"]).exit_code == 0


def test_full_disk_during_bulk_add_leaves_no_partial_files(small_disk):
    """Bulk add writes a batch of temp files, flushes once, then renames: ENOSPC mid-batch removes
    every temp file and renames none, so the store holds exactly what it held before."""
    import errno

    from memfs import MemoryStore

    root = small_disk / "store"
    with MemoryStore.open(root, create=True) as s:
        s.add("kept safe through a full bulk add")
        filler = fill(small_disk)
        os.truncate(filler, os.path.getsize(filler) - (256 << 10))  # room for a few files, not forty
        with pytest.raises(OSError) as e:
            s.add_many({"content": f"bulk memory {i} " + "y" * 40_000} for i in range(40))
        assert e.value.errno in (errno.ENOSPC, errno.EDQUOT)
        files = sorted(p.name for p in s.layout.memories.rglob("*") if p.is_file())
        assert len(files) == 1 and files[0].startswith("kept-safe") and s.catalog.count() == 1
        os.unlink(filler)
        assert len(s.add_many({"content": f"bulk memory {i}"} for i in range(40))) == 40
