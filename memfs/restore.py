"""The restore transaction: verify and extract to staging, snapshot, swap, journal, and finishing a
restore that a crash interrupted.

Restore never touches the current data until the archive has passed every check: MD5, member safety,
manifest hashes, format version. The new data is then swapped in directory by directory with
RENAME_EXCHANGE, recorded in a journal so that a crash mid-swap is rolled forward at the next start.
No file in the backup directory is ever deleted or moved by a restore.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import orjson

from .archive import (MANIFEST, PARTS, CorruptBackupError, Progress, _DecompressingSource, _StreamReader,
                      _check_manifest, _check_member, _next_header)
from .backups import STAGING_PREFIX, BackupFile, create_backup, md5_of, read_md5_file
from .errors import MemfsError, UnsupportedFormatError
from .filestore import Layout, atomic_write, fsync_dir, libc, sync_filesystem

# -- restore ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreResult:
    archive: BackupFile
    pre_restore: BackupFile | None
    memory_count: int


def restore_summary(result: RestoreResult, embedded: int, problems: list) -> dict:
    return {"archive": str(result.archive.path), "memory_count": result.memory_count, "embedded": embedded,
            "pre_restore": str(result.pre_restore.path) if result.pre_restore else None,
            "problems": [p.to_dict() for p in problems]}


def verify_and_extract(archive: BackupFile, staging: Path, *, verify_md5: bool = True,
                       progress: Progress | None = None) -> dict:
    """Check the archive completely, extracting into `staging`. Returns the manifest.

    Raises CorruptBackupError (nothing outside staging touched) on any problem.
    """
    if verify_md5:
        expected = read_md5_file(archive.md5_path)
        if expected is None:
            raise CorruptBackupError(
                f"{archive.md5_path} is missing or unreadable, so {archive.name} cannot be verified; "
                "restore it with --no-verify only if you trust the file")
        if md5_of(archive.path) != expected:
            raise CorruptBackupError(
                f"{archive.name} does not match its checksum ({archive.md5_path.name}): the file is damaged "
                "or truncated; pick another backup (`manage_data.py list --verify`)")
    staging.mkdir(parents=True)
    source = _DecompressingSource(archive.path, archive.compression)
    try:
        manifest, hashes = _extract(source, staging, progress)
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise MemfsError(f"no space left while unpacking {archive.name} into {staging}; free space and "
                             "try again (nothing was changed)") from e
        raise CorruptBackupError(f"{archive.name} could not be read ({e}); nothing was changed") from e
    except (CorruptBackupError, UnsupportedFormatError):
        raise
    except Exception as e:  # tarfile, zlib and zstd each have their own error types for a bad stream
        raise CorruptBackupError(f"{archive.name} is not a readable archive ({e}); it may be truncated. "
                                 "Nothing was changed; pick another backup") from e
    finally:
        source.close()
    _check_manifest(archive, manifest, hashes)
    return manifest


def _extract(source: _DecompressingSource, staging: Path, progress: Progress | None) -> tuple[dict | None, dict]:
    """Unpack a checked stream into staging: (manifest, SHA-256 of every file written)."""
    reader = _StreamReader(source.next_chunk)
    root = os.fspath(staging)
    hashes: dict[str, str] = {}
    manifest = None
    made_dirs: set[str] = set()
    n = 0
    while member := _next_header(reader):
        name, kind, size, mode, mtime = member
        _check_member(name, kind)
        n += 1
        if kind == tarfile.DIRTYPE:  # directories carry no data
            os.makedirs(f"{root}/{name}", exist_ok=True)
            made_dirs.add(name)
            continue
        if name == MANIFEST:
            try:
                manifest = orjson.loads(reader.read(size))
            except orjson.JSONDecodeError as e:
                raise CorruptBackupError(f"the manifest is not valid JSON ({e})") from e
        else:
            parent = name.rpartition("/")[0]
            if parent not in made_dirs:
                os.makedirs(f"{root}/{parent}", exist_ok=True)
                made_dirs.add(parent)
            hashes[name] = _write_member(f"{root}/{name}", name, reader.pieces(size), mode, mtime)
        reader.skip(-size % tarfile.BLOCKSIZE)
        if progress and n % 500 == 0:
            progress("verify", n, 0)
    return manifest, hashes


def _write_member(path: str, name: str, data: Iterator[memoryview], mode: int, mtime: int) -> str:
    """Write one member's data to a new file; returns its SHA-256. Modes as PEP 706's "data" filter
    sets them: no group/other write or set-id bits, owner read+write, execute only if the owner had it."""
    mode = (mode & 0o755 | 0o600) if mode & 0o100 else (mode & 0o644 | 0o600)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except FileExistsError:
        raise CorruptBackupError(f"member {name!r} appears twice in the archive") from None
    try:
        sha = hashlib.sha256()
        for piece in data:
            sha.update(piece)
            while piece:
                piece = piece[os.write(fd, piece):]
        os.utime(fd, (mtime, mtime))
    finally:
        os.close(fd)
    return sha.hexdigest()


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE)."""
    fn = libc().renameat2
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"cannot swap {a} and {b}: {os.strerror(e)}")


