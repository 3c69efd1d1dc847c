"""`memfs status`, `memfs stop`, and the owners: `memfs watch`, `memfs serve`, and `memfs owner` (hidden:
the one a command starts on demand). Parse and print; memfs.lifecycle does the work.
"""

from __future__ import annotations

import signal

import click

from . import __version__
from .cmdline import command, emit_json, json_option
from .errors import StoreBusyError
from .sync_cli import sync_loop_options  # issue #20: --sync DEST --sync-every 30s


@click.command()
@json_option
@command()
def status(as_json) -> None:
    """Whether an owner runs for this store: its pid, how it was started, where it listens, idle time left."""
    from .lifecycle import owner_status

    layout = click.get_current_context().obj.local_only("memfs owner status")
    st, unreachable = owner_status(layout)
    if as_json:
        emit_json({**st.to_dict(), **({"unreachable": True} if unreachable else {})})
    elif not st.running:
        click.echo(f"no owner runs for {layout.root}")
    else:
        where = st.socket or "no socket (a command that owns the store for its own run)"
        if unreachable:
            where += (" (unreachable: the socket is missing or does not answer; a running owner makes it "
                      "again within seconds, and `memfs stop` stops it by its pid)")
        click.echo(f"owner: pid {st.pid}, started by {st.started_by}, since {st.since}\nsocket: {where}")
        if st.url:
            click.echo(f"url:    {st.url}")
        if st.uptime is not None:
            click.echo(f"uptime: {st.uptime:.0f}s; ready: {st.ready}; model loaded: {st.model_loaded}")
        click.echo("idle exit: never" if st.idle_exit is None else
                   f"idle exit: after {st.idle_exit:.0f}s idle ({st.idle_left:.0f}s left)")


@click.command()
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for it to finish its work.")
@command()
def stop(timeout) -> None:
    """Stop the store's owner cleanly: it finishes pending work, closes and releases the store."""
    from .lifecycle import stop_owner

    layout = click.get_current_context().obj.local_only("memfs owner stop")
    record = stop_owner(layout, timeout)
    if record is None:
        click.echo(f"no owner runs for {layout.root}")
    else:
        click.echo(f"stopped the owner (pid {record.get('pid')})")


def _stop_before_owning(*_) -> None:
    click.echo("stopped before it owned the store (the files are untouched; the indexes are derived)", err=True)
    raise SystemExit(0)


def _run_owner(started_by: str, **options) -> None:
    from .lifecycle import run_with_logs, take_over

    layout = click.get_current_context().obj.local_only("memfs " + started_by)
    # A stop asked for while this process still waits to own the store (an on-demand owner handing
    # over, the lock) ends the wait cleanly (exit 0; Owner.start releases a lock it just took, logged);
    # SIGTERM's default action killed it with -15 (the torture test's watch, on a loaded machine).
    # Once the lock is ours, run_owner's handler (daemon.StopRequest) makes it the orderly stop.
    signal.signal(signal.SIGTERM, _stop_before_owning)
    explicit = started_by != "on-demand"
    if explicit:
        made_way = take_over(layout, started_by)
        if made_way is not None:
            click.echo(f"took over from the owner started on demand (pid {made_way.get('pid')})", err=True)

    def ready(owner) -> None:
        where = f"{owner.socket}" + (f" and {owner.url}" if owner.url else "")
        click.echo(f"memfs {__version__} {started_by}: owning {layout.root}, watching {layout.memories}, "
                   f"listening on {where}; Ctrl-C stops", err=True)

    left = run_with_logs(layout, started_by, console=explicit, on_ready=ready, **options)
    click.echo(f"stopped; {left}; lock released", err=True)


def _owner_options(fn):
    fn = click.option("--reconcile-every", default=300.0, show_default=True, metavar="SECONDS",
                      help="Also run a full (stat-only) reconcile this often, to recover events the OS dropped.")(fn)
    return click.option("--polling", is_flag=True, envvar="MEMFS_POLLING",
                        help="Poll instead of inotify: for network filesystems and docker/macOS bind mounts "
                             "(env MEMFS_POLLING).")(fn)


@click.command()
@_owner_options
@sync_loop_options
@command()
def watch(polling, reconcile_every, sync_loop) -> None:
    """Own the store in the foreground and keep search current with the files until Ctrl-C.

    Reconciles once, then follows every change. Other commands go through it (over data/memfs.sock)
    meanwhile. An owner that a command started on demand makes way for it.
    """
    _run_owner("watch", polling=polling, reconcile_every=reconcile_every, lock_timeout=60.0, sync=sync_loop)


@click.command()
@click.option("--host", default=None, envvar="MEMFS_HOST",
              help="Also listen on TCP at this address (env MEMFS_HOST); 127.0.0.1 when --port is given.")
@click.option("--port", default=None, type=int, envvar="MEMFS_PORT", help="TCP port (env MEMFS_PORT).")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback bind without MEMFS_API_TOKEN.")
@click.option("--extended-port", type=int, envvar="MEMFS_EXTENDED_PORT", default=None,
              help="Also answer the extended-memory service's API (/store, /retrieve/KEY, /list, /clear, "
                   "/stats, /backup, /health) on this port, at --host or 127.0.0.1 (env MEMFS_EXTENDED_PORT).")
@_owner_options
@sync_loop_options
@command()
def serve(host, port, insecure, extended_port, polling, reconcile_every, sync_loop) -> None:
    """Own the store and serve the HTTP API (+ live indexer) until SIGTERM / Ctrl-C.

    Always on the Unix socket data/memfs.sock (mode 0600: only this user); on TCP too with
    --host/--port (default port 3000 when only --host is given). Auth on TCP: set MEMFS_API_TOKEN to
    require `Authorization: Bearer <token>` on every route but /health.
    """
    from .daemon import is_loopback

    ctx = click.get_current_context()
    token = ctx.obj.token
    if host is not None or port is not None:
        host = host or "127.0.0.1"
        port = 3000 if port is None else port
        if not is_loopback(host) and not token and not insecure:
            raise click.UsageError(f"refusing to bind {host} without MEMFS_API_TOKEN: anyone who can reach it "
                                   "could read and change every memory. Set a token, or pass --insecure")
    _run_owner("serve", host=host, port=port, token=token, polling=polling, reconcile_every=reconcile_every,
               lock_timeout=60.0, extended_port=extended_port, sync=sync_loop)


@click.command(hidden=True)
@click.option("--idle-exit", type=float, default=None, help="Exit after this many seconds without requests.")
@_owner_options
@command()
def owner(idle_exit, polling, reconcile_every) -> None:
    """The owner a command starts on demand (detached; logs to data/logs/owner.log)."""
    from .lifecycle import lock_free_for_on_demand

    layout = click.get_current_context().obj.local_only("memfs owner")
    if not lock_free_for_on_demand(layout):
        return  # another owner serves (a racing client started it): nothing to do
    try:
        _run_owner("on-demand", idle_exit=idle_exit, polling=polling, reconcile_every=reconcile_every,
                   lock_timeout=0.5)
    except StoreBusyError:
        return  # lost the race to another on-demand owner; the clients find that one


COMMANDS = (status, stop, watch, serve, owner)
