"""The restore transaction: verify and extract to staging, snapshot, swap, journal, and finishing a
restore that a crash interrupted. Also `verify_backup`, the same read with nothing written.

Restore never touches the current data until the archive has passed every check: MD5, member safety,
manifest sizes and hashes, format version. The new data is then swapped in part by part with
RENAME_EXCHANGE under a journal, so that a crash at any step leaves the store entirely old or
entirely restored once `finish_interrupted_restore` has run (issue #11 finding 0). No file in the
backup directory is ever deleted or moved by a restore.

The steps, each a fault-injection point (`crash_at`, used by tests/test_restore_crash.py):

  staged            archive verified and extracted into data/.restore-…/data/, every part marked
  snapshot          the current data saved as a pre-restore backup
  synced            staging flushed to disk (syncfs)
  journal-swapping  JOURNAL says "swapping": from here the restore is rolled forward
  exchanged:PART    PART exchanged with its staged copy (its marker travels with the new data)
  journal-swapped   JOURNAL says "swapped": every part is the new data; only clean-up is left
  removing-old:PART half of the replaced data of PART deleted from staging
  removed-old:PART  all of it deleted
  unmarked          the markers removed from the live parts
  journal-removed   JOURNAL gone; staging holds nothing that matters
  done              staging removed

Recovery decides by where each part's marker is, never by its absence: the marker file is inside the
staged directory, so it is in the live part exactly when that part has been exchanged. (Before, the
clean-up deleted the markers first and the staging second; a crash between the two made the next
start swap every part back, and one during the staging's deletion cut the live store in half.)
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from .archive import (PARTS, ArchiveContents, CorruptBackupError, DecompressingSource, Progress, printable,
                      read_archive)
from .backups import STAGING_PREFIX, BackupFile, create_backup, md5_of, read_md5_file
from .encryption import DecryptingReader, DecryptionError
from .errors import MemfsError, UnsupportedFormatError
from .filestore import Layout, atomic_write, fsync_dir, libc, sync_filesystem

# -- fault injection ----------------------------------------------------------------------------------

# Trigger: tests set this in a child process to one of the step names above. Why: the windows that
# lose data are under a millisecond wide; random kill timing never hits them (issue #11, finding 0).
# Outcome: the process exits at once, as a kill -9 would, with CRASH_EXIT.
crash_at: str | None = None
CRASH_EXIT = 86
STEPS = ("staged", "snapshot", "synced", "journal-swapping", *(f"exchanged:{p}" for p in PARTS),
         "journal-swapped", *(s for p in PARTS for s in (f"removing-old:{p}", f"removed-old:{p}")),
         "unmarked", "journal-removed", "done")


def _step(name: str) -> None:
    if crash_at == name:
        os._exit(CRASH_EXIT)


# -- reading an archive -------------------------------------------------------------------------------


@contextlib.contextmanager
def _plain_stream(archive: BackupFile, identities: Sequence | None, passphrase: str | None,
                  source: BinaryIO | None = None) -> Iterator[DecompressingSource]:
    """The archive's tar stream: decrypted (if an age file) and decompressed, each on its own thread.
    `source` is the archive file already opened (verify hashes what is read through it)."""
    file = source or open(archive.path, "rb")
    try:
        raw = DecryptingReader(archive.path, identities=identities, passphrase=passphrase, source=file) \
            if archive.encrypted else file
        try:
            stream = DecompressingSource(raw, archive.compression)
            try:
                yield stream
            finally:
                stream.close()
        finally:
            if raw is not file:
                raw.close()
    finally:
        if source is None:
            file.close()


class _HashingReader:
    """Reads through to a file, keeping the MD5 of what was read: one pass checks the .md5 and the
    contents together."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.md5 = hashlib.md5()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.md5.update(data)
        return data

    def finish(self) -> str:
        """Read what the decoder left (after an early refusal, or trailing bytes); the MD5 of it all."""
        while block := self.f.read(1 << 20):
            self.md5.update(block)
        return self.md5.hexdigest()


def read_backup(archive: BackupFile, *, identities: Sequence | None = None, passphrase: str | None = None,
                progress: Progress | None = None, source: BinaryIO | None = None, **read_options) -> ArchiveContents:
    """read_archive over a backup file; every refusal names the archive and says nothing was changed."""
    try:
        with _plain_stream(archive, identities, passphrase, source) as stream:
            return read_archive(stream.next_chunk, progress=progress, **read_options)
    except CorruptBackupError as e:
        raise CorruptBackupError(f"{archive.name}: {e}. Nothing was changed; pick another backup "
                                 "(`manage_data.py list --verify`)") from e
    except UnsupportedFormatError as e:
        raise UnsupportedFormatError(f"{archive.name} was {e} (nothing was changed)", str(archive.path)) from e
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            raise MemfsError(f"no space left while unpacking {archive.name}; free space and try again "
                             "(nothing was changed)") from e
        raise CorruptBackupError(f"{archive.name} could not be read ({e}); nothing was changed") from e


