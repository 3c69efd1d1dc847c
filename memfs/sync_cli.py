"""`memfs sync` and `memfs conflicts`: parse, call one operation (memfs.ops), print (docs/sync.md).

    memfs sync DEST [--dry-run] [--encrypt --recipient KEY --identity FILE | --passphrase-file FILE] [--json]
    memfs sync compact DEST [--dry-run] [the same key options] [--json]
    memfs sync status [--json]
    memfs conflicts [list] | show ID | resolve ID --keep winner|loser | --merge-file FILE

Exit codes (cron-safe): 0 synced; 1 synced, but conflicts wait in the inbox; 3 failed (unreachable
remote, a refused object, a wrong key: nothing changed); 4 another sync is running.
"""

from __future__ import annotations

from pathlib import Path

import click

from .cmdline import command, emit_json, json_option, printable, problems_found, progress_bar, with_operations


def _dest(dest: str) -> str:
    """An rclone remote (`name:path`) as given; a folder made absolute, as the owner must see it."""
    head = dest.split("/", 1)[0]
    return dest if ":" in head and len(head.split(":")[0]) > 1 else str(Path(dest).resolve())


def _file(path: Path | None) -> str | None:
    return str(path.resolve()) if path is not None else None


class _SyncGroup(click.Group):
    """`memfs sync DEST` runs a sync; `memfs sync status|compact` are subcommands."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_SyncGroup)
def sync() -> None:
    """Sync this replica with a remote: `memfs sync DEST` (a folder or an rclone remote such as
    s3:bucket/memfs or sftp-host:memfs); `memfs sync compact DEST` folds this replica's old batches
    there into one. See docs/sync.md."""


def remote_options(fn):
    """DEST's key and rclone options (`--encrypt --recipient/--identity | --passphrase-file`,
    `--rclone-config`), checked and handed to the command as one `remote` dict of the operation's
    keyword arguments. Shared by `memfs sync DEST` and `memfs sync compact DEST`."""
    import functools

    @click.option("--encrypt", is_flag=True, help="End-to-end encryption (age): to --recipient keys (read back "
                                                  "with --identity), or with --passphrase-file.")
    @click.option("--recipient", "recipients", multiple=True, metavar="KEY|FILE", envvar="MEMFS_SYNC_RECIPIENTS",
                  help="An age1… or ssh public key, or a file of them (repeatable; env MEMFS_SYNC_RECIPIENTS).")
    @click.option("--identity", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                  envvar="MEMFS_SYNC_IDENTITY", help="age identity file that opens the remote's objects.")
    @click.option("--passphrase-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                  envvar="MEMFS_SYNC_PASSPHRASE_FILE", help="A file whose first line is the remote's passphrase.")
    @click.option("--rclone-config", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                  envvar="RCLONE_CONFIG", help="rclone's config file (else rclone's own default).")
    @functools.wraps(fn)
    def wrapper(*args, encrypt, recipients, identity, passphrase_file, rclone_config, **kwargs):
        if encrypt != bool(recipients or passphrase_file):
            raise click.UsageError("--encrypt needs --recipient KEY (with --identity FILE) or --passphrase-file "
                                   "FILE, and those need --encrypt")
        keys = [r if r.startswith(("age1", "ssh-")) else str(Path(r).resolve()) for r in recipients]
        return fn(*args, remote=dict(recipients=keys, identity_file=_file(identity),
                                     passphrase_file=_file(passphrase_file), rclone_config=_file(rclone_config)),
                  **kwargs)
    return wrapper


@sync.command("run")
@click.argument("dest")
@click.option("--dry-run", is_flag=True, help="Say what would move; change nothing here or there.")
@remote_options
@click.option("--quiet", is_flag=True, help="Print nothing on success (for cron).")
@json_option
@command()
@with_operations()
def run(ops, dest, dry_run, remote, quiet, as_json):
    """Push this replica's changes to DEST and pull everyone else's."""
    with progress_bar(not quiet and not as_json) as progress:
        out = ops.sync(_dest(dest), dry_run=dry_run, progress=progress, **remote)
    if as_json:
        emit_json(out.to_dict())
    elif dry_run:
        click.echo(f"would push {len(out.would_push)} change(s) and pull {out.would_pull} from {len(out.peers)} "
                   f"peer(s) at {out.remote}")
        for mem_id in out.would_push[:50]:
            click.echo(f"  push {mem_id}")
    elif not quiet:
        click.echo(f"synced with {out.remote}: pushed {out.pushed}, pulled {out.pulled} ({out.applied} applied, "
                   f"{out.vectors_reused} vectors reused, {out.embedded} embedded), peers {len(out.peers)}, "
                   f"{out.seconds:.1f}s")
    if out.conflicts_open:
        click.echo(f"{out.conflicts_open} conflict(s) wait in the inbox: `memfs conflicts list`", err=True)
        problems_found()


@sync.command("compact")
@click.argument("dest")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; change nothing here or there.")
@remote_options
@click.option("--quiet", is_flag=True, help="Print nothing on success (for cron).")
@json_option
@command()
@with_operations()
def compact(ops, dest, dry_run, remote, quiet, as_json):
    """Fold this replica's old change batches on DEST into one base object, then delete them.

    Only this replica's own objects are touched, and none is deleted before the base that covers it
    is on the remote and reads back verified, so it is safe to run while other replicas sync: one whose
    next object is gone reads the base instead. Exit 0 done, 3 failed (nothing lost), 4 a sync of
    this store is running."""
    out = ops.sync_compact(_dest(dest), dry_run=dry_run, **remote)
    if as_json:
        emit_json(out.to_dict())
    elif not quiet:
        verb = "would remove" if dry_run else "removed"
        click.echo(f"compacted this replica's objects at {out.remote}: {verb} {out.objects_removed} of "
                   f"{out.objects_before}, {out.bytes_before} bytes before, {out.bytes_after} after"
                   + (f"; base {out.base}" if out.base else "") + f", {out.seconds:.1f}s")


@sync.command("status")
@json_option
@command()
@with_operations()
def status(ops, as_json):
    """Peers seen, last push/pull, lag, pending changes, conflicts and the last error, per remote."""
    st = ops.sync_status()
    if as_json:
        emit_json(st.to_dict())
        return
    click.echo(f"replica {st.replica}; pending changes {st.pending_changes}; conflicts {st.conflicts}")
    for r in st.remotes:
        click.echo(f"remote {printable(r['remote'])}: last push {_when(r['last_push'])}, last pull "
                   f"{_when(r['last_pull'])}, queued {r['queued_batches']}"
                   + (f", last error: {printable(r['last_error'])}" if r.get("last_error") else ""))
        for p in r["peers"]:
            lag = f"{p['lag_seconds']:.0f}s" if p.get("lag_seconds") is not None else "?"
            click.echo(f"  peer {p['replica']}: read up to #{p['seq']}, lag {lag}")


def _when(t: float | None) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t)) if t else "never"


@click.group(invoke_without_command=True)
@click.pass_context
def conflicts(ctx) -> None:
    """The conflict inbox: versions that lost a concurrent edit, kept until you resolve them."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(list_)


