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
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Sequence

from . import __version__
from .archive import CHECKSUMS, MANIFEST, PARTS, Progress, checksums_bytes, manifest_bytes
from .encryption import AgeWriter
from .documents import format_time
from .embedder import MODEL_ID
from .errors import MemfsError
from .filestore import Layout, atomic_write, fsync_dir, is_ignored_name
from .retention import Decision, Retention, decide
from .tar_writer import CHUNK, CompressingSink, pad, tar_header

KINDS = {"memory_backup": "backup", "pre_restore": "pre-restore"}
_NAME = re.compile(r"^(?P<prefix>memory_backup|pre_restore)_(?P<stamp>\d{8}_\d{6})(?:_(?P<seq>\d+))?"
                   r"\.tar\.(?P<comp>gz|zst)(?P<age>\.age)?$")
# What an operator would take for a backup: anything so named that _NAME does not accept is a stray.
_LOOKS_LIKE = re.compile(r"^(memory_backup|pre_restore)_.*\.tar\.(gz|zst)(\.age)?$")
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
    encrypted: bool = False  # an age file (`….tar.gz.age`): the compressed archive, encrypted

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
        """The backup a name describes, or None if it is not one of ours (an impossible date included)."""
        m = _NAME.match(path.name)
        if not m:
            return None
        try:
            created = datetime.strptime(m["stamp"], "%Y%m%d_%H%M%S").replace(tzinfo=timezone.utc)
        except ValueError:  # issue #11 finding 1: `…_20251340_250000…` killed every command
            return None
        return cls(path, KINDS[m["prefix"]], created, m["comp"], int(m["seq"] or 0), bool(m["age"]))

    def checksum_state(self, verify: bool = False) -> str:
        """ok / mismatch / missing / unverified (an .md5 exists but was not re-read)."""
        expected = read_md5_file(self.md5_path)
        if expected is None:
            return "missing"
        if not verify:
            return "unverified"
        return "ok" if md5_of(self.path) == expected else "mismatch"


@dataclass(frozen=True)
class Stray:
    """A file in the backup directory named like a backup that is not one. Listed, never touched."""

    path: Path
    reason: str

    @property
    def name(self) -> str:
        return self.path.name

    def describe(self) -> str:
        return f"not a memfs backup ({self.reason})"


@dataclass(frozen=True)
class BackupDir:
    backups: list[BackupFile]  # newest first
    leftovers: list[Path]  # partial archives of interrupted runs
    strays: list[Stray]  # named like backups, but not ones


def _stray_reason(p: Path) -> str:
    if not p.is_file():
        return "not a regular file"
    m = _NAME.match(p.name)
    if m:
        return f"impossible date {m['stamp']}"
    return "the name does not follow memory_backup_YYYYMMDD_HHMMSS[_N].tar.gz|zst[.age]"


def scan_backup_dir(backup_dir: Path) -> BackupDir:
    """Everything in backup_dir that concerns backups. Only our naming pattern is ever a candidate for
    anything; a stray (issue #11 finding 1) is reported so that it can be listed, and otherwise ignored."""
    if not backup_dir.is_dir():
        return BackupDir([], [], [])
    backups, leftovers, strays = [], [], []
    for p in backup_dir.iterdir():
        b = BackupFile.parse(p)
        if b is not None and p.is_file():
            backups.append(b)
        elif PARTIAL.match(p.name):
            leftovers.append(p)
        elif _LOOKS_LIKE.match(p.name):
            strays.append(Stray(p, _stray_reason(p)))
    backups.sort(key=lambda b: (b.created, b.seq), reverse=True)
    return BackupDir(backups, sorted(leftovers), sorted(strays, key=lambda s: s.name))


def list_backups(backup_dir: Path) -> tuple[list[BackupFile], list[Path]]:
    """(backups newest first, incomplete leftovers): scan_backup_dir without the strays."""
    found = scan_backup_dir(backup_dir)
    return found.backups, found.leftovers


def _new_name(backup_dir: Path, prefix: str, now: datetime, compression: str, encrypted: bool = False) -> str:
    """Unique, and sorting after every backup of the same second (even ones since pruned or renamed)."""
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%d_%H%M%S")
    taken = [m for p in backup_dir.iterdir()
             if (m := _NAME.match(p.name.removeprefix(".").removesuffix(".partial")))
             and m["prefix"] == prefix and m["stamp"] == stamp]
    suffix = f".tar.{compression}" + (".age" if encrypted else "")
    if not taken:
        return f"{prefix}_{stamp}{suffix}"
    seq = max(int(m["seq"] or 0) for m in taken) + 1
    return f"{prefix}_{stamp}_{seq}{suffix}"


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


