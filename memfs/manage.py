"""`manage_data.py`: backups, retention, restore and validation for operators and cron.

A thin click layer over the operations (memfs.ops): through the store's owner when one runs, else in
this process. Every run appends one line to data/logs/manage-data.log saying truthfully how it ended.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from .cmdline import (command, emit_json, human_size, json_option, printable, progress_bar, settings,
                      store_options, with_operations)
from .errors import EXIT_PROBLEMS, StoreNotInitializedError
from .ops import Retention

AUDIT_LOG = "manage-data.log"


def retention_options(fn):
    """--keep-daily/--keep-weekly/--keep-monthly/--keep-pre-restore arrive as one `retention`."""

    @functools.wraps(fn)
    def wrapper(*args, keep_daily, keep_weekly, keep_monthly, keep_pre_restore, **kwargs):
        return fn(*args, retention=Retention(keep_daily, keep_weekly, keep_monthly, keep_pre_restore), **kwargs)

    for option in reversed([
        click.option("--keep-daily", default=7, show_default=True, type=click.IntRange(0),
                     help="Keep the newest backup of this many days."),
        click.option("--keep-weekly", default=4, show_default=True, type=click.IntRange(0), help="… of this many ISO weeks."),
        click.option("--keep-monthly", default=12, show_default=True, type=click.IntRange(0), help="… of this many months."),
        click.option("--keep-pre-restore", default=3, show_default=True, type=click.IntRange(0),
                     help="Pre-restore snapshots to keep."),
    ]):
        wrapper = option(wrapper)
    return wrapper


def backup_dir_option(fn):
    return click.option("--backup-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MEMFS_BACKUP_DIR",
                        help="Where backups live (default ROOT/backups; env MEMFS_BACKUP_DIR).")(fn)


def _dir(backup_dir: Path | None) -> str | None:
    return str(backup_dir.resolve()) if backup_dir is not None else None


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        click.echo(text)


def _problems_exit() -> None:
    click.get_current_context().obj["exit_code"] = EXIT_PROBLEMS


@click.group()
@store_options
@click.pass_context
def cli(ctx, root: Path, url: str | None, token: str | None, no_daemon: bool) -> None:
    """Back up, restore and validate a memfs store.

    Cron: `0 2 * * * cd /path/to/memfs && .venv/bin/python manage_data.py backup --quiet`.
    Exit codes: 0 ok, 1 problems found, 2 usage, 3 failed (I/O, corrupt backup), 4 busy.
    """
    ctx.obj = settings(root, url, token, no_daemon)
    if ctx.obj["url"] is None and not ctx.obj["layout"].data.is_dir() and ctx.invoked_subcommand is not None:
        raise click.ClickException(str(StoreNotInitializedError(
            f"no memfs store at {Path(root)}; run `memfs init` there first, or point --root / MEMFS_ROOT "
            "at the store")))


@cli.command()
@click.option("--compression", type=click.Choice(["gz", "zst"]), default="gz", show_default=True)
@backup_dir_option
@retention_options
@click.option("--no-prune", is_flag=True, help="Do not apply retention after the backup.")
@click.option("--quiet", is_flag=True, help="Print nothing on success (for cron); errors still go to stderr.")
@json_option
@command(outcome_log=AUDIT_LOG)
@with_operations()
def backup(ops, compression, backup_dir, retention, no_prune, quiet, as_json):
    """Archive data/ (not logs/) with a manifest and an .md5, then apply retention."""
    with progress_bar(not quiet and not as_json) as progress:
        out = ops.backup(compression=compression, prune=not no_prune, retention=retention,
                         backup_dir=_dir(backup_dir), progress=progress)
    if as_json:
        emit_json(out.to_dict())
    else:
        _say(quiet, f"backup {out.backup} ({human_size(out.size)}), checksum {Path(out.md5).name}")
        for name in out.pruned:
            _say(quiet, f"pruned {name}")
    return f"{out.name} {out.size}B pruned={len(out.pruned)}"


@cli.command("list")
@backup_dir_option
@retention_options
@click.option("--verify", is_flag=True, help="Re-read every archive and compare it with its .md5.")
@json_option
@command(outcome_log=AUDIT_LOG)
@with_operations()
def list_(ops, backup_dir, retention, verify, as_json):
    """Show backups: created (UTC), size, retention reasons, checksum state."""
    out = ops.list_backups(retention=retention, verify=verify, backup_dir=_dir(backup_dir))
    if as_json:
        emit_json(out.to_dict())
    else:
        if not out.backups:
            click.echo(f"no backups in {out.backup_dir}")
        for r in out.backups:
            click.echo(f"{printable(r.name):<44} {r.created}  {human_size(r.size):>9}  {r.checksum:<10} "
                       f"{', '.join(r.retention)}")
        for name in out.incomplete:
            click.echo(f"{printable(name)}  INCOMPLETE (left by an interrupted backup; the next backup removes it)")
    bad = [r for r in out.backups if r.checksum in ("mismatch", "missing")]
    if bad:
        _problems_exit()
    return f"{len(out.backups)} backups, {len(bad)} bad"


@cli.command()
@click.argument("which", metavar="FILE|latest")
@backup_dir_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Verify the archive completely, change nothing.")
@click.option("--no-verify", is_flag=True, help="Restore even without a matching .md5 (the manifest is still checked).")
@json_option
@command(outcome_log=AUDIT_LOG)
def restore(which, backup_dir, yes, dry_run, no_verify, as_json):
    """Restore a backup over the current data, safely.

    The archive is verified completely before anything changes; the current data is saved as a
    pre-restore backup; the swap is atomic per directory and finished at next start if interrupted.
    """
    root = click.get_current_context().obj["layout"].root
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("not asking on a non-interactive run: add --yes to restore")
        click.confirm(f"Replace the data in {root} with {which}? (the current data is saved as a pre-restore "
                      "backup first)", abort=True)
    return _restore(which, backup_dir, dry_run, no_verify, as_json)


@with_operations()
def _restore(ops, which, backup_dir, dry_run, no_verify, as_json):
    archive = str(Path(which).resolve()) if "/" in which or Path(which).exists() else which
    with progress_bar(not as_json) as progress:
        result = ops.restore(archive, verify=not no_verify, dry_run=dry_run, backup_dir=_dir(backup_dir),
                             progress=progress)
    if as_json:
        emit_json(result.to_dict())
    elif dry_run:
        click.echo(f"{printable(result.archive)} verified: {result.memory_count} memories from {result.created_at}; "
                   "nothing changed (dry run)")
    else:
        click.echo(f"restored {printable(result.archive)}: {result.memory_count} memories, "
                   f"{result.embedded} re-embedded")
        if result.pre_restore:
            click.echo(f"the data it replaced is saved as {result.pre_restore}")
        for p in result.problems:
            click.echo(f"problem after restore: {p.check}: {printable(p.path)}: {printable(p.message)}", err=True)
    if result.problems:
        _problems_exit()
    return f"{'dry-run ' if dry_run else ''}{result.archive} embedded={result.embedded}"


@cli.command()
@click.option("--backups", "check_backups", is_flag=True, help="Also verify every backup's checksum.")
@backup_dir_option
@click.option("--fix", is_flag=True, help="Repair what is derived (indexes, embeddings); never memory files.")
@json_option
@command(outcome_log=AUDIT_LOG)
@with_operations()
def validate(ops, check_backups, backup_dir, fix, as_json):
    """Check everything and report every problem; exit 1 if any."""
    with progress_bar(not as_json) as progress:
        out = ops.validate(backups=check_backups, fix=fix, backup_dir=_dir(backup_dir), progress=progress)
    if as_json:
        emit_json(out.to_dict())
    else:
        for p in out.problems:
            click.echo(f"{p.check}: {printable(p.path)}: {printable(p.message)}")
        if out.fixed:
            click.echo(f"fixed {out.fixed} problem(s)")
        click.echo(f"{out.memory_files} memory files checked in {out.seconds:.2f}s: "
                   + ("no problems" if out.ok else f"{len(out.problems)} problem(s)"))
    if not out.ok:
        _problems_exit()
    return f"{len(out.problems)} problems fixed={out.fixed}"


@cli.command()
@backup_dir_option
@retention_options
@click.option("--dry-run", is_flag=True, help="Show what would be kept and deleted, and why; delete nothing.")
@json_option
@command(outcome_log=AUDIT_LOG)
@with_operations()
def prune(ops, backup_dir, retention, dry_run, as_json):
    """Apply retention (7 daily / 4 weekly / 12 monthly by default; UTC days)."""
    out = ops.prune(retention=retention, dry_run=dry_run, backup_dir=_dir(backup_dir))
    if as_json:
        emit_json(out.to_dict())
    else:
        for i in out.backups:
            verdict = "keep  " if i.keep else ("delete" if dry_run else "deleted")
            click.echo(f"{verdict} {printable(i.name)}  {', '.join(i.reasons)}")
    return f"deleted={sum(not i.keep for i in out.backups)} dry_run={dry_run}"


def main() -> None:
    cli(prog_name="manage_data.py")
