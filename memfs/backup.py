"""Backups: verified archives of data/, GFS retention, and a restore that cannot lose data.

An archive holds data/ (memories, embeddings, indexes; never logs, locks or temp files) and, as its last
member, a manifest with the SHA-256 of every other member. Beside it, `<archive>.md5` in md5sum format.
The caller holds the store's lock throughout, so nothing changes while it is read or replaced.

Restore never touches the current data until the archive has passed every check: MD5, member safety,
manifest hashes, format version. The new data is then swapped in directory by directory with
RENAME_EXCHANGE, recorded in a journal so that a crash mid-swap is rolled forward at the next start.
No file in the backup directory is ever deleted or moved by a restore.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import queue
import os
import re
import shutil
import socket
import stat
import tarfile
import threading
import time
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import orjson

from . import __version__
from .documents import format_time
from .embedder import MODEL_ID
from .errors import MemfsError, UnsupportedFormatError
from .filestore import Layout, atomic_write, fsync_dir, is_ignored_name, libc, sync_filesystem
from .retention import Decision, Policy, decide

BACKUP_FORMAT_NAME = "memfs.backup"
BACKUP_FORMAT_VERSION = 1
MANIFEST = "memfs-backup.json"
# The derived and true parts of data/ that a backup carries and a restore swaps. logs/ stays behind.
PARTS = ("memories", "embeddings", "indexes")
KINDS = {"memory_backup": "backup", "pre_restore": "pre-restore"}
_NAME = re.compile(r"^(?P<prefix>memory_backup|pre_restore)_(?P<stamp>\d{8}_\d{6})(?:_(?P<seq>\d+))?"
                   r"\.tar\.(?P<comp>gz|zst)$")
PARTIAL = re.compile(r"^\.(memory_backup|pre_restore)_.*\.partial$")
STAGING_PREFIX = ".restore-"

# progress(phase, done, total)
Progress = Callable[[str, int, int], None]


class CorruptBackupError(MemfsError):
    """The archive failed a check (checksum, member safety, manifest); nothing was changed."""


# -- naming and listing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupFile:
    path: Path
    kind: str  # "backup" or "pre-restore"
    created: datetime  # UTC, from the name (the same instant the manifest records)
    compression: str  # "gz" or "zst"
    seq: int = 0  # the _N suffix of a second backup within the same second

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def md5_path(self) -> Path:
        return self.path.with_name(self.path.name + ".md5")

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    @classmethod
    def parse(cls, path: Path) -> "BackupFile | None":
        m = _NAME.match(path.name)
        if not m:
            return None
        created = datetime.strptime(m["stamp"], "%Y%m%d_%H%M%S").replace(tzinfo=timezone.utc)
        return cls(path, KINDS[m["prefix"]], created, m["comp"], int(m["seq"] or 0))

    def checksum_state(self, verify: bool = False) -> str:
        """ok / mismatch / missing / unverified (an .md5 exists but was not re-read)."""
        expected = read_md5_file(self.md5_path)
        if expected is None:
            return "missing"
        if not verify:
            return "unverified"
        return "ok" if md5_of(self.path) == expected else "mismatch"


def list_backups(backup_dir: Path) -> tuple[list[BackupFile], list[Path]]:
    """(backups newest first, incomplete leftovers). Only our naming pattern is ever considered."""
    if not backup_dir.is_dir():
        return [], []
    backups, leftovers = [], []
    for p in backup_dir.iterdir():
        b = BackupFile.parse(p)
        if b is not None and p.is_file():
            backups.append(b)
        elif PARTIAL.match(p.name):
            leftovers.append(p)
    backups.sort(key=lambda b: (b.created, b.seq), reverse=True)
    return backups, sorted(leftovers)


def _new_name(backup_dir: Path, prefix: str, now: datetime, compression: str) -> str:
    """Unique, and sorting after every backup of the same second (even ones since pruned or renamed)."""
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%d_%H%M%S")
    taken = [m for p in backup_dir.iterdir()
             if (m := _NAME.match(p.name.removeprefix(".").removesuffix(".partial")))
             and m["prefix"] == prefix and m["stamp"] == stamp]
    if not taken:
        return f"{prefix}_{stamp}.tar.{compression}"
    seq = max(int(m["seq"] or 0) for m in taken) + 1
    return f"{prefix}_{stamp}_{seq}.tar.{compression}"


# -- checksums --------------------------------------------------------------------------------------


def md5_of(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def read_md5_file(path: Path) -> str | None:
    """The digest from an md5sum-format file, or None if absent or unreadable."""
    try:
        text = path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
    digest = text.split()[0] if text else ""
    return digest.lower() if re.fullmatch(r"[0-9a-fA-F]{32}", digest) else None


_CHUNK = 1 << 20


class _CompressingSink:
    """Compress, MD5 and write on a worker thread, so building the tar stream overlaps compressing it.

    zlib, zstd and hashlib release the GIL on large buffers: with two cores this is what lets us keep
    pace with `tar czf`, whose gzip runs as a second process. The MD5 is of the bytes written, so the
    archive is never read back to checksum it.
    """

    def __init__(self, f: BinaryIO, compression: str):
        if compression == "gz":
            self._comp = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip member, as `gzip -6`
        elif compression == "zst":
            import zstandard

            self._comp = zstandard.ZstdCompressor(level=3, threads=-1).compressobj()
        else:
            raise ValueError(f"compression must be gz or zst, not {compression!r}")
        self.f = f
        self.md5 = hashlib.md5()
        self._parts: list[bytes] = []
        self._size = 0
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="memfs-compress", daemon=True)
        self._thread.start()

    def _emit(self, data: bytes) -> None:
        if data:
            self.md5.update(data)
            self.f.write(data)

    def _run(self) -> None:
        try:
            while (chunk := self._queue.get()) is not None:
                self._emit(self._comp.compress(chunk))
            self._emit(self._comp.flush())
        except BaseException as e:  # handed to the producer, which raises it
            self._error = e
            while self._queue.get() is not None:  # drain so the producer never blocks
                pass

    def _put(self, item) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(item)

    def write(self, *pieces: bytes) -> None:
        """Collect pieces of the tar stream; hand them on joined, in chunks of about _CHUNK bytes."""
        self._parts += pieces
        self._size += sum(map(len, pieces))
        if self._size >= _CHUNK:
            self._flush()

    def _flush(self) -> None:
        self._put(b"".join(self._parts))
        self._parts, self._size = [], 0

    def close(self) -> None:
        if self._parts:
            self._flush()
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


class _DecompressingSource:
    """Read and decompress on a worker thread; `next_chunk()` hands out the plain tar stream in pieces."""

    def __init__(self, path: Path, compression: str):
        if compression == "gz":
            self._dec = zlib.decompressobj(31)
        else:
            import zstandard

            self._dec = zstandard.ZstdDecompressor().decompressobj()
        self._path = path
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._done = False
        self._thread = threading.Thread(target=self._run, name="memfs-decompress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            with open(self._path, "rb") as f:
                while block := f.read(_CHUNK):
                    self._queue.put(self._dec.decompress(block))
                    if self._dec.eof:
                        break
            if not self._dec.eof:
                raise EOFError("the compressed stream ends early: the file is truncated")
            self._queue.put(None)
        except BaseException as e:
            self._queue.put(e)

    def next_chunk(self) -> bytes | None:
        """The next piece of the tar stream, or None at its end."""
        if self._done:
            return None
        item = self._queue.get()
        if item is None or isinstance(item, BaseException):
            self._done = True
            if item is not None:
                raise item
        return item

    def close(self) -> None:
        while not self._done:  # let the worker finish so it never blocks on a full queue
            item = self._queue.get()
            self._done = item is None or isinstance(item, BaseException)


class _StreamReader:
    """Exact-size reads from a chunked stream, as zero-copy views whenever a read fits in one chunk."""

    def __init__(self, next_chunk: Callable[[], bytes | None]):
        self._next_chunk = next_chunk
        self._buf = memoryview(b"")
        self._pos = 0

    def _refill(self) -> None:
        chunk = self._next_chunk()
        if chunk is None:
            raise EOFError("the tar stream ends in the middle of a member: the archive is truncated")
        self._buf, self._pos = memoryview(chunk), 0

    def pieces(self, n: int) -> Iterator[memoryview]:
        """Exactly n bytes, in one or more views."""
        while n:
            if self._pos == len(self._buf):
                self._refill()
            take = min(n, len(self._buf) - self._pos)
            yield self._buf[self._pos:self._pos + take]
            self._pos += take
            n -= take

    def read(self, n: int) -> bytes:
        if self._pos + n <= len(self._buf):
            self._pos += n
            return bytes(self._buf[self._pos - n:self._pos])
        return b"".join(self.pieces(n))

    def skip(self, n: int) -> None:
        for _ in self.pieces(n):
            pass


# -- backup -----------------------------------------------------------------------------------------


def _is_excluded(name: str) -> bool:
    """Temp and swap files, editor litter and our own atomic-write temps are never backed up."""
    return name.startswith((".#", STAGING_PREFIX)) or name.endswith(("~", ".tmp", ".swp", ".swx", ".partial"))


def _members(layout: Layout) -> list[tuple[str, str, os.stat_result]]:
    """(path, archive name, lstat) of every directory and file a backup carries: each directory, then
    its files, then its subdirectories, sorted by name."""
    out: list[tuple[str, str, os.stat_result]] = []

    def walk(path: str, arcname: str) -> None:
        out.append((path, arcname, os.lstat(path)))
        subdirs = []
        with os.scandir(path) as it:
            entries = sorted((e for e in it if not _is_excluded(e.name)), key=lambda e: e.name)
        for e in entries:
            if e.is_dir(follow_symlinks=False):
                subdirs.append(e)
            else:
                out.append((e.path, f"{arcname}/{e.name}", e.stat(follow_symlinks=False)))
        for e in subdirs:
            walk(e.path, f"{arcname}/{e.name}")

    for part in PARTS:
        if (layout.data / part).is_dir():
            walk(os.fspath(layout.data / part), f"data/{part}")
    return out


_OWNER_IDS = b"0000000\x000000000\0"  # uid, gid 0
_USTAR_TAIL = bytes(100) + b"ustar\x0000" + bytes(tarfile.BLOCKSIZE - 265)  # no link name; ustar magic, rest empty
_USTAR_TAIL_SUM = sum(_USTAR_TAIL) + 8 * ord(" ")


def _tar_header(arcname: str, mode: int, size: int, mtime: int, is_dir: bool = False) -> bytes:
    """A tar header for a member: owner 0, whole-second mtime.

    Plain ustar, built directly for the common case (profiled: tarfile's header code was a third of a
    20k-file backup, and a float mtime made it add a PAX header to every member); tarfile's GNU format
    for names over 100 bytes or files over 8 GiB.
    """
    name = arcname.encode("utf-8", "surrogateescape")
    if len(name) > 100 or size >= 0o77777777777:
        info = tarfile.TarInfo(arcname)
        info.mode, info.mtime, info.size = mode, mtime, size
        info.type = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
        return info.tobuf(tarfile.GNU_FORMAT, "utf-8", "surrogateescape")
    fields = b"%07o\0%s%011o\0%011o\0" % (mode, _OWNER_IDS, size, mtime)
    kind = tarfile.DIRTYPE if is_dir else tarfile.REGTYPE
    checksum = sum(name) + sum(fields) + kind[0] + _USTAR_TAIL_SUM  # of the header with spaces for the checksum
    return b"".join((name.ljust(100, b"\0"), fields, b"%06o\0 " % checksum, kind, _USTAR_TAIL))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % tarfile.BLOCKSIZE)


def create_backup(layout: Layout, *, backup_dir: Path | None = None, compression: str = "gz",
                  kind: str = "backup", progress: Progress | None = None,
                  now: datetime | None = None) -> BackupFile:
    """Archive data/ into backup_dir. The caller holds the store's lock.

    Written as `.<name>.partial`, fsynced, its .md5 written, then renamed into place: a crash never
    leaves a file that looks like a good backup. Each member is read once: its SHA-256 for the
    manifest is computed on the bytes as they go into the archive.
    """
    backup_dir = backup_dir or layout.backups
    backup_dir.mkdir(parents=True, exist_ok=True)
    now = now or datetime.now(timezone.utc)
    prefix = {v: k for k, v in KINDS.items()}[kind]
    name = _new_name(backup_dir, prefix, now, compression)
    partial = backup_dir / f".{name}.partial"
    members = list(_members(layout))
    files: dict[str, str] = {}
    memory_count = 0
    try:
        with open(partial, "wb") as raw_file:
            sink = _CompressingSink(raw_file, compression)
            try:
                for n, (path, arcname, st) in enumerate(members, 1):
                    if stat.S_ISDIR(st.st_mode):
                        sink.write(_tar_header(arcname, st.st_mode & 0o7777, 0, int(st.st_mtime), is_dir=True))
                    elif stat.S_ISREG(st.st_mode):
                        files[arcname] = _add_file(sink, path, arcname, st)
                        if arcname.startswith("data/memories/") and not is_ignored_name(arcname.rpartition("/")[2]):
                            memory_count += 1
                    if progress and (n % 200 == 0 or n == len(members)):
                        progress("backup", n, len(members))
                manifest = orjson.dumps({
                    "format": f"{BACKUP_FORMAT_NAME}/{BACKUP_FORMAT_VERSION}",
                    "memfs_version": __version__,
                    "created_at": format_time(now),
                    "kind": kind,
                    "host": socket.gethostname(),
                    "memory_count": memory_count,
                    "model_id": MODEL_ID,
                    "files": files,
                }, option=orjson.OPT_INDENT_2)
                sink.write(_tar_header(MANIFEST, 0o644, len(manifest), int(now.timestamp())), manifest,
                           _pad(len(manifest)), b"\0" * (2 * tarfile.BLOCKSIZE))  # and the end of the archive
            finally:
                sink.close()
            raw_file.flush()
            os.fsync(raw_file.fileno())
        atomic_write(backup_dir / f"{name}.md5", f"{sink.md5.hexdigest()}  {name}\n".encode())
        os.replace(partial, backup_dir / name)
        fsync_dir(backup_dir)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BackupFile(backup_dir / name, kind, now.replace(microsecond=0), compression)


def _add_file(sink: _CompressingSink, path: str, arcname: str, st: os.stat_result) -> str:
    """Header, content and padding of one regular file; returns the content's SHA-256."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if st.st_size <= _CHUNK:
            data = os.read(fd, st.st_size + 1)  # one byte more notices a file that grew since it was listed
            if len(data) != st.st_size:  # a hand edit meanwhile: archive the file as it is now
                while block := os.read(fd, _CHUNK):
                    data += block
                st = os.fstat(fd)
            sink.write(_tar_header(arcname, st.st_mode & 0o7777, len(data), int(st.st_mtime)), data, _pad(len(data)))
            return hashlib.sha256(data).hexdigest()
        # Large files (Chroma's, the catalog) stream; the lock guarantees nobody writes them meanwhile.
        sha = hashlib.sha256()
        sink.write(_tar_header(arcname, st.st_mode & 0o7777, st.st_size, int(st.st_mtime)))
        left = st.st_size
        while left:
            block = os.read(fd, min(_CHUNK, left))
            if not block:
                raise MemfsError(f"{path} shrank while being backed up; is another process writing the store?")
            sha.update(block)
            sink.write(block)
            left -= len(block)
        sink.write(_pad(st.st_size))
        return sha.hexdigest()
    finally:
        os.close(fd)


