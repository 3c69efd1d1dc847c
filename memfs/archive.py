"""The archive codec: tar headers, compression and decompression streams, member rules, the manifest.

Nothing here knows about backup files, naming or the store's layout beyond the parts of data/ an
archive may hold. backups.py writes archives with it; restore.py and verify read them with
`read_archive`, which enforces every rule while the stream goes by and writes only through the
`open_file` callback it is given (none: verification, which writes nothing).

Format 2 (written since issue #11) puts the manifest first, with every member's size and the total,
and the SHA-256 of every file in a last member, `memfs-checksums.json`. A member missing from the
manifest, or of another size, is refused as soon as its header is read, so a decompression bomb
never reaches the disk. Format 1 (manifest last, hashes only) is still read: restore verifies it in a
first pass that writes nothing, then extracts with the sizes that pass established.
"""

from __future__ import annotations

import hashlib
import queue
import re
import tarfile
import threading
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator, Protocol

import orjson

from .errors import MemfsError, UnsupportedFormatError

BACKUP_FORMAT_NAME = "memfs.backup"
BACKUP_FORMAT_VERSION = 2
MANIFEST = "memfs-backup.json"
CHECKSUMS = "memfs-checksums.json"
# The derived and true parts of data/ that a backup carries and a restore swaps. logs/ stays behind.
PARTS = ("memories", "embeddings", "indexes", "sync", "conflicts")  # sync, conflicts: issue #20
# Bounds on what is read into memory (not staging) from an archive: a manifest, a GNU long name.
MAX_MANIFEST_BYTES = 256 << 20
MAX_NAME_BYTES = 4096

# progress(phase, done, total)
Progress = Callable[[str, int, int], None]


class CorruptBackupError(MemfsError):
    """The archive failed a check (checksum, member safety, manifest); nothing was changed."""