def _journal(staging: Path) -> Path:
    return staging / "JOURNAL"


def swap_in(layout: Layout, staging: Path) -> None:
    """Exchange each part of data/ with the staged copy, journalled so a crash can be rolled forward.

    The staged files are flushed to disk first. Each exchange is atomic; the journal says the staging
    copy is complete and the swap is under way, so `finish_interrupted_restore` completes the rest. data/ itself is not renamed, so this also works
    when data/ is a mount point (docker volumes).
    """
    sync_filesystem(staging)  # one flush for every extracted file, so a power cut cannot leave them empty
    atomic_write(_journal(staging), b"swapping\n")
    for part in PARTS:
        new, cur = staging / "data" / part, layout.data / part
        new.mkdir(parents=True, exist_ok=True)
        marker = new / f"{STAGING_PREFIX}{staging.name}"
        marker.touch()
        if cur.exists():
            _exchange(new, cur)
        else:
            os.rename(new, cur)
        fsync_dir(layout.data)
    atomic_write(_journal(staging), b"swapped\n")
    _cleanup_swap(layout, staging)


def _cleanup_swap(layout: Layout, staging: Path) -> None:
    for part in PARTS:
        (layout.data / part / f"{STAGING_PREFIX}{staging.name}").unlink(missing_ok=True)
    shutil.rmtree(staging)
    fsync_dir(layout.data)


def finish_interrupted_restore(layout: Layout) -> list[str]:
    """Roll forward a swap a crash interrupted; drop staging that never got to swapping. Lock held."""
    notes = []
    if not layout.data.is_dir():
        return notes
    for staging in sorted(layout.data.glob(f"{STAGING_PREFIX}*")):
        journal = _journal(staging)
        state = journal.read_text().strip() if journal.exists() else ""
        if state in ("swapping", "swapped"):
            for part in PARTS:
                if not (layout.data / part / f"{STAGING_PREFIX}{staging.name}").exists():
                    new = staging / "data" / part
                    if new.exists():
                        _exchange(new, layout.data / part) if (layout.data / part).exists() else os.rename(new, layout.data / part)
            _cleanup_swap(layout, staging)
            notes.append(f"finished a restore that was interrupted mid-swap ({staging.name})")
        else:
            shutil.rmtree(staging, ignore_errors=True)
            notes.append(f"removed staging of a restore that was interrupted before any change ({staging.name})")
    return notes


def restore_backup(layout: Layout, archive: BackupFile, *, verify_md5: bool = True,
                   compression: str = "zst", progress: Progress | None = None) -> RestoreResult:
    """Verify, stage, snapshot current data, swap. The caller holds the store's lock (it lives in
    data/ beside the swapped parts, so it stays held throughout). No backup file is ever touched.

    The pre-restore snapshot defaults to multi-threaded zstd: it is made while the user waits.
    """
    staging = layout.data / f"{STAGING_PREFIX}{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
    try:
        manifest = verify_and_extract(archive, staging, verify_md5=verify_md5, progress=progress)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    pre = None
    if any((layout.data / part).exists() for part in PARTS):
        pre = create_backup(layout, compression=compression, kind="pre-restore", progress=progress)
    swap_in(layout, staging)
    return RestoreResult(archive, pre, int(manifest.get("memory_count", 0)))