def clean_leftovers(layout: Layout, backup_dir: Path | None = None) -> list[Path]:
    """Remove partial archives and .md5 files whose archive is gone. Call only while holding the lock.

    (Restore staging is finish_interrupted_restore's business.)"""
    backup_dir = backup_dir or layout.backups
    _, leftovers = list_backups(backup_dir)
    orphans = [p for p in backup_dir.glob("*.md5") if BackupFile.parse(p.with_suffix("")) and not p.with_suffix("").exists()] \
        if backup_dir.is_dir() else []
    removed = []
    for p in leftovers + orphans:
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed


# -- retention --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PruneItem:
    backup: BackupFile
    decision: Decision


def plan_prune(backup_dir: Path, policy: Policy, keep_pre_restore: int = 3) -> list[PruneItem]:
    """Regular backups under GFS; pre-restore snapshots by their own count, never displacing others."""
    backups, _ = list_backups(backup_dir)
    regular = [b for b in backups if b.kind == "backup"]
    pre = [b for b in backups if b.kind == "pre-restore"]
    plan = [PruneItem(b, d) for b, d in zip(regular, decide([b.created for b in regular], policy))]
    if plan and not plan[0].decision.keep:
        # Trigger: a policy of all zeros. Why: retention must never delete the only fresh backup
        # (restic refuses such a policy outright). Outcome: the newest backup is always kept.
        plan[0] = PruneItem(plan[0].backup, Decision(plan[0].backup.created, True, ("newest backup",)))
    for n, b in enumerate(pre):
        keep = n < keep_pre_restore
        plan.append(PruneItem(b, Decision(b.created, keep, (f"pre-restore {n + 1} of {keep_pre_restore}",) if keep else ())))
    plan.sort(key=lambda item: (item.backup.created, item.backup.seq), reverse=True)
    return plan


