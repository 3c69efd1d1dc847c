"""`manage_data.py`: backups, retention, restore and validation for operators and cron.

A thin click layer over memfs.backup, memfs.retention and memfs.validate. Every run takes the store's
lock (a second concurrent run exits 4), and appends one line to data/logs/manage-data.log.
"""

from __future__ import annotations

import functools
import logging
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import click

from .backups import BackupFile, clean_leftovers, list_backups, plan_prune, prune_backups, prune_summary
from .restore import finish_interrupted_restore, restore_backup, restore_summary, verify_and_extract
from .cli import (CommandError, emit_json, io_error, json_option, log_to_file, owner_client, progress_bar,
                  root_option)
from .client import RemoteStore
from .errors import EXIT_PROBLEMS, MemfsError, NotFoundError, StoreBusyError, StoreNotInitializedError
from .filestore import Layout
from .lock import StoreLock
from .retention import Policy
from .owner import backup_summary, take_backup
from .store import MemoryStore
from .validate import validate as run_validation

log = logging.getLogger("memfs.manage")


def _layout(ctx) -> Layout:
    layout = Layout(ctx.obj["root"])
    if not layout.data.is_dir():
        raise StoreNotInitializedError(f"no memfs store at {layout.root}; run `memfs init` there first, "
                                       "or point --root / MEMFS_ROOT at the store")
    return layout


def logged(name: str):
    """Run a command: MemfsError -> its exit code, and one line in data/logs/manage-data.log either way."""

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(ctx, *args, **kwargs):
            started = time.monotonic()
            outcome, code = "ok", 0
            try:
                summary = fn(ctx, *args, **kwargs)
                outcome = f"ok {summary or ''}".strip()
                code = ctx.obj.get("exit_code", 0)
                if code:
                    outcome = f"problems (exit {code}) {summary or ''}".strip()
            except (MemfsError, OSError, sqlite3.Error) as e:
                e = e if isinstance(e, MemfsError) else io_error(e)
                outcome, code = f"failed (exit {e.exit_code}): {e}", e.exit_code
                raise CommandError(e) from e
            finally:
                _append_log(ctx.obj["root"], f"{name} {outcome} ({time.monotonic() - started:.2f}s)")
            if code:
                ctx.exit(code)
        return click.pass_context(wrapper)
    return decorate


def _append_log(root: Path, line: str) -> None:
    logs = Layout(root).logs
    if not logs.is_dir():
        return  # no store there: nothing to log into, and the error already said so
    log.propagate = False
    with log_to_file(logs / "manage-data.log", log, "%(asctime)s %(message)s", 1 << 20, 5):
        log.info(line)


def retention_options(fn):
    """--keep-daily/--keep-weekly/--keep-monthly arrive as one `policy`; --keep-pre-restore as is."""

    @functools.wraps(fn)
    def wrapper(*args, keep_daily, keep_weekly, keep_monthly, **kwargs):
        return fn(*args, policy=Policy(keep_daily, keep_weekly, keep_monthly), **kwargs)

    for option in reversed([
        click.option("--keep-daily", default=7, show_default=True, help="Keep the newest backup of this many days."),
        click.option("--keep-weekly", default=4, show_default=True, help="… of this many ISO weeks."),
        click.option("--keep-monthly", default=12, show_default=True, help="… of this many months."),
        click.option("--keep-pre-restore", default=3, show_default=True, help="Pre-restore snapshots to keep."),
    ]):
        wrapper = option(wrapper)
    return wrapper


def backup_dir_option(fn):
    return click.option("--backup-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MEMFS_BACKUP_DIR",
                        help="Where backups live (default ROOT/backups; env MEMFS_BACKUP_DIR).")(fn)


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        click.echo(text)


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@click.group()
@root_option
@click.pass_context
def cli(ctx, root: Path, url: str | None, token: str | None) -> None:
    """Back up, restore and validate a memfs store.

    Cron: `0 2 * * * cd /path/to/memfs && .venv/bin/python manage_data.py backup --quiet`.
    Exit codes: 0 ok, 1 problems found, 2 usage, 3 failed (I/O, corrupt backup), 4 busy.
    """
    ctx.obj = {"root": root, "url": url, "token": token}


