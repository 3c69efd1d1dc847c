"""The archive codec: tar headers, compression and decompression streams, member rules, the manifest.

Nothing here knows about backup files, naming or the store's layout beyond the parts of data/ an
archive may hold. backups.py writes archives with it; restore.py reads them.
"""

from __future__ import annotations

import hashlib
import queue
import tarfile
import threading
import zlib
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import orjson

from .errors import MemfsError, UnsupportedFormatError

BACKUP_FORMAT_NAME = "memfs.backup"
BACKUP_FORMAT_VERSION = 1
MANIFEST = "memfs-backup.json"
# The derived and true parts of data/ that a backup carries and a restore swaps. logs/ stays behind.
PARTS = ("memories", "embeddings", "indexes")

# progress(phase, done, total)
Progress = Callable[[str, int, int], None]


class CorruptBackupError(MemfsError):
    """The archive failed a check (checksum, member safety, manifest); nothing was changed."""



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


def _check_manifest(archive, manifest: dict | None, hashes: dict[str, str]) -> None:
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

