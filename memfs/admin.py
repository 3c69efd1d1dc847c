"""The backup, restore, validation and off-site operations (memfs.ops), in the process that owns the
store. A mixin of LocalOperations: it uses `self.owner` (lock, store, swaps) and `self.layout`.

Secrets never travel as values: an identity or a passphrase is named by a file on the owner's machine
(the server takes such paths only from a local client, over its Unix socket).
"""

from __future__ import annotations

import functools
import logging
import sqlite3
from pathlib import Path
from typing import Iterable

from .backups import (BackupFile, apply_prune, clean_leftovers, create_backup, describe_policy, list_backups,
                      plan_prune, prune_backups, prune_messages, scan_backup_dir)
from .errors import BadRequestError, NotFoundError, io_error
from .ops import Progress
from .retention import Retention
from .restore import STATUS_MEANINGS, restore_backup, verify_backup
from .results import (BackupInfo, BackupList, BackupResult, OffsiteResult, Problem, PruneEntry, PruneResult,
                      RestoreSummary, Stray, ValidationResult)

log = logging.getLogger(__name__)


def translated(fn):
    """OSError / sqlite3.Error -> a MemfsError with advice, so every way in reports it the same."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (OSError, sqlite3.Error) as e:
            raise io_error(e) from e
    return wrapper


def relative_to_root(root: Path, path: Path) -> str:
    """A path as responses show it: relative to the store root when inside it (no absolute paths leak)."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def _secrets(identity_file: str | None, passphrase_file: str | None) -> tuple[list | None, str | None]:
    from .encryption import read_identity_file, read_passphrase_file

    identities = read_identity_file(Path(identity_file)) if identity_file else None
    passphrase = read_passphrase_file(Path(passphrase_file)) if passphrase_file else None
    return identities, passphrase


def _offsite(report) -> OffsiteResult:
    return OffsiteResult(report.dest, report.ok, report.dry_run,
                         [c.name for c in report.copied if c.ok], list(report.already_there), list(report.deleted),
                         list(report.errors) + [f"{c.name}: {c.error}" for c in report.copied if not c.ok])


def _refuse_unless_restorable(b: BackupFile, report, verify: bool) -> None:
    from .archive import CorruptBackupError
    from .encryption import DecryptionError, EncryptionKeyError

    if report.status == "missing" and not verify:
        return  # --no-verify: restorable without its .md5
    if report.status == "encrypted":
        raise EncryptionKeyError(f"{b.name} is encrypted: give --identity FILE (or MEMFS_AGE_IDENTITY) or "
                                 "--passphrase-file FILE; nothing was changed")
    if report.status == "wrong key":
        raise DecryptionError(f"{b.name}: {report.reason}; nothing was changed")
    if not report.ok:
        raise CorruptBackupError(f"{b.name}: {report.status}: {report.reason or STATUS_MEANINGS[report.status]}; "
                                 "nothing was changed")


