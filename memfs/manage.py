"""`manage_data.py`: backups, retention, restore and validation for operators and cron.

A thin click layer over the operations (memfs.ops): through the store's owner when one runs, else in
this process. Every run appends one line to data/logs/manage-data.log saying truthfully how it ended.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click

from .cmdline import (CommandError, command, problems_found, emit_json, human_size, json_option, printable, progress_bar, settings,
                      store_options, with_operations)
from .errors import StoreNotInitializedError
from .ops import Retention

AUDIT_LOG = "manage-data.log"


def retention_options(fn):
    """--keep-daily/--keep-weekly/--keep-monthly/--keep-pre-restore arrive as one `retention`."""

    @functools.wraps(fn)
    def wrapper(*args, keep_daily, keep_weekly, keep_monthly, keep_pre_restore, keep_pre_restore_days, **kwargs):
        return fn(*args, retention=Retention(keep_daily, keep_weekly, keep_monthly, keep_pre_restore,
                                             keep_pre_restore_days), **kwargs)

    for option in reversed([
        click.option("--keep-daily", default=7, show_default=True, type=click.IntRange(0),
                     help="Keep the newest backup of this many days."),
        click.option("--keep-weekly", default=4, show_default=True, type=click.IntRange(0), help="… of this many ISO weeks."),
        click.option("--keep-monthly", default=12, show_default=True, type=click.IntRange(0), help="… of this many months."),
        click.option("--keep-pre-restore", default=3, show_default=True, type=click.IntRange(0),
                     help="Pre-restore snapshots to keep."),
        click.option("--keep-pre-restore-days", default=7, show_default=True, type=click.IntRange(0),
                     help="A pre-restore snapshot younger than this many days is never pruned."),
    ]):
        wrapper = option(wrapper)
    return wrapper


def backup_dir_option(fn):
    return click.option("--backup-dir", type=click.Path(file_okay=False, path_type=Path), envvar="MEMFS_BACKUP_DIR",
                        help="Where backups live (default ROOT/backups; env MEMFS_BACKUP_DIR).")(fn)


def _dir(backup_dir: Path | None) -> str | None:
    return str(backup_dir.resolve()) if backup_dir is not None else None


def _dest(dest: str | None) -> str | None:
    """An rclone remote (`name:path`) as given; a plain folder made absolute, as the owner must see it."""
    return dest if dest is None or ":" in dest.split("/", 1)[0] else str(Path(dest).resolve())


def _file(path: Path | None) -> str | None:
    """A file named on the command line, as the owner (whose working directory is /) can open it."""
    return str(path.resolve()) if path is not None else None


def identity_option(fn):
    return click.option("--identity", "identity", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                        envvar="MEMFS_AGE_IDENTITY",
                        help="age identity file (AGE-SECRET-KEY-1… or an OpenSSH private key) that opens encrypted "
                             "backups (env MEMFS_AGE_IDENTITY). Never give a key on the command line.")(fn)


def passphrase_option(fn):
    return click.option("--passphrase-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                        envvar="MEMFS_BACKUP_PASSPHRASE_FILE",
                        help="A file whose first line is the backup passphrase (env MEMFS_BACKUP_PASSPHRASE_FILE).")(fn)


def _say(quiet: bool, text: str) -> None:
    if not quiet:
        click.echo(text)


def _problems_exit() -> None:
    problems_found()


@click.group()
@store_options
@click.pass_context
def cli(ctx, root: Path, url: str | None, token: str | None, no_daemon: bool) -> None:
    """Back up, restore and validate a memfs store.

    Cron: `0 2 * * * cd /path/to/memfs && .venv/bin/python manage_data.py backup --quiet`.
    Exit codes: 0 ok, 1 problems found, 2 usage, 3 failed (I/O, corrupt backup), 4 busy.
    """
    ctx.obj = settings(root, url, token, no_daemon)
    if ctx.obj.url is None and not ctx.obj.layout.data.is_dir() and ctx.invoked_subcommand is not None:
        # CommandError: the error's own exit code, 3, as `memfs` gives (#19: this said 1, "problems found")
        raise CommandError(StoreNotInitializedError(
            f"no memfs store at {Path(root)}; run `memfs init` there first, or point --root / MEMFS_ROOT "
            "at the store"))


@cli.command()
@click.option("--compression", type=click.Choice(["gz", "zst"]), default="gz", show_default=True)
@backup_dir_option
@retention_options
@click.option("--no-prune", is_flag=True, help="Do not apply retention after the backup.")
@click.option("--encrypt", is_flag=True, help="Encrypt in the age format (the `age` tool alone can open it), to "
                                              "--recipient keys or with --passphrase-file.")
@click.option("--recipient", "recipients", multiple=True, metavar="KEY|FILE",
              help="An age1… or ssh public key, or a file of them (repeatable; env MEMFS_BACKUP_RECIPIENTS, "
                   "space-separated).", envvar="MEMFS_BACKUP_RECIPIENTS")
@passphrase_option
@click.option("--copy-to", metavar="DEST", envvar="MEMFS_BACKUP_COPY_TO",
              help="Then copy the backups retention keeps to an rclone remote or folder (s3:bucket/memfs, "
                   "sftp:host/path, /mnt/disk/memfs), verified by checksum, the same retention applied there.")
@click.option("--quiet", is_flag=True, help="Print nothing on success (for cron); errors still go to stderr.")
@json_option
@command(outcome_log=AUDIT_LOG)
@with_operations()
def backup(ops, compression, backup_dir, retention, no_prune, encrypt, recipients, passphrase_file, copy_to, quiet,
           as_json):
    """Archive data/ (not logs/) with a manifest and an .md5, then apply retention.

    A failed off-site copy (--copy-to) keeps the local backup, says why, and exits 1.
    """
    if encrypt and not recipients and passphrase_file is None:
        raise click.UsageError("--encrypt needs --recipient KEY|FILE or --passphrase-file FILE")
    if (recipients or passphrase_file) and not encrypt:
        raise click.UsageError("--recipient/--passphrase-file encrypt the backup: add --encrypt to say so")
    keys = [r if r.startswith(("age1", "ssh-")) else str(Path(r).resolve()) for r in recipients]
    with progress_bar(not quiet and not as_json) as progress:
        out = ops.backup(compression=compression, prune=not no_prune, retention=retention, backup_dir=_dir(backup_dir),
                         recipients=keys, passphrase_file=_file(passphrase_file), copy_to=_dest(copy_to), progress=progress)
    if as_json:
        emit_json(out.to_dict())
    else:
        lock = " (encrypted)" if out.encrypted else ""
        _say(quiet, f"backup {out.backup}{lock} ({human_size(out.size)}), checksum {Path(out.md5).name}")
        for note in out.notes:  # one line per pruned backup, a pre-restore snapshot named as such
            _say(quiet, printable(note))
        if out.offsite is not None:
            _print_offsite(out.offsite, quiet)
    if out.offsite is not None and not out.offsite.ok:
        _problems_exit()
    off = "" if out.offsite is None else f" offsite={'ok' if out.offsite.ok else 'FAILED: ' + '; '.join(out.offsite.errors)}"
    return f"{out.name} {out.size}B pruned={'; '.join(out.notes) or 0}{off}"


def _print_offsite(r, quiet: bool) -> None:
    for name in r.copied:
        _say(quiet, f"copied {name} to {printable(r.dest)} (verified)")
    for name in r.deleted:
        _say(quiet, f"pruned {name} from {printable(r.dest)}")
    for error in r.errors:
        click.echo(f"off-site copy failed: {printable(error)} (the local backup is kept)", err=True)


@cli.command("list")
@backup_dir_option
@retention_options
@click.option("--verify", is_flag=True, help="Prove each backup restorable: read it whole, decompress and check "
                                             "every member against its manifest, writing nothing.")
@click.option("--quick", is_flag=True, help="With --verify: compare each archive with its .md5 only.")
@identity_option
@passphrase_option
@json_option
@command(outcome_log=AUDIT_LOG)
@with_operations()
def list_(ops, backup_dir, retention, verify, quick, identity, passphrase_file, as_json):
    """Show backups: created (UTC), size, status, why retention keeps each. Exit 1 if one is bad."""
    if quick and not verify:
        raise click.UsageError("--quick goes with --verify")
    out = ops.list_backups(retention=retention, verify=("quick" if quick else "deep") if verify else None,
                           identity_file=_file(identity), passphrase_file=_file(passphrase_file),
                           backup_dir=_dir(backup_dir))
    if as_json:
        emit_json(out.to_dict())
    else:
        click.echo(f"backups in {out.backup_dir}; {out.policy}")
        if not out.backups:
            click.echo("no backups yet")
        else:
            click.echo(f"{'NAME':<48} {'CREATED (UTC)':<20} {'SIZE':>9}  {'STATUS':<12} KEPT BECAUSE")
        for r in out.backups:
            name = printable(r.name) + (" [age]" if r.encrypted else "")
            click.echo(f"{name:<48} {r.created:<20} {human_size(r.size):>9}  {r.status:<12} {', '.join(r.retention)}")
            if r.reason:
                click.echo(f"    {printable(r.reason)}")
        for s in out.strays:
            click.echo(f"{printable(s.name)}  {printable(s.reason)}; left alone")
        for name in out.incomplete:
            click.echo(f"{printable(name)}  INCOMPLETE (left by an interrupted backup; the next backup removes it)")
        shown = {r.status for r in out.backups}
        click.echo("status: " + "; ".join(f"{k}: {v}" for k, v in out.statuses.items() if k in shown))
    if out.bad:
        _problems_exit()
    return f"{len(out.backups)} backups, {len(out.bad)} bad, {len(out.strays)} strays"


@cli.command()
@click.argument("which", metavar="FILE|latest")
@backup_dir_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Verify the archive completely, change nothing.")
@click.option("--no-verify", is_flag=True, help="Restore even without a matching .md5 (the manifest is still checked).")
@identity_option
@passphrase_option
@json_option
@command(outcome_log=AUDIT_LOG)
def restore(which, backup_dir, yes, dry_run, no_verify, identity, passphrase_file, as_json):
    """Restore a backup over the current data, safely.

    The archive is verified completely before anything changes; the current data is saved as a
    pre-restore backup; the swap is atomic per directory and finished at next start if interrupted.
    """
    root = click.get_current_context().obj.layout.root
    if not dry_run and not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("not asking on a non-interactive run: add --yes to restore")
        click.confirm(f"Replace the data in {root} with {which}? (the current data is saved as a pre-restore "
                      "backup first)", abort=True)
    return _restore(which, backup_dir, dry_run, no_verify, identity, passphrase_file, as_json)


# Disaster recovery: data/memories/ itself may be gone, the indexes damaged beyond opening.
@with_operations(create=True, open_store=False)
def _restore(ops, which, backup_dir, dry_run, no_verify, identity, passphrase_file, as_json):
    archive = str(Path(which).resolve()) if "/" in which or Path(which).exists() else which
    with progress_bar(not as_json) as progress:
        result = ops.restore(archive, verify=not no_verify, dry_run=dry_run, backup_dir=_dir(backup_dir),
                             identity_file=_file(identity), passphrase_file=_file(passphrase_file), progress=progress)
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
@click.option("--backups", "check_backups", is_flag=True,
              help="Also prove every backup restorable (each read whole, as `list --verify` does).")
@backup_dir_option
@identity_option
@passphrase_option
@click.option("--fix", is_flag=True, help="Repair what is derived (indexes, embeddings); never memory files.")
@json_option
@command(outcome_log=AUDIT_LOG)
@with_operations(level=False, open_store=False)
def validate(ops, check_backups, backup_dir, identity, passphrase_file, fix, as_json):
    """Check everything and report every problem; exit 1 if any. Without --fix, nothing is changed."""
    with progress_bar(not as_json) as progress:
        out = ops.validate(backups=check_backups, fix=fix, backup_dir=_dir(backup_dir), identity_file=_file(identity),
                           passphrase_file=_file(passphrase_file), progress=progress)
    if as_json:
        emit_json(out.to_dict())
    else:
        for p in out.problems:
            click.echo(f"{p.check}: {printable(p.path)}: {printable(p.message)}")
        if out.fixed:
            click.echo(f"fixed {out.fixed} problem(s)")
        if out.pending:
            click.echo(f"pending: {out.pending} memories are searchable by keyword and wait for their vectors "
                       "(the owner is embedding them; not a problem)")
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


@cli.group()
def offsite() -> None:
    """Off-site copies of the backups through rclone (any remote: S3, B2, SFTP, a mounted disk)."""


@offsite.command("sync")
@click.argument("dest")
@backup_dir_option
@retention_options
@click.option("--no-prune", is_flag=True, help="Do not delete remote copies that retention no longer keeps.")
@click.option("--dry-run", is_flag=True, help="Say what would be copied and deleted; change nothing.")
@json_option
@command(outcome_log=AUDIT_LOG)
@with_operations()
def offsite_sync(ops, dest, backup_dir, retention, no_prune, dry_run, as_json):
    """Give DEST a checksum-verified copy of every backup retention keeps, and apply the same retention
    there. Exit 1 if a copy failed (what was copied stays)."""
    out = ops.offsite_sync(_dest(dest), retention=retention, prune=not no_prune, dry_run=dry_run, backup_dir=_dir(backup_dir))
    if as_json:
        emit_json(out.to_dict())
    else:
        _print_offsite(out, False)
        click.echo(f"{printable(out.dest)}: {len(out.copied)} copied, {len(out.already_there)} already there, "
                   f"{len(out.deleted)} pruned" + (" (dry run)" if out.dry_run else ""))
    if not out.ok:
        _problems_exit()
    return f"{dest} copied={len(out.copied)} deleted={len(out.deleted)} ok={out.ok}"


def main() -> None:
    cli(prog_name="manage_data.py")
