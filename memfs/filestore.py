"""The on-disk side: the directory layout, atomic writes, which files are memories, and scanning.

File naming (docs/storage.md): memories the store writes go to `YYYY/MM/DD/<slug>-<id8>.json` under
data/memories/, by creation day (UTC). People may use any subfolders they like; every `*.json` file
that is not a temp, swap or dot-file is a memory, wherever it lies.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import secrets
import stat
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

MEMORY_SUFFIX = ".json"


@dataclass(frozen=True)
class Layout:
    """Where everything lives under a root (DESIGN.md §2)."""

    root: Path


    @classmethod
    def of(cls, where: "Layout | Path | str") -> "Layout":
        """The layout itself, or the one rooted at a path (the entry points make one and hand it down)."""
        return where if isinstance(where, Layout) else cls(Path(where))


    def require(self, *, create: bool = False) -> "Layout":
        """This layout, created if asked, else StoreNotInitializedError when there is no store here."""
        if not os.access(self.data, os.X_OK) and self.data.exists():
            from .errors import permission_denied

            raise permission_denied(self.data, f"the store at {self.root} belongs to {{uid}} (its data/ is private)")
        if create:
            self.create()
        elif not self.memories.is_dir():
            from .errors import StoreNotInitializedError

            raise StoreNotInitializedError(
                f"no memfs store at {self.root} (missing {self.memories}); run `memfs init` first "
                "or point --root / MEMFS_ROOT at an existing store")
        return self

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def memories(self) -> Path:
        return self.data / "memories"

    @property
    def embeddings(self) -> Path:
        return self.data / "embeddings"

    @property
    def indexes(self) -> Path:
        return self.data / "indexes"

    @property
    def logs(self) -> Path:
        return self.data / "logs"

    @property
    def backups(self) -> Path:
        return self.root / "backups"

    @property
    def lock_file(self) -> Path:
        return self.data / "memfs.lock"

    def directories(self) -> list[Path]:
        return [self.data, self.memories, self.embeddings, self.indexes, self.logs, self.backups]

    def create(self) -> None:
        """The directories, private to this user unless MEMFS_UMASK says otherwise (issue #24, item 4)."""
        mode = 0o777 & ~store_umask()
        for d in self.directories():
            d.mkdir(parents=True, exist_ok=True, mode=mode)


def store_umask() -> int:
    """The mask the store's files and directories are created with: MEMFS_UMASK (octal), default 077,
    so the memories, catalog and vectors are 0600 in 0700 directories whatever the login umask is
    (issue #24, item 4: under umask 022 every other user could read every memory). Set 027 or 022 to
    share a store with a group or everyone."""
    raw = os.environ.get("MEMFS_UMASK", "077")
    try:
        value = int(raw, 8)
    except ValueError:
        value = -1
    if not 0 <= value <= 0o777:
        from .errors import BadRequestError

        raise BadRequestError(f"MEMFS_UMASK={raw!r} is not an octal mask such as 077 (private) or 022")
    return value


def apply_store_umask() -> None:
    """Make this process create files with store_umask() (commands and owners call it on entry)."""
    os.umask(store_umask())


def is_ignored_name(name: str) -> bool:
    """Temp files, editor swap/backup files and dot-files are never memories (DESIGN.md §2)."""
    return (
        name.startswith(".")  # dot-files, vim's .x.swp, emacs' .#x lock links
        or name.endswith(("~", ".tmp", ".swp", ".swx"))
        or not name.endswith(MEMORY_SUFFIX)
    )


@dataclass(frozen=True)
class FileState:
    """What reconcile compares to decide whether a file needs reading again.

    The ctime is part of it (issue #14, findings 2 and 3): `chmod` changes only the ctime, and a
    same-size edit whose mtime is put back (`touch -r`, tools that copy timestamps) changes the ctime
    too, because no one can set a ctime. A rename changes it as well, which costs a re-read (no
    re-embedding: the row keeps its id, and Chroma its vector). 0 means "not known" (catalogs before schema 2).
    """

    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int = 0

    @classmethod
    def of(cls, st: os.stat_result) -> "FileState":
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)

    def same_file(self, other: "FileState") -> bool:
        """The same inode with the same size and mtime: what a rename keeps (the ctime it changes)."""
        return (self.ino, self.size, self.mtime_ns) == (other.ino, other.size, other.mtime_ns)


# atomic_write's temp files: `.<name>.<8 hex digits>.tmp` beside the target (docs/storage.md).
TEMP_NAME = re.compile(r"^\..+\.json\.[0-9a-f]{8}\.tmp$")