class _Changed(Exception):
    """A file's size changed between listing and archiving (a hand edit meanwhile): start again, since
    the manifest at the front already promised its size."""


def create_backup(layout: Layout, *, backup_dir: Path | None = None, compression: str = "gz",
                  kind: str = "backup", progress: Progress | None = None, now: datetime | None = None,
                  recipients: Sequence | None = None, passphrase: str | None = None) -> BackupFile:
    """Archive data/ into backup_dir. The caller holds the store's lock.

    Written as `.<name>.partial`, fsynced, its .md5 written, then renamed into place: a crash never
    leaves a file that looks like a good backup. Each member is read once: its SHA-256 is computed on
    the bytes as they go into the archive. With `recipients` (parsed by encryption.parse_recipients)
    or a `passphrase`, the archive is an age file (`….tar.gz.age`) and the .md5 covers the ciphertext.
    """
    backup_dir = backup_dir or layout.backups
    backup_dir.mkdir(parents=True, exist_ok=True)
    now = now or datetime.now(timezone.utc)
    encrypted = bool(recipients or passphrase)
    prefix = {v: k for k, v in KINDS.items()}[kind]
    name = _new_name(backup_dir, prefix, now, compression, encrypted)
    partial = backup_dir / f".{name}.partial"
    try:
        for attempt in range(3):
            try:
                digest = _write_archive(layout, partial, compression, kind, now, progress, recipients, passphrase)
                break
            except _Changed as e:
                changed = e
        else:
            raise MemfsError(f"{changed} changed size during each of 3 attempts to back it up; is a process "
                             "rewriting data/ continuously? Try again when it is idle")
        atomic_write(backup_dir / f"{name}.md5", f"{digest}  {name}\n".encode())
        os.replace(partial, backup_dir / name)
        fsync_dir(backup_dir)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return BackupFile(backup_dir / name, kind, now.replace(microsecond=0), compression, 0, encrypted)


def _write_archive(layout: Layout, partial: Path, compression: str, kind: str, now: datetime,
                   progress: Progress | None, recipients, passphrase) -> str:
    """Write the format-2 archive to `partial`; returns the MD5 of the bytes on disk."""
    members = list(_members(layout))
    sizes = {arc: st.st_size for _, arc, st in members if stat.S_ISREG(st.st_mode)}
    dirs = [arc for _, arc, st in members if stat.S_ISDIR(st.st_mode)]
    memory_count = sum(1 for arc in sizes
                       if arc.startswith("data/memories/") and not is_ignored_name(arc.rpartition("/")[2]))
    manifest = manifest_bytes(memfs_version=__version__, created_at=format_time(now), kind=kind,
                              host=socket.gethostname(), memory_count=memory_count, model_id=MODEL_ID,
                              sizes=sizes, dirs=dirs)
    stamp = int(now.timestamp())
    hashes: dict[str, str] = {}
    with open(partial, "wb") as raw_file:
        out = AgeWriter(raw_file, recipients=recipients, passphrase=passphrase) \
            if (recipients or passphrase) else raw_file
        try:
            sink = CompressingSink(out, compression)
            try:
                sink.write(tar_header(MANIFEST, 0o644, len(manifest), stamp), manifest, pad(len(manifest)))
                for n, (path, arcname, st) in enumerate(members, 1):
                    if stat.S_ISDIR(st.st_mode):
                        sink.write(tar_header(arcname, st.st_mode & 0o7777, 0, int(st.st_mtime), is_dir=True))
                    elif stat.S_ISREG(st.st_mode):
                        hashes[arcname] = _add_file(sink, path, arcname, st)
                    if progress and (n % 200 == 0 or n == len(members)):
                        progress("backup", n, len(members))
                trailer = checksums_bytes(hashes)
                sink.write(tar_header(CHECKSUMS, 0o644, len(trailer), stamp), trailer, pad(len(trailer)),
                           b"\0" * (2 * tarfile.BLOCKSIZE))  # and the end of the archive
            finally:
                sink.close()
        finally:
            if out is not raw_file:
                out.close()
        raw_file.flush()
        os.fsync(raw_file.fileno())
    return (out.md5 if out is not raw_file else sink.md5).hexdigest()


