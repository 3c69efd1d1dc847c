"""Backup files: naming, listing, checksums, creating a backup, and retention (prune).

An archive holds data/ (memories, embeddings, indexes; never logs, locks or temp files) and, as its last
member, a manifest with the SHA-256 of every other member. Beside it, `<archive>.md5` in md5sum format.
The caller holds the store's lock throughout, so nothing changes while it is read.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import stat
import tarfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import orjson

from . import __version__
from .archive import (BACKUP_FORMAT_NAME, BACKUP_FORMAT_VERSION, MANIFEST, PARTS, CorruptBackupError,  # noqa: F401
                      Progress, _CHUNK, _CompressingSink, _pad, _tar_header)
from .documents import format_time
from .embedder import MODEL_ID
from .errors import MemfsError
from .filestore import Layout, atomic_write, fsync_dir, is_ignored_name
from .retention import Decision, Policy, decide

KINDS = {"memory_backup": "backup", "pre_restore": "pre-restore"}
_NAME = re.compile(r"^(?P<prefix>memory_backup|pre_restore)_(?P<stamp>\d{8}_\d{6})(?:_(?P<seq>\d+))?"
                   r"\.tar\.(?P<comp>gz|zst)$")
PARTIAL = re.compile(r"^\.(memory_backup|pre_restore)_.*\.partial$")
STAGING_PREFIX = ".restore-"


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

