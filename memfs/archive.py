"""The archive codec's reading side: the decompression stream, tar headers parsed, an archive read whole.

Nothing here knows about backup files, naming or the store's layout beyond the parts of data/ an
archive may hold. backups.py writes archives with memfs.tar_writer; restore.py and verify read them with
`read_archive`, which enforces every rule while the stream goes by and writes only through the
`open_file` callback it is given (none: verification, which writes nothing).

Format 2 (written since issue #11) puts the manifest first, with every member's size and the total,
and the SHA-256 of every file in a last member, `memfs-checksums.json`. A member missing from the
manifest, or of another size, is refused as soon as its header is read, so a decompression bomb
never reaches the disk. Format 1 (manifest last, hashes only) is still read: restore verifies it in a
first pass that writes nothing, then extracts with the sizes that pass established. What a member and
the manifest may be is archive_rules.py's.
"""

from __future__ import annotations

import hashlib
import queue
import tarfile
import threading
import zlib
from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Iterator, Protocol

from .archive_rules import (BACKUP_FORMAT_NAME, BACKUP_FORMAT_VERSION, CHECKSUMS, FILE_TYPES, MANIFEST,  # noqa: F401
                            MAX_MANIFEST_BYTES, MAX_NAME_BYTES, PARTS, CorruptBackupError, check_manifest,
                            check_member, checksums_bytes, load_json, manifest_bytes, peek_version, printable)
from .tar_writer import CHUNK

# progress(phase, done, total)
Progress = Callable[[str, int, int], None]


class _Cancelled(Exception):
    pass


class DecompressingSource:
    """Read and decompress on a worker thread; `next_chunk()` hands out the plain tar stream in pieces
    of at most CHUNK bytes, whatever the compression ratio (a bomb never sits in memory whole).

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
        """One gzip member, to its end: zlib checks the trailer's CRC-32 and length there, so the stream
        is always read to it (issue #24 item 11: a reader that stopped at the tar's end never saw a
        flipped trailer). Nothing may follow the member."""
        dec = zlib.decompressobj(31)
        data = b""
        while not dec.eof:
            if not data:
                data = self._raw.read(CHUNK)
                if not data:
                    raise CorruptBackupError("truncated: the compressed stream ends early")
            out = dec.decompress(data, CHUNK)  # bounded output: a 1000:1 block never inflates at once
            data = dec.unconsumed_tail
            if out:
                self._put(out)
        if dec.unused_data or self._raw.read(1):
            raise CorruptBackupError("corrupted: data follows the end of the compressed stream (memfs writes "
                                     "one gzip member and nothing after it)")

    def _zst(self) -> None:
        """Every frame to the end of the file: bytes after the first frame must be another valid frame
        (their content is then held to the end-of-archive rule), so trailing garbage is refused."""
        import zstandard

        reader = zstandard.ZstdDecompressor().stream_reader(self._raw, read_size=CHUNK, read_across_frames=True)
        while chunk := reader.read(CHUNK):
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

    def check_end(self) -> None:
        """After the end-of-archive block: what is left of the stream must be zero padding, and the
        stream must end (which makes the decompressor check its trailer or frame checksum)."""
        left = self._buf[self._pos:]
        seen = 0
        while True:
            seen += len(left)
            if bytes(left).strip(b"\0"):
                raise CorruptBackupError("corrupted: data follows the end of the archive")
            if seen > MAX_TRAILING_ZEROS:
                raise CorruptBackupError(f"corrupted: more than {MAX_TRAILING_ZEROS} bytes follow the end "
                                         "of the archive")
            chunk = self._next_chunk()
            if chunk is None:
                return
            left = memoryview(chunk)



_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)
_USTAR_MAGIC = b"ustar\x0000"
# What may follow the end-of-archive blocks: zero padding to a tar record (GNU tar pads to 10 KiB).
MAX_TRAILING_ZEROS = 1 << 20


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
    walk = _Walk(_StreamReader(next_chunk), open_file, bounds, on_manifest, progress)
    while member := _next_header(walk.reader):
        walk.member(*member)
    walk.reader.check_end()
    return _finish(walk.out, walk.v1_manifest, walk.trailer, walk.hashes, walk.sizes, walk.dirs, walk.n)


@dataclass
class _Walk:
    """One read_archive pass over the members: what those read so far established."""

    reader: _StreamReader
    open_file: OpenFile | None
    bounds: dict[str, int] | None
    on_manifest: Callable[[dict], None] | None
    progress: Progress | None
    out: ArchiveContents | None = None  # from a format-2 manifest
    trailer: dict | None = None  # format 2's checksums member
    v1_manifest: dict | None = None
    hashes: dict[str, str] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    n: int = 0

    def member(self, name: str, kind: bytes, size: int, mode: int, mtime: int) -> None:
        check_member(name, kind)
        if self.trailer is not None or self.v1_manifest is not None:
            raise CorruptBackupError(f"member {name!r} comes after the archive's last member")
        if name in (MANIFEST, CHECKSUMS):
            self._manifest_member(name, size)
            self.n += 1
            return
        self.n += 1
        if kind == tarfile.DIRTYPE:  # directories carry no data
            if self.out is not None and name not in self.out.manifest["dirs"] and name.count("/") > 1:
                raise CorruptBackupError(f"refusing directory {name!r}: it is not in the manifest")
            self.dirs.append(name)
            return
        self._file_member(name, size, mode, mtime)

    def _manifest_member(self, name: str, size: int) -> None:
        """The manifest (first in format 2, last in format 1) or format 2's checksums (last)."""
        if size > MAX_MANIFEST_BYTES:
            raise CorruptBackupError(f"the member {name} is {size} bytes, more than any real manifest")
        value = load_json(self.reader.read(size), name)
        self.reader.skip(-size % tarfile.BLOCKSIZE)
        if name == MANIFEST and self.n == 0 and peek_version(value) >= 2:
            version = check_manifest(value, first=True)
            self.bounds = value["sizes"]
            self.out = ArchiveContents(value, version)
            if self.on_manifest:
                self.on_manifest(value)
        elif name == MANIFEST and self.out is None:
            check_manifest(value, first=False)  # format 1: the last member (nothing may follow)
            self.v1_manifest = value
        elif name == CHECKSUMS and self.out is not None:
            self.trailer = value
        else:
            raise CorruptBackupError(f"the member {name} is out of place")

    def _file_member(self, name: str, size: int, mode: int, mtime: int) -> None:
        """A file: its size checked against the bounds before any data is read, its data hashed and
        handed to open_file's writer."""
        if name in self.sizes:
            raise CorruptBackupError(f"member {name!r} appears twice in the archive")
        if self.bounds is not None:
            if name not in self.bounds:
                raise CorruptBackupError(f"refusing member {name!r}: it is not in the manifest")
            if size != self.bounds[name]:
                raise CorruptBackupError(f"refusing member {name!r}: it is {size} bytes, the manifest says "
                                         f"{self.bounds[name]}")
        self.sizes[name] = size
        writer = self.open_file(name, mode, mtime) if self.open_file else None
        sha = hashlib.sha256()
        try:
            for piece in self.reader.pieces(size):
                sha.update(piece)
                if writer is not None:
                    writer.write(piece)
        finally:
            if writer is not None:
                writer.close()
        self.hashes[name] = sha.hexdigest()
        self.reader.skip(-size % tarfile.BLOCKSIZE)
        if self.progress and self.n % 500 == 0:
            self.progress("verify", self.n, 0)


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
