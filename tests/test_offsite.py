"""Issue #11 capability 9: off-site copies through the real rclone, to its local backend and to a real
SFTP server (Debian's sshd, started here on 127.0.0.1)."""

import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import orjson
import pytest

from memfs.backups import create_backup, list_backups, md5_of, prune_backups
from memfs.filestore import Layout
from memfs.offsite import Rclone, copy_offsite, list_remote, offsite_sync
from memfs.retention import Retention

pytestmark = pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone is not installed "
                                "(scripts/test.sh installs Debian's rclone when it runs as root)")
NOW = datetime(2025, 3, 20, 12, tzinfo=timezone.utc)


@pytest.fixture
def layout(tmp_path) -> Layout:
    layout = Layout(tmp_path / "store")
    layout.create()
    for i in range(10):
        (layout.memories / f"m{i}.json").write_text(orjson.dumps({"content": f"memory {i}"}).decode())
    return layout


def daily(layout: Layout, days: int) -> list:
    return [create_backup(layout, now=NOW - timedelta(days=d)) for d in range(days)]


def names_at(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()} if directory.exists() else set()


def test_sync_to_a_local_remote_copies_verifies_and_is_idempotent(layout, tmp_path):
    made = daily(layout, 3)
    dest = tmp_path / "offsite" / "memfs"
    report = offsite_sync(layout.backups, str(dest), Retention(), now=NOW)
    assert report.ok, report.to_dict()
    assert sorted(c.name for c in report.copied) == sorted(b.name for b in made)
    assert {c.verified_by for c in report.copied} == {"md5"}
    assert names_at(dest) == {n for b in made for n in (b.name, b.md5_path.name)}
    check = subprocess.run("md5sum -c *.md5", shell=True, cwd=dest, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout
    again = offsite_sync(layout.backups, str(dest), Retention(), now=NOW)
    assert again.ok and again.copied == [] and len(again.already_there) == 3


def test_the_same_retention_applies_to_the_remote_copies(layout, tmp_path):
    dest = tmp_path / "offsite"
    daily(layout, 6)
    assert offsite_sync(layout.backups, str(dest), Retention(7, 0, 0), now=NOW).ok
    # Locally retention keeps 3 days now; the remote follows, deleting archive and .md5 together.
    prune_backups(layout.backups, Retention(3, 0, 0), now=NOW)
    report = offsite_sync(layout.backups, str(dest), Retention(3, 0, 0), now=NOW)
    assert report.ok and len(report.deleted) == 3
    local = {b.name for b in list_backups(layout.backups)[0]}
    assert {b.name for b in list_remote(str(dest)).backups} == local
    assert len(names_at(dest)) == 6
    # A copy the remote keeps for longer (monthly) survives there though it is gone locally.
    old = create_backup(layout, now=NOW - timedelta(days=40))
    assert offsite_sync(layout.backups, str(dest), Retention(3, 0, 2), now=NOW).ok
    old.path.unlink()
    old.md5_path.unlink()
    report = offsite_sync(layout.backups, str(dest), Retention(3, 0, 2), now=NOW)
    assert report.ok and old.name in {b.name for b in list_remote(str(dest)).backups}
    # Files there that are not ours are never touched.
    (dest / "README.txt").write_text("ops notes")
    offsite_sync(layout.backups, str(dest), Retention(1, 0, 0), now=NOW)
    assert (dest / "README.txt").read_text() == "ops notes"


def test_a_damaged_remote_copy_is_found_by_checksum_and_uploaded_again(layout, tmp_path):
    dest = tmp_path / "offsite"
    made = daily(layout, 1)[0]
    assert offsite_sync(layout.backups, str(dest), now=NOW).ok
    copy = dest / made.name
    data = bytearray(copy.read_bytes())
    data[100] ^= 0xFF  # same size, different bytes
    copy.write_bytes(bytes(data))
    report = offsite_sync(layout.backups, str(dest), now=NOW)
    assert report.ok and [c.name for c in report.copied] == [made.name]
    assert md5_of(copy) == md5_of(made.path)


@pytest.mark.parametrize("damage", ["flip", "truncate", "md5"])
def test_a_damaged_copy_held_only_off_site_is_reported_and_no_longer_counts(layout, tmp_path, damage):
    """Issue #24 item 9: a copy gone locally (a monthly, say) was never re-verified, and the sync said ok."""
    dest = tmp_path / "offsite"
    old, new = daily(layout, 2)[::-1]
    assert offsite_sync(layout.backups, str(dest), now=NOW).ok
    old.path.unlink()
    old.md5_path.unlink()
    copy = dest / old.name
    if damage == "flip":
        data = bytearray(copy.read_bytes())
        data[len(data) // 2] ^= 0xFF  # same size, different bytes
        copy.write_bytes(bytes(data))
    elif damage == "truncate":
        copy.write_bytes(copy.read_bytes()[:-10])
    else:
        (dest / old.md5_path.name).write_text(f"{'0' * 32}  {old.name}\n")
    report = offsite_sync(layout.backups, str(dest), now=NOW)
    assert not report.ok and len(report.errors) == 1, report.to_dict()
    assert old.name in report.errors[0] and "damaged" in report.errors[0]
    assert copy.exists() and report.deleted == []  # left in place: it may be the last copy there is
    good = offsite_sync(layout.backups, str(dest), Retention(1, 0, 0), now=NOW)  # retention without it
    assert copy.exists() and good.deleted == [] and not good.ok
    copy.unlink()
    (dest / old.md5_path.name).unlink()
    assert offsite_sync(layout.backups, str(dest), now=NOW).ok


def test_a_failed_copy_is_reported_and_the_local_backup_stands(layout, tmp_path):
    made = daily(layout, 1)[0]
    report = offsite_sync(layout.backups, "no-such-remote:backups", now=NOW)
    assert not report.ok and report.errors and "no-such-remote" in report.errors[0]
    assert made.path.exists() and made.md5_path.exists()
    missing = offsite_sync(layout.backups, str(tmp_path / "x"), rclone=Rclone(binary="no-such-rclone-binary"))
    assert not missing.ok and "rclone is not installed" in missing.errors[0]
    # A destination that cannot be written (a file where the directory should be): the upload fails,
    # the result says which backup and why.
    (tmp_path / "blocked").write_text("a file, not a directory")
    copy = copy_offsite(made, str(tmp_path / "blocked" / "sub"))
    assert not copy.ok and copy.name == made.name and "upload failed" in copy.error


def test_a_dry_run_uploads_and_deletes_nothing(layout, tmp_path):
    daily(layout, 2)
    dest = tmp_path / "offsite"
    report = offsite_sync(layout.backups, str(dest), dry_run=True, now=NOW)
    assert len(report.copied) == 2 and names_at(dest) == set()


# -- a real SFTP server -------------------------------------------------------------------------------


@pytest.fixture
def sftp(sftp_rclone):
    """Debian's sshd on 127.0.0.1 (tests/conftest.py's sftp_rclone) as an Rclone and the remote's folder."""
    conf, remote_dir = sftp_rclone
    yield Rclone(config=conf), remote_dir


def test_sync_to_a_real_sftp_server(layout, sftp):
    rclone, remote_dir = sftp
    dest = f"memfs-sftp:{remote_dir}"
    made = daily(layout, 4)
    report = offsite_sync(layout.backups, dest, Retention(7, 0, 0), rclone=rclone, now=NOW)
    assert report.ok, report.to_dict()
    assert {c.verified_by for c in report.copied} <= {"md5", "download"} and len(report.copied) == 4
    for b in made:
        assert md5_of(remote_dir / b.name) == md5_of(b.path)
        assert (remote_dir / b.md5_path.name).read_text() == b.md5_path.read_text()
    prune_backups(layout.backups, Retention(2, 0, 0), now=NOW)
    report = offsite_sync(layout.backups, dest, Retention(2, 0, 0), rclone=rclone, now=NOW)
    assert report.ok and len(report.deleted) == 2 and len(list(remote_dir.iterdir())) == 4
    # An unreachable server: reported, nothing raised, local backups intact.
    down = Rclone(config=rclone.config, flags=("--contimeout", "2s", "--retries", "1", "--low-level-retries", "1"))
    bad = rclone.config.read_text().replace("host = 127.0.0.1", "host = 127.0.0.2")
    rclone.config.write_text(bad)
    report = offsite_sync(layout.backups, dest, Retention(2, 0, 0), rclone=down, now=NOW)
    assert not report.ok and all(b.path.exists() for b in list_backups(layout.backups)[0])