def check_md5(archive: BackupFile) -> None:
    """Refuse an archive whose .md5 is missing or differs (CorruptBackupError)."""
    expected = read_md5_file(archive.md5_path)
    if expected is None:
        raise CorruptBackupError(
            f"{archive.md5_path} is missing or unreadable, so {archive.name} cannot be verified; "
            "restore it with --no-verify only if you trust the file (nothing was changed)")
    if md5_of(archive.path) != expected:
        raise CorruptBackupError(
            f"{archive.name} does not match its checksum ({archive.md5_path.name}): the file is damaged "
            "or truncated; nothing was changed. Pick another backup (`manage_data.py list --verify`)")


# -- verify -------------------------------------------------------------------------------------------

# What each status of `verify_backup` means, for the header of `manage_data.py list`.
STATUS_MEANINGS = {
    "ok": "restorable: checksum matches, and the whole archive decompresses and matches its manifest",
    "checksum ok": "the .md5 matches (--quick: contents not read)",
    "unverified": "not checked (list without --verify)",
    "encrypted": "the .md5 matches; contents not read (encrypted, and no identity was given)",
    "missing": "no .md5 beside the archive",
    "mismatch": "the archive does not match its .md5: damaged or truncated",
    "corrupt": "the .md5 matches but the contents do not restore (see the reason)",
    "newer format": "written by a newer memfs; upgrade to restore it",
    "wrong key": "encrypted, and the identity given does not open it",
}
BAD_STATUSES = {"missing", "mismatch", "corrupt", "newer format", "wrong key"}


@dataclass(frozen=True)
class VerifyReport:
    archive: BackupFile
    status: str  # a key of STATUS_MEANINGS
    reason: str = ""
    memory_count: int | None = None
    created_at: str | None = None
    total_bytes: int | None = None  # what a restore would stage
    members: int | None = None

    @property
    def ok(self) -> bool:
        return self.status not in BAD_STATUSES

    def to_dict(self) -> dict:
        return {"name": self.archive.name, "path": str(self.archive.path), "status": self.status,
                "ok": self.ok, "reason": self.reason, "memory_count": self.memory_count,
                "created_at": self.created_at, "total_bytes": self.total_bytes, "members": self.members}


def verify_backup(archive: BackupFile, *, deep: bool = True, identities: Sequence | None = None,
                  passphrase: str | None = None, progress: Progress | None = None) -> VerifyReport:
    """Is this backup restorable? Writes nothing, changes nothing.

    deep (the default; `list --verify`, `validate --backups`, `restore --dry-run`): the .md5, then the
    whole stream decrypted and decompressed, every member checked against the member rules and the
    manifest's sizes and SHA-256, as a restore would (cf. `restic check --read-data`).
    Not deep (`--quick`): the .md5 alone.
    """
    expected = read_md5_file(archive.md5_path)
    if not deep:
        if expected is None:
            return VerifyReport(archive, "missing")
        if md5_of(archive.path) != expected:
            return VerifyReport(archive, "mismatch", "the archive does not match its .md5")
        return VerifyReport(archive, "checksum ok")
    if archive.encrypted and not identities and not passphrase:
        if expected is not None and md5_of(archive.path) != expected:
            return VerifyReport(archive, "mismatch", "the archive does not match its .md5")
        return VerifyReport(archive, "encrypted" if expected else "missing", "contents not read: no identity given")
    contents, failed = None, None
    with open(archive.path, "rb") as f:  # one read: the MD5 of the bytes as they go to the decoder
        hashed = _HashingReader(f)
        try:
            contents = read_backup(archive, identities=identities, passphrase=passphrase, progress=progress,
                                   source=hashed)
        except DecryptionError as e:
            failed = VerifyReport(archive, "wrong key", printable(str(e)))
        except UnsupportedFormatError as e:
            failed = VerifyReport(archive, "newer format", printable(str(e)))
        except CorruptBackupError as e:
            failed = VerifyReport(archive, "corrupt", printable(str(e)))
        digest = hashed.finish()
    if expected is not None and digest != expected:
        return VerifyReport(archive, "mismatch", "the archive does not match its .md5")
    if failed is not None:
        return failed
    m = contents.manifest
    return VerifyReport(archive, "ok" if expected else "missing", "" if expected else "no .md5 beside it",
                        m.get("memory_count"), m.get("created_at"), contents.total_bytes, contents.members)