def _add_file(sink: CompressingSink, path: str, arcname: str, st: os.stat_result) -> str:
    """Header, content and padding of one regular file; returns the content's SHA-256."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if st.st_size <= CHUNK:
            data = os.read(fd, st.st_size + 1)  # one byte more notices a file that grew since it was listed
            if len(data) != st.st_size:
                raise _Changed(path)
            sink.write(tar_header(arcname, st.st_mode & 0o7777, len(data), int(st.st_mtime)), data, pad(len(data)))
            return hashlib.sha256(data).hexdigest()
        # Large files (Chroma's, the catalog) stream; the lock guarantees nobody writes them meanwhile.
        sha = hashlib.sha256()
        sink.write(tar_header(arcname, st.st_mode & 0o7777, st.st_size, int(st.st_mtime)))
        left = st.st_size
        while left:
            block = os.read(fd, min(CHUNK, left))
            if not block:
                raise _Changed(path)
            sha.update(block)
            sink.write(block)
            left -= len(block)
        sink.write(pad(st.st_size))
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


def plan_prune(backup_dir: Path, policy: Retention, *,
               now: datetime | None = None) -> list[PruneItem]:
    """The retention plan for the backups in backup_dir (strays are never in it)."""
    return plan_backups(list_backups(backup_dir)[0], policy, now=now)


def plan_backups(backups: list[BackupFile], policy: Retention, *,
                 now: datetime | None = None) -> list[PruneItem]:
    """Regular backups under GFS (encrypted or not alike); pre-restore snapshots by their own count,
    never displacing others, and never while younger than policy.pre_restore_days (issue #11 finding 3:
    a fourth restore's next backup deleted the data from before the first one, silently)."""
    now = now or datetime.now(timezone.utc)
    backups = sorted(backups, key=lambda b: (b.created, b.seq), reverse=True)
    regular = [b for b in backups if b.kind == "backup"]
    pre = [b for b in backups if b.kind == "pre-restore"]
    plan = [PruneItem(b, d) for b, d in zip(regular, decide([b.created for b in regular], policy))]
    if plan and not plan[0].decision.keep:
        # Trigger: a policy of all zeros. Why: retention must never delete the only fresh backup
        # (restic refuses such a policy outright). Outcome: the newest backup is always kept.
        plan[0] = PruneItem(plan[0].backup, Decision(plan[0].backup.created, True, ("newest backup",)))
    young = timedelta(days=policy.pre_restore_days)
    for n, b in enumerate(pre):
        reasons = []
        if n < policy.pre_restore:
            reasons.append(f"pre-restore {n + 1} of {policy.pre_restore}")
        if now - b.created < young:
            reasons.append(f"pre-restore younger than {policy.pre_restore_days} days")
        plan.append(PruneItem(b, Decision(b.created, bool(reasons), tuple(reasons))))
    plan.sort(key=lambda item: (item.backup.created, item.backup.seq), reverse=True)
    return plan


def prune_messages(deleted: list[BackupFile]) -> list[str]:
    """One line per deleted backup for the log and non-quiet output; a pre-restore snapshot is named
    as what it is, the data from before a restore."""
    return [f"pruned pre-restore snapshot {b.name} (the data replaced by a restore on "
            f"{b.created:%Y-%m-%d %H:%M} UTC)" if b.kind == "pre-restore" else f"pruned {b.name}" for b in deleted]


def prune_backups(backup_dir: Path, policy: Retention,
                  dry_run: bool = False, *, now: datetime | None = None) -> tuple[list[PruneItem], list[BackupFile]]:
    """(the plan, the backups deleted). The caller holds the store's lock."""
    plan = plan_prune(backup_dir, policy, now=now)
    return plan, ([] if dry_run else apply_prune(plan))


def apply_prune(plan: list[PruneItem]) -> list[BackupFile]:
    deleted = []
    for item in plan:
        if not item.decision.keep:
            item.backup.path.unlink(missing_ok=True)
            item.backup.md5_path.unlink(missing_ok=True)
            deleted.append(item.backup)
    return deleted



def describe_policy(policy: Retention) -> str:
    """The retention policy in force, in words, for the header of `manage_data.py list`."""
    return (f"retention (UTC): the newest backup of each of the last {policy.daily} days, {policy.weekly} ISO "
            f"weeks and {policy.monthly} months that have backups, and always the newest; pre-restore "
            f"snapshots: the newest {policy.pre_restore}, and every one younger than {policy.pre_restore_days} "
            "days. Encrypted and plain backups count alike.")