@cli.command()
@click.option("--compression", type=click.Choice(["gz", "zst"]), default="gz", show_default=True)
@backup_dir_option
@retention_options
@click.option("--no-prune", is_flag=True, help="Do not apply retention after the backup.")
@click.option("--quiet", is_flag=True, help="Print nothing on success (for cron); errors still go to stderr.")
@json_option
@logged("backup")
def backup(ctx, compression, backup_dir, policy, keep_pre_restore, no_prune,
           quiet, as_json):
    """Archive data/ (not logs/) with a manifest and an .md5, then apply retention."""
    layout = _layout(ctx)
    remote, lock = _remote_or_lock(ctx, layout)
    if remote is not None:
        _no_backup_dir_remotely(backup_dir)
        out = remote.backup(compression=compression, prune=not no_prune, keep_daily=policy.daily,
                            keep_weekly=policy.weekly, keep_monthly=policy.monthly, keep_pre_restore=keep_pre_restore)
    else:
        try:
            finish_interrupted_restore(layout)
            with MemoryStore.open(layout.root, lock=lock) as store, \
                    progress_bar(not quiet and not as_json) as progress:
                made, pruned = take_backup(store, backup_dir=backup_dir, compression=compression, policy=policy,
                                           keep_pre_restore=keep_pre_restore, prune=not no_prune, progress=progress)
        finally:
            lock.release()
        out = backup_summary(made, pruned)
    if as_json:
        emit_json(out)
    else:
        _say(quiet, f"backup {out['backup']} ({_human(out['size'])}), checksum {Path(out['md5']).name}")
        for p in out["pruned"]:
            _say(quiet, f"pruned {Path(p).name}")
    return f"{out['name']} {out['size']}B pruned={len(out['pruned'])}"


def _remote_or_lock(ctx, layout: Layout) -> tuple[RemoteStore | None, StoreLock | None]:
    """Go through the running server if there is one (DESIGN.md §4); else take the lock here."""
    remote = owner_client(ctx)
    if remote is not None:
        return remote, None
    try:
        return None, StoreLock(layout.lock_file).acquire()
    except StoreBusyError:
        remote = owner_client(ctx, busy=True)
        if remote is None:
            raise
        return remote, None


def _no_backup_dir_remotely(backup_dir) -> None:
    if backup_dir is not None:
        raise click.UsageError("--backup-dir cannot be used while a server owns the store: it backs up to "
                               "its own backups/ directory")


@cli.command("list")
@backup_dir_option
@retention_options
@click.option("--verify", is_flag=True, help="Re-read every archive and compare it with its .md5.")
@json_option
@logged("list")
def list_(ctx, backup_dir, policy, keep_pre_restore, verify, as_json):
    """Show backups: created (UTC), size, retention reasons, checksum state."""
    layout = _layout(ctx)
    backup_dir = backup_dir or layout.backups
    plan = plan_prune(backup_dir, policy, keep_pre_restore)
    _, leftovers = list_backups(backup_dir)
    rows = [{"name": i.backup.name, "path": str(i.backup.path), "kind": i.backup.kind,
             "created": i.backup.created.strftime("%Y-%m-%dT%H:%M:%SZ"), "size": i.backup.size,
             "compression": i.backup.compression, "checksum": i.backup.checksum_state(verify),
             "retention": list(i.decision.reasons) if i.decision.keep else ["would be pruned"]} for i in plan]
    if as_json:
        emit_json({"backups": rows, "incomplete": [str(p) for p in leftovers]})
    else:
        if not rows:
            click.echo(f"no backups in {backup_dir}")
        for r in rows:
            click.echo(f"{r['name']:<44} {r['created']}  {_human(r['size']):>9}  {r['checksum']:<10} "
                       f"{', '.join(r['retention'])}")
        for p in leftovers:
            click.echo(f"{p.name}  INCOMPLETE (left by an interrupted backup; the next backup removes it)")
    bad = [r for r in rows if r["checksum"] in ("mismatch", "missing")]
    if bad:
        ctx.obj["exit_code"] = EXIT_PROBLEMS
    return f"{len(rows)} backups, {len(bad)} bad"