def scan(memories: Path, temps: list[tuple[str, float]] | None = None) -> dict[str, FileState]:
    """Every memory file under `memories`, as POSIX relative path -> FileState. Only stats, no reads.

    With `temps`, the temp files atomic_write leaves when a process dies mid-write are appended to it
    as (relative path, mtime), for the owner to remove and `validate` to report (issue #14, finding 6).
    """
    found: dict[str, FileState] = {}
    stack = [(memories, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            continue  # removed while we walked: its files are gone, which is what we report
        except PermissionError:
            if directory == memories:
                raise
            # Trigger: a folder this user may not list (chmod 000). Why: it failed every reconcile, so
            # the owner never became ready and /reindex, /validate gave 500 (#15). Outcome: it stands as
            # one entry, "<folder>/*.json", whose read fails with "Permission denied": reported like an
            # unreadable file, and everything else is served.
            found[f"{prefix}*{MEMORY_SUFFIX}"] = FileState.of(os.stat(directory))
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if not entry.name.startswith("."):
                    stack.append((Path(entry.path), f"{prefix}{entry.name}/"))
            elif not is_ignored_name(entry.name):
                try:
                    if entry.is_file():  # a symlink to a file counts, as it does for readers
                        found[prefix + entry.name] = FileState.of(entry.stat())
                except FileNotFoundError:
                    continue
                except PermissionError:
                    # Trigger: a folder that may be listed but not entered (mode r--, no x): every stat in
                    # it fails. Why: that stopped validate, --fix and reconcile at the folder with exit 3
                    # (issue #24 item 13). Outcome: the folder stands as one unreadable entry, as above.
                    found[f"{prefix}*{MEMORY_SUFFIX}"] = FileState.of(os.stat(directory))
            elif temps is not None and TEMP_NAME.match(entry.name):
                try:
                    if entry.is_file(follow_symlinks=False):
                        temps.append((prefix + entry.name, entry.stat(follow_symlinks=False).st_mtime))
                except FileNotFoundError:
                    continue
    return found


def remove_stale_temps(memories: Path, temps: list[tuple[str, float]], before: float) -> list[str]:
    """Remove the temp files (from `scan(temps=…)`) last written before `before` (a time.time()).

    Only the lock holder writes temp files, so one older than the moment it took the lock was left by
    a process that died mid-write; a younger one may be a write in flight and is left alone.
    """
    removed = []
    for rel, mtime in temps:
        if mtime < before and TEMP_NAME.match(rel.rsplit("/", 1)[-1]):
            try:
                (memories / rel).unlink()
                removed.append(rel)
            except FileNotFoundError:
                continue
    return removed


def is_ignored_path(rel: str) -> bool:
    """A path under memories/ that is no memory: an ignored name, or inside a dot-folder (.git/)."""
    parts = rel.split("/")
    return is_ignored_name(parts[-1]) or any(p.startswith(".") for p in parts[:-1])


def stat_paths(memories: Path, rels: set[str]) -> dict[str, FileState]:
    """Like `scan`, for just these relative paths: those that exist now and are memories."""
    found: dict[str, FileState] = {}
    for rel in rels:
        if is_ignored_path(rel):
            continue
        try:
            st = os.stat(memories / rel)
        except (FileNotFoundError, NotADirectoryError):
            continue
        if stat.S_ISREG(st.st_mode):
            found[rel] = FileState.of(st)
    return found


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Temp file in the same directory, fsync, os.replace, fsync the directory (DESIGN.md §2).

    A reader never sees half a file, and a crash leaves the old or the new version. The temp name
    starts with a dot and ends in .tmp, so neither a scan nor the watcher takes it for a memory.
    """
    with atomic_write_stream(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_write_stream(path: Path) -> Iterator[BinaryIO]:
    """atomic_write for content written a piece at a time (an export): the file appears whole or not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_many(items: Sequence[tuple[Path, bytes]]) -> None:
    """atomic_write for many files, flushed to disk together rather than with two fsyncs each.

    Every temp file is written, the file system is flushed once (syncfs), then each temp file is
    renamed into place and each directory touched is fsynced: a reader never sees half a file and a
    crash leaves each file old or new, as with atomic_write. (git's `core.fsyncMethod=batch` works the
    same way.) Bulk add spent 1.8 ms a file in fsync on our test VM; this makes it one flush a batch.
    """
    if len(items) < 2:
        for path, data in items:
            atomic_write(path, data)
        return
    tmps: list[Path] = []
    try:
        for path, data in items:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmps.append(path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp")
            with open(tmps[-1], "wb") as f:
                f.write(data)
        dirs = {path.parent for path, _ in items}
        for d in {os.stat(d).st_dev: d for d in dirs}.values():  # one flush per file system
            sync_filesystem(d)
        for tmp, (path, _) in zip(tmps, items):
            os.replace(tmp, path)
    except BaseException:
        for tmp in tmps:
            tmp.unlink(missing_ok=True)
        raise
    for d in dirs:
        fsync_dir(d)


def libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def sync_filesystem(path: Path) -> None:
    """Flush everything written to path's file system to disk (Linux syncfs)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc().syncfs(fd) != 0:
            e = ctypes.get_errno()
            raise OSError(e, f"cannot flush {path} to disk: {os.strerror(e)}")
    finally:
        os.close(fd)


_SLUG_WORD = re.compile(r"[a-z0-9]+")


def slugify(text: str, max_words: int = 6, max_len: int = 40) -> str:
    words = _SLUG_WORD.findall(text.lower())[:max_words]
    return "-".join(words)[:max_len].strip("-") or "memory"


def new_relpath(memories: Path, mem_id: str, content: str, created_at: datetime) -> str:
    """A humane, unused relative path for a memory the store writes: YYYY/MM/DD/<slug>-<id8>.json."""
    day = created_at.astimezone(timezone.utc).strftime("%Y/%m/%d")
    stem = f"{slugify(content)}-{mem_id[:8]}"
    rel = f"{day}/{stem}{MEMORY_SUFFIX}"
    n = 2
    while (memories / rel).exists():
        rel = f"{day}/{stem}-{n}{MEMORY_SUFFIX}"
        n += 1
    return rel


def default_id_for(relpath: str) -> str:
    """A bare file without an `id` is known by its path under memories/, minus `.json`."""
    return relpath[: -len(MEMORY_SUFFIX)] if relpath.endswith(MEMORY_SUFFIX) else relpath