class AdminOperations:
    owner: object
    layout: object

    def _rel(self, path: Path) -> str:
        return relative_to_root(self.layout.root, path)

    def _backup_dir(self, backup_dir: str | None) -> Path:
        return Path(backup_dir) if backup_dir else self.layout.backups

    @translated
    def backup(self, *, compression: str = "gz", prune: bool = True, retention: Retention = Retention(),
               backup_dir: str | None = None, recipients: Iterable[str] = (), passphrase_file: str | None = None,
               copy_to: str | None = None, progress: Progress | None = None) -> BackupResult:
        """A consistent backup: writes wait (they do not fail) until the snapshot is taken. Catalog and
        vectors are levelled with the files first, so restoring the archive embeds nothing. Retention
        follows; with `copy_to`, an off-site copy (a failure there leaves the local backup in place)."""
        from .encryption import parse_recipients

        if compression not in ("gz", "zst"):
            raise BadRequestError(f"compression must be gz or zst, not {compression!r}")
        keys = parse_recipients(recipients) if recipients else None
        _, passphrase = _secrets(None, passphrase_file)
        directory = self._backup_dir(backup_dir)
        with self.owner.exclusive() as store:
            clean_leftovers(self.layout, directory)
            store.reconcile(verify_vectors=True)
            made = create_backup(self.layout, backup_dir=directory, compression=compression, progress=progress,
                                 recipients=keys, passphrase=passphrase)
        pruned = []
        if prune:  # the backup just made is never a candidate, whatever the clock or the policy says
            pruned = apply_prune([i for i in plan_prune(directory, retention)
                                  if i.backup.path != made.path])
        for line in prune_messages(pruned):
            log.info("%s", line)
        offsite = None
        if copy_to:
            from .offsite import offsite_sync

            offsite = _offsite(offsite_sync(directory, copy_to, retention, prune=prune))
        return BackupResult(self._rel(made.path), made.name, made.size, self._rel(made.md5_path), made.encrypted,
                            [b.name for b in pruned], prune_messages(pruned), offsite)

    @translated
    def list_backups(self, *, retention: Retention = Retention(), verify: str | None = None,
                     identity_file: str | None = None, backup_dir: str | None = None,
                     passphrase_file: str | None = None) -> BackupList:
        """Every backup with its retention reasons; with `verify` "deep", each read whole as a restore
        would (restorable or not), with "quick" its checksum alone."""
        if verify not in (None, "deep", "quick"):
            raise BadRequestError(f"verify must be deep or quick, not {verify!r}")
        identities, passphrase = _secrets(identity_file, passphrase_file)
        directory = self._backup_dir(backup_dir)
        scanned = scan_backup_dir(directory)
        rows = []
        for item in plan_prune(directory, retention):
            b = item.backup
            report = verify_backup(b, deep=verify == "deep", identities=identities, passphrase=passphrase) \
                if verify else None
            rows.append(BackupInfo(b.name, self._rel(b.path), b.kind, b.created.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                   b.size, b.compression, report.status if report else "unverified",
                                   report.reason if report else "", b.encrypted,
                                   list(item.decision.reasons) if item.decision.keep else ["would be pruned"]))
        return BackupList(self._rel(directory), rows, describe_policy(retention),
                          dict(STATUS_MEANINGS), [Stray(s.name, s.describe()) for s in scanned.strays],
                          [p.name for p in scanned.leftovers])

    @translated
    def prune(self, *, retention: Retention = Retention(), dry_run: bool = False,
              backup_dir: str | None = None) -> PruneResult:
        plan, deleted = prune_backups(self._backup_dir(backup_dir), retention, dry_run)
        for line in prune_messages(deleted):
            log.info("%s", line)
        return PruneResult(dry_run, [PruneEntry(i.backup.name, i.decision.keep, list(i.decision.reasons))
                                     for i in plan])

    @translated
    def offsite_sync(self, dest: str, *, retention: Retention = Retention(), prune: bool = True,
                     dry_run: bool = False, backup_dir: str | None = None) -> OffsiteResult:
        """Give DEST (any rclone remote) a checksum-verified copy of every backup the policy keeps, and
        apply the same retention there."""
        from .offsite import offsite_sync

        return _offsite(offsite_sync(self._backup_dir(backup_dir), dest, retention,
                                     prune=prune, dry_run=dry_run))

    def _resolve(self, archive: str, backup_dir: str | None) -> BackupFile:
        directory = self._backup_dir(backup_dir)
        if archive == "latest":
            regular = [b for b in list_backups(directory)[0] if b.kind == "backup"]
            if not regular:
                raise NotFoundError(f"no backups in {self._rel(directory)}; `manage_data.py backup` makes one")
            return regular[0]
        path = Path(archive)
        if not path.is_absolute():
            path = directory / archive
        b = BackupFile.parse(path)
        if b is None or not path.is_file():
            from .archive import printable

            raise NotFoundError(f"{printable(archive)}: not a backup file (expected memory_backup_YYYYMMDD_HHMMSS"
                                ".tar.gz or .tar.zst); `manage_data.py list` shows what there is")
        return b

    @translated
    def restore(self, archive: str, *, verify: bool = True, dry_run: bool = False, backup_dir: str | None = None,
                identity_file: str | None = None, passphrase_file: str | None = None,
                progress: Progress | None = None) -> RestoreSummary:
        """Verify the archive completely, save the current data as a pre-restore backup (encrypted
        like the archive), swap, reindex. A dry run reads the whole archive and writes nothing."""
        b = self._resolve(archive, backup_dir)
        identities, passphrase = _secrets(identity_file, passphrase_file)
        if dry_run:
            report = verify_backup(b, identities=identities, passphrase=passphrase, progress=progress)
            _refuse_unless_restorable(b, report, verify)
            return RestoreSummary(self._rel(b.path), report.memory_count, dry_run=True, created_at=report.created_at)
        snapshot_keys = [i.to_public() for i in identities or () if hasattr(i, "to_public")] or None
        # Counted on the model itself, wherever the embedding happens after the swap (opening the store,
        # its levelling reconcile, the watcher's first pass, the check below): issue #24 item 10, where
        # one reconcile's report said "0 re-embedded" after opening had embedded every memory.
        encoded_before = getattr(self.owner.embedder, "embedded", 0)
        with self.owner.swapping():
            done = restore_backup(self.layout, b, verify_md5=verify, progress=progress, identities=identities,
                                  passphrase=passphrase, snapshot_recipients=snapshot_keys,
                                  snapshot_passphrase=passphrase)
        self.owner.wait_until_indexed()
        with self.owner.exclusive() as store:
            if self.owner.watcher is None:
                store.reconcile(verify_vectors=True)
            embedded = getattr(store.embedder, "embedded", 0) - encoded_before
            problems = self._validate(False, None, None, None, None)[1].problems
        return RestoreSummary(self._rel(b.path), done.memory_count, embedded,
                              self._rel(done.pre_restore.path) if done.pre_restore else None, problems)

    def _validate(self, backups: bool, backup_dir: str | None, identities, passphrase, progress):
        """(the validation report, as a result)."""
        from .validate import validate as run_validation

        from .sync.conflicts import problems as conflict_problems

        report = run_validation(self.layout, backups=backups, backup_dir=Path(backup_dir) if backup_dir else None,
                                progress=progress, identities=identities, passphrase=passphrase)
        problems = list(report.problems)
        problems += [Problem("conflict", path, message) for path, message in conflict_problems(self.layout)]
        return report, ValidationResult(report.ok and not problems, report.memory_files, report.seconds, problems,
                                        pending=report.pending)

    @translated
    def validate(self, *, backups: bool = False, fix: bool = False, backup_dir: str | None = None,
                 identity_file: str | None = None, passphrase_file: str | None = None,
                 progress: Progress | None = None) -> ValidationResult:
        """Report every problem; with `fix`, repair what is derived (never a memory file) and re-check.

        Without `fix` nothing is created or changed (issue #24 item 12): a process that owns the store
        only to validate it does not open it (opening creates a missing catalog, index directory or
        Chroma database, which then hid the finding under a line of drift per memory)."""
        from .validate import fix as repair

        identities, passphrase = _secrets(identity_file, passphrase_file)
        if self.owner.watcher is not None:  # files just dropped reach the catalog first (issue #24, 5)
            self.owner.watcher.wait_applied(timeout=30.0)
        check = functools.partial(self._validate, backups, backup_dir, identities, passphrase)
        with self.owner.using() as store:
            if store is None:
                _, result = check(progress)
                if not fix or not any(p.fixable for p in result.problems):
                    return result
                with self.owner.swapping():  # open the store now, to repair it
                    self.layout.create()
            with self.owner.exclusive() as store:
                report, result = check(progress)
                if not fix or not any(p.fixable for p in result.problems):
                    return result
                self.layout.create()
                clean_leftovers(self.layout, self._backup_dir(backup_dir))
                repair(store, report)
                _, after = check(None)
        return ValidationResult(after.ok, after.memory_files, after.seconds, after.problems,
                                fixed=len(result.problems) - len(after.problems), pending=after.pending)
