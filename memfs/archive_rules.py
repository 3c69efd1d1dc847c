"""What a memfs backup archive may hold: its members' names and types, and its manifest's fields.

The rules archive.py enforces as the stream goes by (and backups.py follows when writing): members
are regular files and directories at plain paths under data/{memories,embeddings,indexes}/, named
without control characters; the manifest (`memfs-backup.json`) is checked field by field, whichever
end of the archive it sits at (issue #24 item 6). Nothing here reads or writes a stream.
"""

from __future__ import annotations

import re
import tarfile

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


class CorruptBackupError(MemfsError):
    """The archive failed a check (checksum, member safety, manifest); nothing was changed."""


def printable(text: str) -> str:
    """`text` safe for a terminal: control and invisible formatting characters (ESC, newline, C1,
    bidi overrides, lone surrogates) escaped as repr would escape them. Issue #11 finding 4: a member
    name must never reach a terminal raw."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE)
PAX_TYPES = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)
# C0 controls, DEL, C1 controls (also as the lone surrogates surrogateescape makes of raw bytes 0x80-0x9f),
# and the bidirectional controls, which reorder what a terminal shows (U+202E made `evil\u202enosj.exe`
# read as `evilexe.json`; issue #24 item 11): marks, embeddings, overrides and isolates.
CONTROL_CHARS = re.compile("[\x00-\x1f\x7f-\x9f\udc80-\udc9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def check_member(name: str, kind: bytes) -> None:
    """Only regular files and directories, at normalised relative paths under data/{memories,…}/.

    This is PEP 706's "data" filter made stricter: that filter also admits links that stay inside the
    tree, so it must resolve every path (`realpath`, an lstat per component: a fifth of a restore's
    time). With no link members and files opened O_EXCL|O_NOFOLLOW, no path can resolve outside
    staging. tests/test_backup.py pins this to tarfile: its data filter accepts, unchanged, every member
    of a real backup that this accepts; and each hostile member of the issue is refused here.
    Names with control characters are refused too (issue #11 finding 4: they reached the terminal).
    """
    if kind in PAX_TYPES:
        raise CorruptBackupError(
            "refusing a PAX extended header: memfs writes plain ustar/GNU members and never PAX ones, which "
            "come from GNU tar --format=posix, bsdtar/libarchive or Python's tarfile. This is not an archive "
            "that `manage_data.py backup` made; restore from one of those, or re-create it with "
            "`tar --format=gnu`")
    if CONTROL_CHARS.search(name):
        raise CorruptBackupError(f"refusing member {printable(name)!r}: its name holds control characters")
    if name in (MANIFEST, CHECKSUMS):
        if kind not in FILE_TYPES:
            raise CorruptBackupError(f"the member {name!r} is not a regular file")
        return
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\\" in name:
        raise CorruptBackupError(f"refusing member {name!r}: the path leaves the archive's tree")
    if kind not in FILE_TYPES and kind != tarfile.DIRTYPE:
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


def peek_version(manifest: dict) -> int:
    """The version a manifest claims, 0 if it claims none readable (check_manifest then says why)."""
    version = str(manifest.get("format", "")).rpartition("/")[2]
    return int(version) if version.isdigit() and version.isascii() else 0


def load_json(data: bytes, what: str) -> dict:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CorruptBackupError(f"the {what} is not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise CorruptBackupError(f"the {what} is not a JSON object")
    return value


_KINDS = ("backup", "pre-restore")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _malformed(field: str, why: str) -> CorruptBackupError:
    return CorruptBackupError(f"the manifest's {field} is malformed ({why}); this is not an archive memfs wrote, "
                              "or it was altered")


def _check_text(manifest: dict, field: str, *, required: bool = True, allowed: tuple[str, ...] = ()) -> None:
    value = manifest.get(field)
    if value is None and not required:
        return
    if not isinstance(value, str) or not value or len(value) > 256 or CONTROL_CHARS.search(value):
        raise _malformed(field, "missing, not a string, or holding control characters")
    if allowed and value not in allowed:
        raise _malformed(field, f"{printable(value)!r} is not one of {', '.join(allowed)}")


def _check_count(manifest: dict, field: str) -> int:
    value = manifest.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _malformed(field, f"{printable(repr(value))[:40]} is not a whole number >= 0")
    return value


def check_manifest(manifest: dict, *, first: bool) -> int:
    """The manifest's format version, after checking every field it has; raises before anything is
    written or swapped (issue #24 item 6: a manifest that came last was never checked, and a
    `memory_count` of "many" failed the restore only after the swap).

    `first`: the manifest is the archive's first member (format 2), else its last (format 1). A
    newer format raises UnsupportedFormatError wherever it sits; everything else odd, CorruptBackupError.
    """
    fmt = manifest.get("format")
    name, _, version = fmt.rpartition("/") if isinstance(fmt, str) else ("", "", "")
    if name != BACKUP_FORMAT_NAME or not version.isdigit() or not version.isascii() or int(version) < 1:
        raise CorruptBackupError(f"unknown backup format {printable(repr(fmt))[:80]}: not a memfs backup")
    if int(version) > BACKUP_FORMAT_VERSION:
        raise UnsupportedFormatError(f"written by a newer memfs (format {printable(fmt)}, this one reads up to "
                                     f"/{BACKUP_FORMAT_VERSION}); upgrade memfs to restore it")
    version = int(version)
    if first != (version >= 2):
        where = "first" if first else "last"
        raise CorruptBackupError(f"a format-{version} manifest cannot be the archive's {where} member")
    if not _TIME.match(manifest.get("created_at") if isinstance(manifest.get("created_at"), str) else ""):
        raise _malformed("created_at", "not a UTC time like 2025-01-01T00:00:00Z")
    _check_count(manifest, "memory_count")
    for text in ("memfs_version", "host", "model_id"):
        _check_text(manifest, text, required=False)
    _check_text(manifest, "kind", required=version >= 2, allowed=_KINDS)
    if version == 1:
        files = manifest.get("files")
        if not isinstance(files, dict) or not all(isinstance(v, str) and _SHA256.match(v) for v in files.values()):
            raise _malformed("files", "not a map of file name to SHA-256")
        for member in files:
            check_member(member, tarfile.REGTYPE)
        return version
    sizes, dirs = manifest.get("sizes"), manifest.get("dirs")
    if not isinstance(sizes, dict) or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                              for v in sizes.values()):
        raise _malformed("sizes", "not a map of file name to a size in bytes")
    if not isinstance(dirs, list) or not all(isinstance(d, str) for d in dirs):
        raise _malformed("dirs", "not a list of directory names")
    if _check_count(manifest, "total_bytes") != sum(sizes.values()):
        raise _malformed("total_bytes", "not the sum of the sizes")
    for member in sizes:
        check_member(member, tarfile.REGTYPE)
    for member in dirs:
        check_member(member, tarfile.DIRTYPE)
    return version
