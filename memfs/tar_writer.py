"""Writing a compressed tar stream: plain ustar headers built directly (tar_header), the padding that
ends a member's data (pad), and the sink that compresses, MD5s and writes it on a worker thread
(CompressingSink). memfs.backups writes archives with it; memfs.archive reads them (and shares CHUNK,
the size the streams are handed on in).
"""

from __future__ import annotations

import hashlib
import queue
import tarfile
import threading
import zlib
from typing import BinaryIO

CHUNK = 1 << 20


class CompressingSink:
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
        """Collect pieces of the tar stream; hand them on joined, in chunks of about CHUNK bytes."""
        self._parts += pieces
        self._size += sum(map(len, pieces))
        if self._size >= CHUNK:
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


_OWNER_IDS = b"0000000\x000000000\0"  # uid, gid 0
_USTAR_TAIL = bytes(100) + b"ustar\x0000" + bytes(tarfile.BLOCKSIZE - 265)  # no link name; ustar magic, rest empty
_USTAR_TAIL_SUM = sum(_USTAR_TAIL) + 8 * ord(" ")


def tar_header(arcname: str, mode: int, size: int, mtime: int, is_dir: bool = False) -> bytes:
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


def pad(n: int) -> bytes:
    return b"\0" * (-n % tarfile.BLOCKSIZE)