@conflicts.command("list")
@json_option
@command()
@with_operations()
def list_(ops, as_json=False):
    """Every open conflict."""
    items = ops.conflicts()
    if as_json:
        emit_json(items)
        return
    if not items:
        click.echo("no conflicts")
    for c in items:
        click.echo(f"{c['conflict']}  memory {c.get('memory')}  {_side(c.get('winner'))}  beat  {_side(c.get('loser'))}")


def _side(v: dict | None) -> str:
    if not v:
        return "?"
    if v.get("deleted"):
        return f"[deleted on {v['replica']}]"
    text = " ".join((v.get("doc") or {}).get("content", "").split())
    return f"[{v['replica']}] {printable(text[:40])!r}"


@conflicts.command("show")
@click.argument("conflict_id")
@json_option
@command()
@with_operations()
def show(ops, conflict_id, as_json):
    """Both versions side by side."""
    c = ops.conflict(conflict_id)
    if as_json:
        emit_json(c)
        return
    for label in ("winner", "loser"):
        v = c[label]
        click.echo(f"--- {label} (replica {v['replica']}, stamp {v['hlc']})")
        if v.get("deleted"):
            click.echo("(deleted)")
        else:
            doc = v.get("doc") or {}
            click.echo(f"tags: {', '.join(doc.get('tags', []))}")
            click.echo(printable(doc.get("content", ""), multiline=True))


@conflicts.command("resolve")
@click.argument("conflict_id")
@click.option("--keep", type=click.Choice(["winner", "loser"]), help="Which version stays.")
@click.option("--merge-file", type=click.File("r", encoding="utf-8"), help="Write this content instead (a merge).")
@json_option
@command()
@with_operations()
def resolve(ops, conflict_id, keep, merge_file, as_json):
    """Resolve here; every replica drops it after its next sync."""
    if (keep is None) == (merge_file is None):
        raise click.UsageError("give --keep winner|loser or --merge-file FILE")
    out = ops.resolve_conflict(conflict_id, keep=keep or "merge",
                               content=merge_file.read() if merge_file else None)
    if as_json:
        emit_json(out)
    else:
        click.echo(f"resolved {out['conflict']}: kept the {out['kept']}; it reaches the other replicas with the "
                   "next sync")


def sync_loop_options(fn):
    """`--sync DEST --sync-every 30s` (+ key options) for the owners (`serve`, `watch`): one `sync_loop`
    argument, None or the settings memfs.sync.loop.SyncLoop takes."""
    import functools

    @click.option("--sync", "sync_dest", metavar="DEST", envvar="MEMFS_SYNC",
                  help="Sync with this remote continuously (env MEMFS_SYNC); see `memfs sync`.")
    @click.option("--sync-every", default="30s", show_default=True, envvar="MEMFS_SYNC_EVERY",
                  help="How often to sync with --sync (30s, 5m, 1h).")
    @click.option("--sync-recipient", "sync_recipients", multiple=True, metavar="KEY|FILE",
                  envvar="MEMFS_SYNC_RECIPIENTS", help="Encrypt the sync to this age recipient (with --sync-identity).")
    @click.option("--sync-identity", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                  envvar="MEMFS_SYNC_IDENTITY", help="age identity file for an encrypted sync remote.")
    @click.option("--sync-passphrase-file", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                  envvar="MEMFS_SYNC_PASSPHRASE_FILE", help="Passphrase file for an encrypted sync remote.")
    @functools.wraps(fn)
    def wrapper(*args, sync_dest, sync_every, sync_recipients, sync_identity, sync_passphrase_file, **kwargs):
        from .sync.loop import parse_interval

        loop = None
        if sync_dest:
            try:
                every = parse_interval(sync_every)
            except ValueError as e:
                raise click.BadParameter(str(e), param_hint="--sync-every") from None
            loop = {"dest": _dest(sync_dest), "every": every,
                    "recipients": [r if r.startswith(("age1", "ssh-")) else str(Path(r).resolve())
                                   for r in sync_recipients],
                    "identity_file": _file(sync_identity), "passphrase_file": _file(sync_passphrase_file)}
        return fn(*args, sync_loop=loop, **kwargs)
    return wrapper