def _resolve(layout: Layout, backup_dir: Path, which: str) -> BackupFile:
    backups, _ = list_backups(backup_dir)
    if which == "latest":
        regular = [b for b in backups if b.kind == "backup"]
        if not regular:
            raise NotFoundError(f"no backups in {backup_dir}; `manage_data.py backup` makes one")
        return regular[0]
    path = Path(which)
    if not path.exists() and (backup_dir / which).exists():
        path = backup_dir / which
    b = BackupFile.parse(path)
    if not path.is_file() or b is None:
        raise NotFoundError(f"{which}: not a backup file (expected memory_backup_YYYYMMDD_HHMMSS.tar.gz or "
                            f".tar.zst); `manage_data.py list` shows what there is")
    return b


@cli.command()
@click.argument("which", metavar="FILE|latest")
@backup_dir_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Verify the archive completely, change nothing.")
@click.option("--no-verify", is_flag=True, help="Restore even without a matching .md5 (the manifest is still checked).")
@json_option
@logged("restore")
def restore(ctx, which, backup_dir, yes, dry_run, no_verify, as_json):
    """Restore a backup over the current data, safely.

    The archive is verified completely before anything changes; the current data is saved as a
    pre-restore backup; the swap is atomic per directory and finished at next start if interrupted.
    """
    layout = _layout(ctx)
    backup_dir = backup_dir or layout.backups
    archive = _resolve(layout, backup_dir, which)
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("not asking on a non-interactive run: add --yes to restore")
        click.confirm(f"Replace the data in {layout.root} with {archive.name}? (the current data is saved "
                      "as a pre-restore backup first)", abort=True)
    remote, lock = (None, StoreLock(layout.lock_file).acquire()) if dry_run else _remote_or_lock(ctx, layout)
    if remote is not None:
        if archive.path.parent.resolve() != layout.backups.resolve():
            raise click.UsageError("while a server owns the store it restores only from its backups/ directory")
        result = remote.restore(archive.name, verify=not no_verify)
    else:
        try:
            finish_interrupted_restore(layout)
            if dry_run:
                return _dry_run(layout, archive, no_verify, as_json)
            with progress_bar(not as_json) as progress:
                done = restore_backup(layout, archive, verify_md5=not no_verify, progress=progress)
            with MemoryStore.open(layout.root, lock=lock) as store:
                embedded = store.reconcile(verify_vectors=True).embedded
            result = restore_summary(done, embedded, run_validation(layout).problems)
        finally:
            lock.release()
    if as_json:
        emit_json(result)
    else:
        click.echo(f"restored {archive.name}: {result['memory_count']} memories, {result['embedded']} re-embedded")
        if result["pre_restore"]:
            click.echo(f"the data it replaced is saved as {result['pre_restore']}")
        for p in result["problems"]:
            click.echo(f"problem after restore: {p['check']}: {p['path']}: {p['message']}", err=True)
    if result["problems"]:
        ctx.obj["exit_code"] = EXIT_PROBLEMS
    return f"{archive.name} embedded={result['embedded']}"