def printable(text: str) -> str:
    """`text` safe for a terminal: control and invisible formatting characters (ESC, newline, C1,
    bidi overrides, lone surrogates) escaped as repr would escape them. Issue #11 finding 4: a member
    name must never reach a terminal raw."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


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

            self._comp = zstandard.ZstdCompressor(level=3, threads=-1, write_checksum=True).compressobj()
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


class _Cancelled(Exception):
    pass


class DecompressingSource:
    """Read and decompress on a worker thread; `next_chunk()` hands out the plain tar stream in pieces
    of at most _CHUNK bytes, whatever the compression ratio (a bomb never sits in memory whole).

    `raw` is the compressed stream (a file, or the plaintext side of a decryption pipe). `close()`
    stops the worker early: refusing a bomb must not mean decompressing the rest of it.
    """

    def __init__(self, raw: BinaryIO, compression: str):
        if compression not in ("gz", "zst"):
            raise ValueError(f"compression must be gz or zst, not {compression!r}")
        self._raw = raw
        self._compression = compression
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._done = False
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memfs-decompress", daemon=True)
        self._thread.start()

    def _put(self, item) -> None:
        while True:
            if self._cancel.is_set():
                raise _Cancelled
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _gz(self) -> None:
        dec = zlib.decompressobj(31)
        data = b""
        while not dec.eof:
            if not data:
                data = self._raw.read(_CHUNK)
                if not data:
                    raise CorruptBackupError("truncated: the compressed stream ends early")
            out = dec.decompress(data, _CHUNK)  # bounded output: a 1000:1 block never inflates at once
            data = dec.unconsumed_tail
            if out:
                self._put(out)

    def _zst(self) -> None:
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(self._raw, read_size=_CHUNK)
        while chunk := reader.read(_CHUNK):
            self._put(chunk)

    def _run(self) -> None:
        try:
            try:
                self._gz() if self._compression == "gz" else self._zst()
            except (zlib.error, EOFError) as e:
                raise CorruptBackupError(f"corrupted: the data does not decompress ({e})") from e
            except Exception as e:
                if type(e).__module__.startswith("zstandard") or "Zstd" in type(e).__name__:
                    raise CorruptBackupError(f"corrupted: the data does not decompress ({e})") from e
                raise
            self._put(None)
        except _Cancelled:
            pass
        except BaseException as e:
            try:
                self._put(e)
            except _Cancelled:
                pass

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
        """Stop the worker, wherever it is, and wait for it."""
        self._cancel.set()
        self._done = True
        self._thread.join()


class _StreamReader:
    """Exact-size reads from a chunked stream, as zero-copy views whenever a read fits in one chunk."""

    def __init__(self, next_chunk: Callable[[], bytes | None]):
        self._next_chunk = next_chunk
        self._buf = memoryview(b"")
        self._pos = 0

    def _refill(self) -> None:
        chunk = self._next_chunk()
        if chunk is None:
            raise CorruptBackupError("truncated: the tar stream ends in the middle of a member")
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
_PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
# C0 controls, DEL, C1 controls (also as the lone surrogates surrogateescape makes of raw bytes 0x80-0x9f).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\udc80-\udc9f]")


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


def _next_header(reader: "_StreamReader") -> tuple[str, bytes, int, int, int] | None:
    """The next member's header, None at the end of the archive."""
    header = reader.read(tarfile.BLOCKSIZE)
    if header == _ZERO_BLOCK:
        return None
    name, kind, size, mode, mtime = _parse_header(header)
    if kind == tarfile.GNUTYPE_LONGNAME:  # how tarfile writes names over 100 bytes: the name, then the member
        if size > MAX_NAME_BYTES:
            raise CorruptBackupError(f"refusing a GNU long-name member of {size} bytes (a path has at most "
                                     f"{MAX_NAME_BYTES})")
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
    Names with control characters are refused too (issue #11 finding 4: they reached the terminal).
    """
    if kind in _PAX_TYPES:
        raise CorruptBackupError(
            "refusing a PAX extended header: memfs writes plain ustar/GNU members and never PAX ones, which "
            "come from GNU tar --format=posix, bsdtar/libarchive or Python's tarfile. This is not an archive "
            "that `manage_data.py backup` made; restore from one of those, or re-create it with "
            "`tar --format=gnu`")
    if _CONTROL.search(name):
        raise CorruptBackupError(f"refusing member {printable(name)!r}: its name holds control characters")
    if name in (MANIFEST, CHECKSUMS):
        if kind not in _FILE_TYPES:
            raise CorruptBackupError(f"the member {name!r} is not a regular file")
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


# -- the manifest -------------------------------------------------------------------------------------

_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def manifest_bytes(*, memfs_version: str, created_at: str, kind: str, host: str, memory_count: int,
                   model_id: str, sizes: dict[str, int], dirs: list[str]) -> bytes:
    """The first member of a format-2 archive: what it holds and how big each file is."""
    return orjson.dumps({
        "format": f"{BACKUP_FORMAT_NAME}/{BACKUP_FORMAT_VERSION}", "memfs_version": memfs_version,
        "created_at": created_at, "kind": kind, "host": host, "memory_count": memory_count,
        "model_id": model_id, "total_bytes": sum(sizes.values()), "dirs": dirs, "sizes": sizes,
    }, option=orjson.OPT_INDENT_2)


def checksums_bytes(hashes: dict[str, str]) -> bytes:
    """The last member of a format-2 archive: the SHA-256 of every file, computed as it was written."""
    return orjson.dumps({"files": hashes}, option=orjson.OPT_INDENT_2)


def _load_json(data: bytes, what: str) -> dict:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CorruptBackupError(f"the {what} is not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise CorruptBackupError(f"the {what} is not a JSON object")
    return value


def check_manifest_header(manifest: dict) -> int:
    """The manifest's format version, after refusing an unknown or newer format and odd fields."""
    fmt = str(manifest.get("format", ""))
    name, _, version = fmt.rpartition("/")
    if name != BACKUP_FORMAT_NAME or not version.isdigit():
        raise CorruptBackupError(f"unknown backup format {printable(fmt)!r}")
    if int(version) > BACKUP_FORMAT_VERSION:
        raise UnsupportedFormatError(f"written by a newer memfs (format {printable(fmt)}, this one reads up to "
                                     f"/{BACKUP_FORMAT_VERSION}); upgrade memfs to restore it")
    if not isinstance(manifest.get("memory_count", 0), int) or not _TIME.match(str(manifest.get("created_at", ""))):
        raise CorruptBackupError("the manifest's memory_count or created_at is malformed")
    if int(version) >= 2:
        sizes, dirs = manifest.get("sizes"), manifest.get("dirs")
        if not isinstance(sizes, dict) or not all(isinstance(v, int) and v >= 0 for v in sizes.values()) \
                or not isinstance(dirs, list) or manifest.get("total_bytes") != sum(sizes.values()):
            raise CorruptBackupError("the manifest's sizes, dirs or total_bytes are malformed")
        for name in list(sizes) + dirs:
            _check_member(str(name), tarfile.REGTYPE if name in sizes else tarfile.DIRTYPE)
    return int(version)


# -- reading -----------------------------------------------------------------------------------------


class MemberWriter(Protocol):
    def write(self, piece: memoryview) -> None: ...
    def close(self) -> None: ...


# open_file(name, mode, mtime) -> a writer for the member's data (restore), or None (verification)
OpenFile = Callable[[str, int, int], "MemberWriter | None"]


@dataclass
class ArchiveContents:
    """What a complete, checked read of an archive established."""

    manifest: dict
    version: int
    hashes: dict[str, str] = field(default_factory=dict)  # SHA-256 of every file member, as read
    sizes: dict[str, int] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    members: int = 0

    @property
    def total_bytes(self) -> int:
        return sum(self.sizes.values())


def read_archive(next_chunk: Callable[[], bytes | None], *, open_file: OpenFile | None = None,
                 bounds: dict[str, int] | None = None, on_manifest: Callable[[dict], None] | None = None,
                 progress: Progress | None = None) -> ArchiveContents:
    """Walk a decompressed tar stream, checking every member; raise CorruptBackupError on anything wrong.

    Each file's data goes to `open_file(...)`'s writer, or nowhere when it returns None or no
    open_file is given (then nothing at all is written: a deep verify). Sizes are bounded before any
    data is read: by the format-2 manifest (first member), or by `bounds` (a format-1 archive's sizes
    from a first, writing-nothing pass). `on_manifest` sees a format-2 manifest before any file is
    written (restore checks free space against its total there).
    """
    reader = _StreamReader(next_chunk)
    out: ArchiveContents | None = None
    trailer: dict | None = None
    v1_manifest: dict | None = None
    hashes: dict[str, str] = {}
    sizes: dict[str, int] = {}
    dirs: list[str] = []
    n = 0
    while member := _next_header(reader):
        name, kind, size, mode, mtime = member
        _check_member(name, kind)
        if trailer is not None or v1_manifest is not None:
            raise CorruptBackupError(f"member {name!r} comes after the archive's last member")
        if name in (MANIFEST, CHECKSUMS):
            if size > MAX_MANIFEST_BYTES:
                raise CorruptBackupError(f"the member {name} is {size} bytes, more than any real manifest")
            value = _load_json(reader.read(size), name)
            reader.skip(-size % tarfile.BLOCKSIZE)
            if name == MANIFEST and n == 0:
                version = check_manifest_header(value)
                if version >= 2:
                    bounds = value["sizes"]
                    out = ArchiveContents(value, version)
                    if on_manifest:
                        on_manifest(value)
                else:
                    v1_manifest = value  # a format-1 manifest first: only a lone manifest; it must be last
            elif name == MANIFEST and out is None:
                v1_manifest = value
            elif name == CHECKSUMS and out is not None:
                trailer = value
            else:
                raise CorruptBackupError(f"the member {name} is out of place")
            n += 1
            continue
        n += 1
        if kind == tarfile.DIRTYPE:  # directories carry no data
            if out is not None and name not in out.manifest["dirs"] and name.count("/") > 1:
                raise CorruptBackupError(f"refusing directory {name!r}: it is not in the manifest")
            dirs.append(name)
            continue
        if name in sizes:
            raise CorruptBackupError(f"member {name!r} appears twice in the archive")
        if bounds is not None:
            if name not in bounds:
                raise CorruptBackupError(f"refusing member {name!r}: it is not in the manifest")
            if size != bounds[name]:
                raise CorruptBackupError(f"refusing member {name!r}: it is {size} bytes, the manifest says "
                                         f"{bounds[name]}")
        sizes[name] = size
        writer = open_file(name, mode, mtime) if open_file else None
        sha = hashlib.sha256()
        try:
            for piece in reader.pieces(size):
                sha.update(piece)
                if writer is not None:
                    writer.write(piece)
        finally:
            if writer is not None:
                writer.close()
        hashes[name] = sha.hexdigest()
        reader.skip(-size % tarfile.BLOCKSIZE)
        if progress and n % 500 == 0:
            progress("verify", n, 0)
    return _finish(out, v1_manifest, trailer, hashes, sizes, dirs, n)


def _finish(out: ArchiveContents | None, v1_manifest: dict | None, trailer: dict | None,
            hashes: dict[str, str], sizes: dict[str, int], dirs: list[str], n: int) -> ArchiveContents:
    """The checks only the whole archive allows: a manifest, every member present, every hash equal."""
    if out is None:
        if v1_manifest is None:
            raise CorruptBackupError(f"no manifest ({MANIFEST}): not a memfs backup, or truncated")
        out = ArchiveContents(v1_manifest, 1)
        expected = v1_manifest.get("files")
    else:
        if trailer is None:
            raise CorruptBackupError(f"no {CHECKSUMS} at the end: the archive is truncated")
        expected = trailer.get("files")
        missing = sorted(set(out.manifest["sizes"]) - set(sizes))
        if missing:
            raise CorruptBackupError(f"member {missing[0]!r} is in the manifest but not in the archive "
                                     f"({len(missing)} missing): the archive is truncated or damaged")
    if not isinstance(expected, dict):
        raise CorruptBackupError("the manifest has no list of file checksums")
    if expected != hashes:
        bad = sorted(set(expected) ^ set(hashes)) or sorted(k for k in expected if expected[k] != hashes.get(k))
        raise CorruptBackupError(f"contents differ from the manifest (e.g. {bad[0]!r}): the archive is damaged")
    out.hashes, out.sizes, out.dirs, out.members = hashes, sizes, dirs, n
    return out
