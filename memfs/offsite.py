"""Off-site copies of backups through rclone (issue #11 capability 9): any rclone remote (S3, B2, SFTP,
a mounted disk given as a plain path), each copy verified by checksum after upload, and the same
retention applied to the remote copies as to the local ones.

A failed off-site copy never undoes the local backup: `offsite_sync` reports what failed instead of
raising, and the caller logs it and exits 1. Only an unusable setup (no rclone) raises OffsiteError.

On the remote, an archive counts as a copy only once its `.md5` is there too: the archive is uploaded
and verified first, the `.md5` last, so an interrupted upload is re-done by the next sync rather than
mistaken for a good copy (the same rule as `.partial` locally).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

from .archive import printable
from .backups import BackupFile, list_backups, plan_backups, read_md5_file
from .errors import EXIT_PROBLEMS, MemfsError
from .retention import Retention

# Fail fast on an unreachable remote instead of rclone's default minutes of retries.
DEFAULT_FLAGS = ("--contimeout", "15s", "--timeout", "120s", "--retries", "2", "--low-level-retries", "3")


class OffsiteError(MemfsError):
    """The off-site copy could not be attempted (no rclone, unusable destination). The local backup stands."""

    exit_code = EXIT_PROBLEMS


@dataclass(frozen=True)
class Rclone:
    """How to run rclone: the binary, an optional config file (else rclone's own / RCLONE_CONFIG), flags."""

    binary: str = "rclone"
    config: Path | None = None
    flags: Sequence[str] = DEFAULT_FLAGS

    def run(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        exe = shutil.which(self.binary)
        if exe is None:
            raise OffsiteError(f"rclone is not installed (looked for {self.binary!r}); install Debian's rclone "
                               "package (apt-get install rclone). The local backup is unaffected")
        cmd = [exe, *(["--config", str(self.config)] if self.config else []), *self.flags, *args]
        return subprocess.run(cmd, input=input, capture_output=True, text=True)


def remote_path(dest: str, name: str = "") -> str:
    """DEST joined with a file name: `remote:` + name, `remote:dir/` + name, `/mnt/disk` + `/` + name."""
    if not name:
        return dest
    return dest + name if dest.endswith((":", "/")) else f"{dest}/{name}"


def _error(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return printable(lines[-1] if lines else f"rclone exited {result.returncode}")


@dataclass(frozen=True)
class OffsiteCopy:
    name: str
    dest: str
    ok: bool
    verified_by: str = ""  # "md5" (the remote's own hash) or "download" (read back and hashed here)
    error: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def remote_md5(name: str, dest: str, rclone: Rclone = Rclone()) -> tuple[str | None, str]:
    """(MD5 of DEST/name as the remote computes it, how); downloads and hashes it when the backend has
    no MD5. None if it is not there."""
    for how, extra in (("md5", ()), ("download", ("--download",))):
        r = rclone.run("md5sum", *extra, "--include", f"/{name}", dest)
        if r.returncode != 0:
            raise OffsiteError(f"cannot read checksums at {dest}: {_error(r)}")
        for line in r.stdout.splitlines():
            digest, _, listed = line.partition("  ")
            if listed.strip() == name:
                digest = digest.strip().lower()
                if len(digest) == 32 and all(c in "0123456789abcdef" for c in digest):
                    return digest, how
                break  # an empty or UNSUPPORTED hash: try downloading it
        else:
            return None, how
    return None, "download"


def copy_offsite(backup: BackupFile, dest: str, rclone: Rclone = Rclone()) -> OffsiteCopy:
    """Upload one backup and its .md5 to DEST, verifying the archive by checksum before the .md5 goes up.
    Never raises for a failed copy: the result says what went wrong."""
    expected = read_md5_file(backup.md5_path)
    if expected is None:
        return OffsiteCopy(backup.name, dest, False, error=f"{backup.md5_path.name} is missing locally; run "
                           "`manage_data.py validate --backups`")
    try:
        r = rclone.run("copyto", str(backup.path), remote_path(dest, backup.name))
        if r.returncode != 0:
            return OffsiteCopy(backup.name, dest, False, error=f"upload failed: {_error(r)}")
        digest, how = remote_md5(backup.name, dest, rclone)
        if digest != expected:
            return OffsiteCopy(backup.name, dest, False, how, f"the copy at {dest} does not match the local "
                               f"checksum ({digest or 'not found'} != {expected}); it will be uploaded again")
        r = rclone.run("copyto", str(backup.md5_path), remote_path(dest, backup.md5_path.name))
        if r.returncode != 0:
            return OffsiteCopy(backup.name, dest, False, how, f"uploading the .md5 failed: {_error(r)}")
    except OffsiteError as e:
        return OffsiteCopy(backup.name, dest, False, error=str(e))
    return OffsiteCopy(backup.name, dest, True, how)


@dataclass
class RemoteListing:
    backups: list[BackupFile]  # complete copies (archive and .md5), newest first; paths relative to DEST
    sizes: dict[str, int]
    md5s: set[str]  # names of the .md5 files present


def list_remote(dest: str, rclone: Rclone = Rclone()) -> RemoteListing:
    """What is at DEST. Only our naming pattern is considered; anything else there is left alone."""
    r = rclone.run("lsjson", "--files-only", "--no-modtime", "--no-mimetype", dest)
    if r.returncode != 0:
        if "directory not found" in r.stderr:
            return RemoteListing([], {}, set())
        raise OffsiteError(f"cannot list {dest}: {_error(r)}")
    entries = json.loads(r.stdout or "[]")
    sizes = {e["Name"]: e["Size"] for e in entries}
    md5s = {n for n in sizes if n.endswith(".md5")}
    backups = [b for n in sizes if (b := BackupFile.parse(Path(n))) is not None]
    backups.sort(key=lambda b: (b.created, b.seq), reverse=True)
    return RemoteListing(backups, sizes, md5s)


@dataclass
class OffsiteReport:
    dest: str
    copied: list[OffsiteCopy] = field(default_factory=list)
    already_there: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        return not self.errors and all(c.ok for c in self.copied)

    def to_dict(self) -> dict:
        return {"dest": self.dest, "ok": self.ok, "dry_run": self.dry_run,
                "copied": [c.to_dict() for c in self.copied], "already_there": self.already_there,
                "deleted": self.deleted, "errors": self.errors}


def offsite_sync(backup_dir: Path, dest: str, policy: Retention = Retention(), *,
                 prune: bool = True, dry_run: bool = False, rclone: Rclone = Rclone(),
                 now: datetime | None = None) -> OffsiteReport:
    """Make DEST hold a verified copy of every local backup the policy keeps, then apply the policy to
    DEST's copies (a copy no longer here locally, say a monthly, is kept while the policy keeps it).

    A copy at DEST counts when its .md5 is there and matches the local one; otherwise it is uploaded
    (again) and verified. Deletes at DEST only what the policy rejects among DEST's complete copies;
    files there not named like backups are never touched. Never raises for a failed copy: see `ok`.
    """
    report = OffsiteReport(dest, dry_run=dry_run)
    try:
        remote = list_remote(dest, rclone)
    except OffsiteError as e:
        report.errors.append(str(e))
        return report
    local = list_backups(backup_dir)[0]
    wanted = [i.backup for i in plan_backups(local, policy, now=now) if i.decision.keep]
    present = {b.name for b in remote.backups if b.md5_path.name in remote.md5s}
    hashes = _remote_hashes(dest, rclone) if present else {}
    for b in sorted(wanted, key=lambda b: (b.created, b.seq)):
        if b.name in present and remote.sizes.get(b.name) == b.size and _same_md5_file(b, dest, rclone) \
                and hashes.get(b.name, read_md5_file(b.md5_path)) == read_md5_file(b.md5_path):
            report.already_there.append(b.name)  # (a backend without MD5 is trusted on size and .md5)
            continue
        present.discard(b.name)
        if dry_run:
            report.copied.append(OffsiteCopy(b.name, dest, True, "", "would upload"))
            continue
        copy = copy_offsite(b, dest, rclone)
        report.copied.append(copy)
        if copy.ok:
            present.add(b.name)
    local_names = {b.name for b in local}
    for b in remote.backups:  # copies only DEST holds: nothing here re-uploads them, so check them there
        if b.name in present and b.name not in local_names and not dry_run:
            problem = _verify_remote_only(b, dest, hashes, rclone)
            if problem:
                present.discard(b.name)
                report.errors.append(problem)
    if not prune:
        return report
    complete = [b for b in remote.backups if b.name in present] + \
        [BackupFile.parse(Path(c.name)) for c in report.copied if c.ok and c.name not in
         {b.name for b in remote.backups}]
    for item in plan_backups(complete, policy, now=now):
        if item.decision.keep:
            continue
        if not dry_run:
            for name in (item.backup.name, item.backup.md5_path.name):  # the archive first: never a lone good-looking .md5
                r = rclone.run("deletefile", remote_path(dest, name))
                if r.returncode != 0 and "not found" not in r.stderr:
                    report.errors.append(f"cannot delete {name} at {dest}: {_error(r)}")
        report.deleted.append(item.backup.name)
    return report


def _verify_remote_only(backup: BackupFile, dest: str, hashes: dict[str, str], rclone: Rclone) -> str:
    """"" if DEST's copy of a backup no longer here matches DEST's own .md5 of it, else what is wrong.

    Issue #24 item 9: such copies were kept, unchecked, and the sync said ok. A damaged one is left in
    place (it may be the last copy there is) but is not counted as a copy: retention plans without it,
    and the sync reports it until someone deletes it or puts a good copy back."""
    theirs = _remote_md5_file(backup, dest, rclone)
    try:
        digest = hashes.get(backup.name) or remote_md5(backup.name, dest, rclone)[0]
    except OffsiteError as e:
        return f"cannot verify {backup.name} at {dest} (held only there): {e}"
    if theirs is None or digest != theirs:
        return (f"the copy of {backup.name} at {dest} (held only there, not here) does not match its .md5 "
                f"({digest or 'unreadable'} != {theirs or 'unreadable'}): it is damaged and no longer counts as a "
                "copy. It was left in place; delete it there, or put back a good copy from elsewhere")
    return ""


def _remote_hashes(dest: str, rclone: Rclone) -> dict[str, str]:
    """name -> MD5 of every file at DEST the backend can hash (one listing; none if it cannot)."""
    r = rclone.run("md5sum", dest)
    out = {}
    for line in r.stdout.splitlines() if r.returncode == 0 else []:
        digest, _, name = line.partition("  ")
        if len(digest.strip()) == 32:
            out[name.strip()] = digest.strip().lower()
    return out


def _remote_md5_file(backup: BackupFile, dest: str, rclone: Rclone) -> str | None:
    """The digest DEST's .md5 for this backup names (cheap: the .md5 is 80 bytes), None if unreadable."""
    r = rclone.run("cat", remote_path(dest, backup.md5_path.name))
    words = r.stdout.split() if r.returncode == 0 else []
    digest = words[0].lower() if words else ""
    return digest if len(digest) == 32 and all(c in "0123456789abcdef" for c in digest) else None


def _same_md5_file(backup: BackupFile, dest: str, rclone: Rclone) -> bool:
    """Does DEST's .md5 for this backup name the same digest as ours?"""
    return _remote_md5_file(backup, dest, rclone) == read_md5_file(backup.md5_path)