def _dry_run(layout: Layout, archive: BackupFile, no_verify: bool, as_json: bool) -> str:
    """Verify the archive completely in a scratch staging directory, then remove it: nothing changes."""
    staging = layout.data / f".restore-dry-run-{time.time_ns()}"
    try:
        manifest = verify_and_extract(archive, staging, verify_md5=not no_verify)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    result = {"archive": str(archive.path), "verified": True, "memory_count": manifest.get("memory_count"),
              "created_at": manifest.get("created_at"), "changed": False}
    if as_json:
        emit_json(result)
    else:
        click.echo(f"{archive.name} verified: {result['memory_count']} memories from {result['created_at']}; "
                   "nothing changed (dry run)")
    return f"dry-run {archive.name}"


@cli.command()
@click.option("--backups", "check_backups", is_flag=True, help="Also verify every backup's checksum.")
@backup_dir_option
@click.option("--fix", is_flag=True, help="Repair what is derived (indexes, embeddings); never memory files.")
@json_option
@logged("validate")
def validate(ctx, check_backups, backup_dir, fix, as_json):
    """Check everything and report every problem; exit 1 if any."""
    layout = _layout(ctx)
    remote, lock = _remote_or_lock(ctx, layout)
    if remote is not None:
        _no_backup_dir_remotely(backup_dir)
        out = remote.validate(check_backups)
        if fix and not out["ok"]:
            remote.reconcile()
            after = remote.validate(check_backups)
            out = {**after, "fixed": len(out["problems"]) - len(after["problems"])}
    else:
        try:
            with progress_bar(not as_json) as progress:
                report = run_validation(layout, backups=check_backups, backup_dir=backup_dir, progress=progress)
            fixed = 0
            if fix and any(p.fixable for p in report.problems):
                layout.create()
                clean_leftovers(layout, backup_dir)
                with MemoryStore.open(layout.root, lock=lock) as store:
                    store.reconcile(verify_vectors=True)
                before = len(report.problems)
                report = run_validation(layout, backups=check_backups, backup_dir=backup_dir)
                fixed = before - len(report.problems)
        finally:
            lock.release()
        out = {**report.to_dict(), "fixed": fixed}
    if as_json:
        emit_json(out)
    else:
        for p in out["problems"]:
            click.echo(f"{p['check']}: {p['path']}: {p['message']}")
        if out.get("fixed"):
            click.echo(f"fixed {out['fixed']} problem(s)")
        click.echo(f"{out['memory_files']} memory files checked in {out['seconds']:.2f}s: "
                   + ("no problems" if out["ok"] else f"{len(out['problems'])} problem(s)"))
    if not out["ok"]:
        ctx.obj["exit_code"] = EXIT_PROBLEMS
    return f"{len(out['problems'])} problems fixed={out.get('fixed', 0)}"


@cli.command()
@backup_dir_option
@retention_options
@click.option("--dry-run", is_flag=True, help="Show what would be kept and deleted, and why; delete nothing.")
@json_option
@logged("prune")
def prune(ctx, backup_dir, policy, keep_pre_restore, dry_run, as_json):
    """Apply retention (7 daily / 4 weekly / 12 monthly by default; UTC days)."""
    layout = _layout(ctx)
    remote, lock = _remote_or_lock(ctx, layout)
    if remote is not None:
        _no_backup_dir_remotely(backup_dir)
        out = remote.prune(dry_run=dry_run, keep_daily=policy.daily, keep_weekly=policy.weekly,
                           keep_monthly=policy.monthly, keep_pre_restore=keep_pre_restore)
    else:
        try:
            plan, _ = prune_backups(backup_dir or layout.backups, policy, keep_pre_restore, dry_run)
        finally:
            lock.release()
        out = prune_summary(plan, dry_run)
    if as_json:
        emit_json(out)
    else:
        for i in out["backups"]:
            verdict = "keep  " if i["keep"] else ("delete" if dry_run else "deleted")
            click.echo(f"{verdict} {i['name']}  {', '.join(i['reasons'])}")
    return f"deleted={sum(not i['keep'] for i in out['backups'])} dry_run={dry_run}"


def main() -> None:
    cli(prog_name="manage_data.py")