# -- extract ------------------------------------------------------------------------------------------


class _MemberFile:
    """One member's data, written to a new file (O_EXCL|O_NOFOLLOW), with its mode and mtime."""

    def __init__(self, path: str, name: str, mode: int, mtime: int):
        # Modes as PEP 706's "data" filter sets them: no group/other write or set-id bits, owner
        # read+write, execute only if the owner had it.
        mode = (mode & 0o755 | 0o600) if mode & 0o100 else (mode & 0o644 | 0o600)
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        except FileExistsError:
            raise CorruptBackupError(f"member {name!r} appears twice in the archive") from None
        self.mtime = mtime
        self.written = 0

    def write(self, piece: memoryview) -> None:
        self.written += len(piece)
        while piece:
            piece = piece[os.write(self.fd, piece):]

    def close(self) -> None:
        try:
            os.utime(self.fd, (self.mtime, self.mtime))
        finally:
            os.close(self.fd)


class _Unbounded(Exception):
    """A format-1 archive: its sizes are known only after a first pass."""


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def check_free_space(directory: Path, needed: int, archive: BackupFile) -> None:
    """Refuse before staging anything if the file system cannot hold `needed` bytes (plus 1%)."""
    free = shutil.disk_usage(directory).free
    if free < needed * 1.01 + (16 << 20):
        raise MemfsError(f"not enough free space to restore {archive.name}: it needs {_human(needed)} in "
                         f"{directory}, and {_human(free)} is free. Free some space and try again "
                         "(nothing was changed)")


def verify_and_extract(archive: BackupFile, staging: Path, *, verify_md5: bool = True,
                       identities: Sequence | None = None, passphrase: str | None = None,
                       progress: Progress | None = None) -> dict:
    """Check the archive completely, extracting into `staging`. Returns the manifest.

    Nothing is written before the sizes are known: a format-2 archive gives them in its first member
    (and each member is held to its size as its header is read); a format-1 one is read once writing
    nothing. Free space is checked against their total before the first byte is staged, so staging
    never holds more than the manifest's total. Raises CorruptBackupError (nothing outside staging
    touched) on any problem.
    """
    if verify_md5:
        check_md5(archive)
    staging.mkdir(parents=True)
    root = os.fspath(staging)
    made: set[str] = set()
    bounded = False

    def on_manifest(manifest: dict) -> None:
        nonlocal bounded
        check_free_space(staging, manifest["total_bytes"], archive)
        bounded = True

    def open_file(name: str, mode: int, mtime: int) -> _MemberFile:
        if not bounded:
            raise _Unbounded
        parent = name.rpartition("/")[0]
        if parent not in made:
            os.makedirs(f"{root}/{parent}", exist_ok=True)
            made.add(parent)
        return _MemberFile(f"{root}/{name}", name, mode, mtime)

    keys = {"identities": identities, "passphrase": passphrase, "progress": progress}
    try:
        contents = read_backup(archive, open_file=open_file, on_manifest=on_manifest, **keys)
    except _Unbounded:
        first = read_backup(archive, **keys)  # format 1: establish the sizes, writing nothing
        check_free_space(staging, first.total_bytes, archive)
        bounded = True
        contents = read_backup(archive, open_file=open_file, bounds=first.sizes, **keys)
    for d in contents.dirs:
        os.makedirs(f"{root}/{d}", exist_ok=True)
    return contents.manifest


# -- swap ---------------------------------------------------------------------------------------------

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


def _marker(staging: Path) -> str:
    return f"{STAGING_PREFIX}{staging.name}"


def _mark(staging: Path) -> None:
    """Put a marker in every staged part (creating empty parts the archive lacks)."""
    for part in PARTS:
        new = staging / "data" / part
        new.mkdir(parents=True, exist_ok=True)
        (new / _marker(staging)).touch()


def swap_in(layout: Layout, staging: Path) -> None:
    """Exchange each part of data/ with the staged copy, journalled so a crash can be rolled forward.

    The staging must be marked (`_mark`). The staged files are flushed to disk first. data/ itself is
    not renamed, so this also works when data/ is a mount point (docker volumes).
    """
    sync_filesystem(staging)  # one flush for every extracted file, so a power cut cannot leave them empty
    _step("synced")
    atomic_write(_journal(staging), b"swapping\n")
    _step("journal-swapping")
    _roll_forward(layout, staging)