def prune_summary(plan: list[PruneItem], dry_run: bool) -> dict:
    return {"dry_run": dry_run, "backups": [{"name": i.backup.name, "keep": i.decision.keep,
                                             "reasons": list(i.decision.reasons)} for i in plan]}


def prune_backups(backup_dir: Path, policy: Policy, keep_pre_restore: int = 3,
                  dry_run: bool = False) -> tuple[list[PruneItem], list[BackupFile]]:
    """(the plan, the backups deleted). The caller holds the store's lock."""
    plan = plan_prune(backup_dir, policy, keep_pre_restore)
    return plan, ([] if dry_run else apply_prune(plan))


def apply_prune(plan: list[PruneItem]) -> list[BackupFile]:
    deleted = []
    for item in plan:
        if not item.decision.keep:
            item.backup.path.unlink(missing_ok=True)
            item.backup.md5_path.unlink(missing_ok=True)
            deleted.append(item.backup)
    return deleted


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


_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)
_USTAR_MAGIC = b"ustar\x0000"
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)


def _octal(field: bytes) -> int:
    return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def _parse_header(h: bytes) -> tuple[str, bytes, int, int, int]:
    """(name, type, size, mode, mtime) of one header block.

    The plain ustar headers memfs writes are read here directly (tarfile's parser was a quarter of a
    restore's time); any other header (GNU long names, base-256 sizes) is parsed by tarfile itself.
    """
    if h[257:265] != _USTAR_MAGIC:
        try:
            info = tarfile.TarInfo.frombuf(h, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            raise CorruptBackupError(f"a member header is damaged ({e})") from e
        return info.name, info.type, info.size, info.mode, int(info.mtime)
    try:
        checksum, size, mode, mtime = _octal(h[148:156]), _octal(h[124:136]), _octal(h[100:108]), _octal(h[136:148])
    except ValueError:
        raise CorruptBackupError("a member header is damaged (a number field is not octal)") from None
    if checksum != 256 + sum(h) - sum(h[148:156]):
        raise CorruptBackupError("a member header is damaged (its checksum does not match)")
    name, prefix = h[0:100].split(b"\0", 1)[0], h[345:500].split(b"\0", 1)[0]
    if prefix:
        name = prefix + b"/" + name
    kind = h[156:157]
    if kind == tarfile.DIRTYPE:
        name = name.rstrip(b"/")
    return name.decode("utf-8", "surrogateescape"), kind, size, mode, mtime


def _next_header(reader: _StreamReader) -> tuple[str, bytes, int, int, int] | None:
    """The next member's header, None at the end of the archive."""
    header = reader.read(tarfile.BLOCKSIZE)
    if header == _ZERO_BLOCK:
        return None
    name, kind, size, mode, mtime = _parse_header(header)
    if kind == tarfile.GNUTYPE_LONGNAME:  # how tarfile writes names over 100 bytes: the name, then the member
        name = reader.read(size + -size % tarfile.BLOCKSIZE).split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
        _, kind, size, mode, mtime = _parse_header(reader.read(tarfile.BLOCKSIZE))
        if kind == tarfile.DIRTYPE:
            name = name.rstrip("/")
    return name, kind, size, mode, mtime


def _check_member(name: str, kind: bytes) -> None:
    """Only regular files and directories, at normalised relative paths under data/{memories,…}/.

    This is PEP 706's "data" filter made stricter: that filter also admits links that stay inside the
    tree, so it must resolve every path (`realpath`, an lstat per component: a fifth of a restore's
    time). With no link members and files opened O_EXCL|O_NOFOLLOW, no path can resolve outside
    staging. tests/test_backup.py pins this to tarfile: its data filter accepts, unchanged, every member
    of a real backup that this accepts; and each hostile member of the issue is refused here.
    """
    if name == MANIFEST:
        if kind not in _FILE_TYPES:
            raise CorruptBackupError(f"the manifest member {name!r} is not a regular file")
        return
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\\" in name:
        raise CorruptBackupError(f"refusing member {name!r}: the path leaves the archive's tree")
    if kind not in _FILE_TYPES and kind != tarfile.DIRTYPE:
        what = ("a link" if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE) else
                "a device or special file" if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE) else
                f"of tar type {kind!r}")
        raise CorruptBackupError(f"refusing member {name!r}: it is {what}, and memfs backups hold only files")
    if len(parts) < 2 or parts[0] != "data" or parts[1] not in PARTS or "" in parts or "." in parts:
        raise CorruptBackupError(f"refusing member {name!r}: not a plain path under data/{{{','.join(PARTS)}}}/")


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


def _check_manifest(archive: BackupFile, manifest: dict | None, hashes: dict[str, str]) -> None:
    if not isinstance(manifest, dict):
        raise CorruptBackupError(f"{archive.name} has no manifest ({MANIFEST}); it is not a memfs backup "
                                 "or it is truncated")
    fmt = str(manifest.get("format", ""))
    name, _, version = fmt.rpartition("/")
    if name != BACKUP_FORMAT_NAME or not version.isdigit():
        raise CorruptBackupError(f"{archive.name}: unknown backup format {fmt!r}")
    if int(version) > BACKUP_FORMAT_VERSION:
        raise UnsupportedFormatError(f"{archive.name} was written by a newer memfs (format {fmt}); "
                                     "upgrade memfs to restore it", str(archive.path))
    expected = manifest.get("files", {})
    if expected != hashes:
        bad = sorted(set(expected) ^ set(hashes)) or sorted(k for k in expected if expected[k] != hashes.get(k))
        raise CorruptBackupError(f"{archive.name}: contents differ from its manifest (e.g. {bad[0]}); "
                                 "the archive is damaged. Nothing was changed")


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