def _roll_forward(layout: Layout, staging: Path) -> None:
    """From "swapping": exchange every part not yet exchanged, then record "swapped" and clean up."""
    marker = _marker(staging)
    for part in PARTS:
        new, cur = staging / "data" / part, layout.data / part
        if (cur / marker).exists():
            continue  # exchanged before the crash: the new data is live
        if not (new / marker).exists():
            raise MemfsError(f"cannot finish the restore in {staging}: {part}/ has no marker on either side. "
                             f"Nothing more was changed; inspect {staging} and {cur} by hand")
        if cur.exists():
            _exchange(new, cur)
        else:
            os.rename(new, cur)
        fsync_dir(layout.data)
        fsync_dir(staging / "data")
        _step(f"exchanged:{part}")
    atomic_write(_journal(staging), b"swapped\n")
    _step("journal-swapped")
    _clean_up(layout, staging)


def _remove_tree(path: Path, step: str) -> None:
    files = [os.path.join(d, f) for d, _, names in os.walk(path) for f in names]
    for i, f in enumerate(files):
        if i == len(files) // 2:
            _step(step)
        os.unlink(f)
    shutil.rmtree(path, ignore_errors=True)


def _clean_up(layout: Layout, staging: Path) -> None:
    """From "swapped": delete the replaced data, then the markers, then the journal, then staging.
    Every state on the way is one `finish_interrupted_restore` completes without swapping anything."""
    for part in PARTS:
        _remove_tree(staging / "data" / part, f"removing-old:{part}")
        _step(f"removed-old:{part}")
    for part in PARTS:
        (layout.data / part / _marker(staging)).unlink(missing_ok=True)
    fsync_dir(layout.data)
    _step("unmarked")
    _journal(staging).unlink(missing_ok=True)
    fsync_dir(staging)
    _step("journal-removed")
    shutil.rmtree(staging)
    fsync_dir(layout.data)
    _step("done")


def finish_interrupted_restore(layout: Layout) -> list[str]:
    """Roll forward a swap a crash interrupted; drop staging that never got to swapping. Lock held.

    Idempotent: a crash during this is finished by the next call.
    """
    notes = []
    if not layout.data.is_dir():
        return notes
    for staging in sorted(layout.data.glob(f"{STAGING_PREFIX}*")):
        journal = _journal(staging)
        state = journal.read_text().strip() if journal.exists() else ""
        if state == "swapping":
            _roll_forward(layout, staging)
            notes.append(f"finished a restore that was interrupted mid-swap ({staging.name})")
        elif state == "swapped":
            _clean_up(layout, staging)
            notes.append(f"finished cleaning up after a completed restore ({staging.name})")
        else:
            for part in PARTS:  # only the replaced data or an unused staging copy is left in there
                (layout.data / part / _marker(staging)).unlink(missing_ok=True)
            shutil.rmtree(staging, ignore_errors=True)
            notes.append(f"removed the staging of a restore that was interrupted before any change "
                         f"({staging.name})")
    return notes


# -- the transaction ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreResult:
    archive: BackupFile
    pre_restore: BackupFile | None
    memory_count: int


def restore_backup(layout: Layout, archive: BackupFile, *, verify_md5: bool = True,
                   compression: str = "zst", progress: Progress | None = None,
                   identities: Sequence | None = None, passphrase: str | None = None,
                   snapshot_recipients: Sequence | None = None,
                   snapshot_passphrase: str | None = None) -> RestoreResult:
    """Verify, stage, snapshot current data, swap. The caller holds the store's lock (it lives in
    data/ beside the swapped parts, so it stays held throughout). No backup file is ever touched.

    `identities`/`passphrase` open an encrypted archive; `snapshot_recipients`/`snapshot_passphrase`
    encrypt the pre-restore snapshot (give them when backups are encrypted, or the snapshot of the
    replaced data lies in the clear beside them). The snapshot defaults to multi-threaded zstd: it is
    made while the user waits.
    """
    staging = layout.data / f"{STAGING_PREFIX}{time.strftime('%Y%m%d%H%M%S')}-{os.getpid()}"
    try:
        manifest = verify_and_extract(archive, staging, verify_md5=verify_md5, identities=identities,
                                      passphrase=passphrase, progress=progress)
        memory_count = manifest["memory_count"]  # checked with the manifest: nothing can fail after the swap
        _mark(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _step("staged")
    pre = None
    if any((layout.data / part).exists() for part in PARTS):
        try:
            pre = create_backup(layout, compression=compression, kind="pre-restore", progress=progress,
                                recipients=snapshot_recipients, passphrase=snapshot_passphrase)
        except BaseException:  # e.g. the backup disk is full: nothing was changed, and no staging is left
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _step("snapshot")
    swap_in(layout, staging)
    return RestoreResult(archive, pre, memory_count)
