"""The `memfs` command: a thin click layer over MemoryStore. Parse, call one core method, print.

Configuration is resolved here and only here: option > MEMFS_* environment variable > default.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import logging.handlers
import sqlite3
import sys
from datetime import datetime
from pathlib import Path

import click
import orjson

from . import __version__
from .documents import InvalidDocumentError, parse_time
from .errors import EXIT_PROBLEMS, MemfsError, StoreBusyError
from .filestore import Layout
from .query import MODES, Filters
from .results import ReconcileReport
from .store import MemoryStore

DEFAULT_ROOT = "./memory-system"


class CommandError(click.ClickException):
    """A MemfsError on its way out: message to stderr, the error's own exit code (DESIGN.md §6)."""

    def __init__(self, error: MemfsError):
        super().__init__(str(error))
        self.exit_code = error.exit_code


def fails_cleanly(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except MemfsError as e:
            raise CommandError(e) from e
        except (OSError, sqlite3.Error) as e:
            raise CommandError(io_error(e)) from e
    return wrapper


def io_error(e: OSError | sqlite3.Error) -> MemfsError:
    """An I/O failure as a message a person can act on (exit 3). Writes are atomic: nothing was lost."""
    import errno

    if isinstance(e, sqlite3.Error):
        # SQLite reports a full disk as "database or disk is full" or, opening WAL files, "disk I/O error".
        return MemfsError(f"the catalog (data/indexes/catalog.sqlite) failed: {e}. If the disk is full, free "
                          "some space and try again (nothing was lost); if it is damaged, delete data/indexes/ "
                          "and run `memfs reindex` to rebuild it from the files")

    where = f"{e.filename}: " if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return MemfsError(f"{where}no space left on the device; free some space and try again "
                          "(nothing was lost: files are replaced only once fully written)")
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return MemfsError(f"{where}{e.strerror}; check the permissions of the store's directories")
    return MemfsError(f"{where}{e.strerror or e}")


def emit_json(data) -> None:
    click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS).decode())


def json_option(fn):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def filter_options(fn):
    """--tag/--match/--type/--since/--until, shared by list and search."""
    options = [
        click.option("--tag", "tags", multiple=True, help="Only memories with this tag (repeatable)."),
        click.option("--match", type=click.Choice(["any", "all"]), default="any", show_default=True,
                     help="With several --tag: any of them, or all of them."),
        click.option("--type", "mem_type", help="Only memories of this type."),
        click.option("--since", callback=_time_param, help="Created at or after (2025-01-31 or ISO-8601)."),
        click.option("--until", callback=_time_param, help="Created before (2025-02-01 or ISO-8601)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _time_param(ctx, param, value) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_time(value, param.name)
    except InvalidDocumentError as e:
        raise click.BadParameter(e.reason) from None


def _filters(tags, match, mem_type, since, until) -> Filters:
    return Filters(tags=tuple(tags), match=match, type=mem_type, since=since, until=until)


@contextlib.contextmanager
def progress_bar(enabled: bool):
    """A rich progress bar on stderr when it is a terminal; otherwise a callback that does nothing."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, int] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update


@contextlib.contextmanager
def log_to_file(path: Path, logger: logging.Logger, fmt: str, max_bytes: int, keep: int):
    """Send `logger`'s records to a rotated file while a command runs; a full disk only warns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=max_bytes, backupCount=keep)
    handler.setFormatter(logging.Formatter(fmt))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        try:
            handler.close()
        except OSError as e:  # a full disk must not hide the command's own outcome
            click.echo(f"warning: could not write {path}: {e.strerror}", err=True)


@contextlib.contextmanager
def open_store(ctx: click.Context, *, sync: bool = True):
    """The store for one command: the running server's if there is one, else opened here.

    Opened here, a quick reconcile first picks up edits made by hand since; a server's watcher has
    already done that.
    """
    remote = owner_client(ctx)
    if remote is not None:
        yield remote
        return
    try:
        store = MemoryStore.open(ctx.obj["root"])
    except StoreBusyError:
        remote = owner_client(ctx, busy=True)
        if remote is None:
            raise
        yield remote
        return
    with local_store(store):
        yield _synced(store) if sync else store


@contextlib.contextmanager
def local_store(store: MemoryStore):
    """Run with an opened store: log to data/logs/memfs.log, close it (and its lock) at the end."""
    try:
        with log_to_file(store.layout.logs / "memfs.log", logging.getLogger("memfs"),
                         "%(asctime)s %(levelname)s %(name)s: %(message)s", 5 << 20, 3):
            yield store
    finally:
        store.close()


def owner_client(ctx: click.Context, *, busy: bool = False):
    """A client for the process that owns the store: MEMFS_URL, or (busy) the URL its lock records."""
    from .client import RemoteStore
    from .lock import read_owner

    url = ctx.obj.get("url")
    if url is not None:
        return RemoteStore(url, ctx.obj.get("token"))
    if busy:
        # Trigger: the store is locked by a process that recorded a URL. Why: only a server that
        # answers can take our request; a lock holder that does not (a backup, a watch) means busy.
        url = read_owner(Layout(ctx.obj["root"]).lock_file).get("url")
        remote = RemoteStore(url, ctx.obj.get("token")) if url else None
        return remote if remote is not None and remote.reachable() else None
    return None


def _synced(store: MemoryStore) -> MemoryStore:
    report = store.reconcile(verify_vectors=False)
    if report.invalid:
        click.echo(f"warning: {len(report.invalid)} invalid memory file(s); `memfs reindex` lists them", err=True)
    return store


def root_option(fn):
    """--root, and where a running server is (--url / MEMFS_URL) with its token (MEMFS_API_TOKEN)."""
    fn = click.option("--token", envvar="MEMFS_API_TOKEN", default=None, show_default=False,
                      help="Bearer token for the server (env MEMFS_API_TOKEN).")(fn)
    fn = click.option("--url", envvar="MEMFS_URL", default=None,
                      help="Use the memfs server at this URL (env MEMFS_URL). Without it, a running server "
                           "is found through the store's lock file.")(fn)
    return click.option("--root", envvar="MEMFS_ROOT", default=DEFAULT_ROOT, show_default=True,
                        type=click.Path(file_okay=False, path_type=Path),
                        help="The store's root directory (env MEMFS_ROOT).")(fn)


@click.group()
@click.version_option(__version__, prog_name="memfs")
@root_option
@click.pass_context
def cli(ctx: click.Context, root: Path, url: str | None, token: str | None) -> None:
    """memfs: memories as JSON files you can edit, with semantic and keyword search.

    The files under ROOT/data/memories/ are the truth; everything else under ROOT/data/ is derived
    from them and rebuilt by `memfs reindex`. While `memfs serve` runs, every command goes through it.
    """
    ctx.obj = {"root": root, "url": url, "token": token}


@cli.command()
@json_option
@click.pass_context
@fails_cleanly
def init(ctx, as_json) -> None:
    """Create the store's directory layout (safe to run again)."""
    layout = MemoryStore.init(ctx.obj["root"])
    if as_json:
        emit_json({"root": str(layout.root), "memories": str(layout.memories)})
    else:
        click.echo(f"store ready at {layout.root} (memories in {layout.memories})")


@cli.command()
@click.argument("content", required=False)
@click.option("--file", "file", type=click.File("r", encoding="utf-8"), help="Read the content from a file ('-': stdin).")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--type", "mem_type", default="note", show_default=True, help="The memory's type.")
@click.option("--meta", "meta", multiple=True, metavar="KEY=VALUE", help="A metadata entry (repeatable).")
@click.option("--allow-duplicate", is_flag=True, help="Store it even if the same content is already stored.")
@json_option
@click.pass_context
@fails_cleanly
def add(ctx, content, file, tags, mem_type, meta, allow_duplicate, as_json) -> None:
    """Store a memory. Same content twice gives back the first one, unless --allow-duplicate."""
    if (content is None) == (file is None):
        raise click.UsageError("give the content as an argument or with --file, not both")
    text = content if content is not None else file.read()
    with open_store(ctx) as store:
        result = store.add(text, tags=tags, type=mem_type, metadata=_meta(meta), allow_duplicate=allow_duplicate)
    if as_json:
        emit_json(result.to_dict())
    elif result.duplicate:
        click.echo(f"{result.memory.id}  (already stored, at {result.path}; --allow-duplicate stores a copy)")
    else:
        click.echo(f"{result.memory.id}  {result.path}")


def _meta(pairs) -> dict:
    meta = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--meta")
        meta[key] = value
    return meta


@cli.command()
@click.argument("mem_id", metavar="ID")
@json_option
@click.pass_context
@fails_cleanly
def get(ctx, mem_id, as_json) -> None:
    """Show one memory, as its file says now."""
    with open_store(ctx) as store:
        m = store.get(mem_id)
        path = store.path_of(mem_id)
    if as_json:
        emit_json({"path": str(path), **m.to_dict()})
    else:
        click.echo(f"id:      {m.id}\npath:    {path}\ntype:    {m.type}\ntags:    {', '.join(m.tags)}\n"
                   f"created: {m.created_at.isoformat()}\nupdated: {m.updated_at.isoformat()}\n\n{m.content}")


@cli.command("list")
@filter_options
@click.option("--limit", default=50, show_default=True, help="At most this many.")
@click.option("--offset", default=0, help="Skip this many first.")
@json_option
@click.pass_context
@fails_cleanly
def list_(ctx, tags, match, mem_type, since, until, limit, offset, as_json) -> None:
    """List memories, newest first."""
    with open_store(ctx) as store:
        entries = store.list(_filters(tags, match, mem_type, since, until), limit=limit, offset=offset)
    if as_json:
        emit_json([{"path": e.path, **e.memory.to_dict()} for e in entries])
        return
    for e in entries:
        m = e.memory
        click.echo(f"{m.id}  {m.created_at:%Y-%m-%d}  [{', '.join(m.tags)}]  {_one_line(m.content)}")


def _one_line(text: str, width: int = 70) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@cli.command()
@click.argument("query")
@click.option("-k", "k", default=5, show_default=True, type=click.IntRange(1, 1000), help="How many results.")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True,
              help="semantic (meaning), keyword (exact words, ids like E4417) or hybrid (both, fused).")
@filter_options
@json_option
@click.pass_context
@fails_cleanly
def search(ctx, query, k, mode, tags, match, mem_type, since, until, as_json) -> None:
    """Find the memories that best answer QUERY."""
    with open_store(ctx) as store:
        hits = store.search(query, k=k, mode=mode, filters=_filters(tags, match, mem_type, since, until))
    if as_json:
        emit_json([h.to_dict() for h in hits])
        return
    if not hits:
        click.echo("no matches", err=True)
    for n, h in enumerate(hits, 1):
        click.echo(f"{n:>2}. {h.score:.3f}  {h.memory.id}  [{', '.join(h.memory.tags)}]  {_one_line(h.memory.content)}")


@cli.command()
@click.argument("mem_id", metavar="ID")
@click.option("--content", help="New content.")
@click.option("--file", "file", type=click.File("r", encoding="utf-8"), help="New content from a file ('-': stdin).")
@click.option("--tag", "tags", multiple=True, help="Replace the tags with these (repeatable).")
@click.option("--add-tag", multiple=True, help="Add a tag (repeatable).")
@click.option("--remove-tag", multiple=True, help="Remove a tag (repeatable).")
@click.option("--type", "mem_type", help="New type.")
@click.option("--meta", "meta", multiple=True, metavar="KEY=VALUE", help="Set a metadata entry (repeatable).")
@json_option
@click.pass_context
@fails_cleanly
def update(ctx, mem_id, content, file, tags, add_tag, remove_tag, mem_type, meta, as_json) -> None:
    """Change a memory in place (its file is rewritten atomically)."""
    if content is not None and file is not None:
        raise click.UsageError("give --content or --file, not both")
    text = file.read() if file is not None else content
    with open_store(ctx) as store:
        m = store.update(mem_id, content=text, tags=tags or None, add_tags=add_tag, remove_tags=remove_tag,
                         type=mem_type, metadata=_meta(meta))
    if as_json:
        emit_json(m.to_dict())
    else:
        click.echo(f"{m.id}  updated")


@cli.command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@json_option
@click.pass_context
@fails_cleanly
def rm(ctx, ids, as_json) -> None:
    """Delete memories: their files and their index entries."""
    with open_store(ctx) as store:
        removed = [store.remove(i).id for i in ids]
    if as_json:
        emit_json({"removed": removed})
    else:
        for i in removed:
            click.echo(f"{i}  removed")


@cli.command()
@json_option
@click.pass_context
@fails_cleanly
def reindex(ctx, as_json) -> None:
    """Bring every index level with the files, re-embedding only content never embedded before.

    Also checks that Chroma holds a vector for every memory. Exits 1 if invalid files were found.
    """
    with open_store(ctx, sync=False) as store, progress_bar(not as_json) as progress:
        report = store.reconcile(verify_vectors=True, progress=progress)
    _print_report(report, as_json)
    if report.invalid:
        ctx.exit(EXIT_PROBLEMS)


def _print_report(report: ReconcileReport, as_json: bool) -> None:
    if as_json:
        emit_json(report.to_dict())
        return
    click.echo(f"{report.scanned} files: {report.added} added, {report.updated} updated, {report.moved} moved, "
               f"{report.removed} removed; {report.embedded} embedded, {report.vectors_missing} missing "
               f"vectors restored, {report.vectors_orphaned} orphans removed ({report.seconds:.2f}s)")
    for bad in report.invalid:
        click.echo(f"invalid: {bad.path}: {bad.reason}", err=True)


@cli.command()
@json_option
@click.pass_context
@fails_cleanly
def stats(ctx, as_json) -> None:
    """Counts, sizes, model and last index time."""
    with open_store(ctx) as store:
        s = store.stats()
    if as_json:
        emit_json(s)
        return
    for key, value in s.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        click.echo(f"{key + ':':<17}{value}")


@cli.command()
@click.option("--polling", is_flag=True, envvar="MEMFS_POLLING",
              help="Poll instead of inotify: for network filesystems and docker/macOS bind mounts (env MEMFS_POLLING).")
@click.option("--reconcile-every", default=300.0, show_default=True, metavar="SECONDS",
              help="Also run a full (stat-only) reconcile this often, to recover events the OS dropped.")
@click.pass_context
@fails_cleanly
def watch(ctx, polling, reconcile_every) -> None:
    """Keep search current with the files until Ctrl-C: reconcile once, then follow every change."""
    import signal
    import threading

    from .watcher import Watcher

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logging.getLogger("memfs").addHandler(console)
    try:
        with local_store(MemoryStore.open(ctx.obj["root"])) as store:
            watcher = Watcher(store, polling=polling, reconcile_every=reconcile_every).start()
            click.echo(f"watching {store.layout.memories} ({watcher.status().observer}); Ctrl-C stops", err=True)
            try:
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
            finally:
                watcher.stop()
                click.echo("stopped; pending changes applied", err=True)
    finally:
        logging.getLogger("memfs").removeHandler(console)


def _loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="MEMFS_HOST", help="Address to bind (env MEMFS_HOST).")
@click.option("--port", default=3000, show_default=True, envvar="MEMFS_PORT", help="Port (env MEMFS_PORT).")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback bind without MEMFS_API_TOKEN.")
@click.option("--polling", is_flag=True, envvar="MEMFS_POLLING", help="Poll for file changes (bind mounts, NFS).")
@click.option("--reconcile-every", default=300.0, show_default=True, metavar="SECONDS",
              help="Full stat-only reconcile interval, to recover dropped file events.")
@click.pass_context
@fails_cleanly
def serve(ctx, host, port, insecure, polling, reconcile_every) -> None:
    """Own the store and serve the HTTP API (+ live indexer) until SIGTERM / Ctrl-C.

    Other `memfs` and `manage_data.py` commands then go through this server. Auth: set
    MEMFS_API_TOKEN to require `Authorization: Bearer <token>` on every route but /health.
    """
    import uvicorn

    from .owner import Owner
    from .server import create_app

    token = ctx.obj.get("token")
    if not _loopback(host) and not token and not insecure:
        raise click.UsageError(f"refusing to bind {host} without MEMFS_API_TOKEN: anyone who can reach it could "
                               "read and change every memory. Set a token, or pass --insecure")
    url = f"http://{host}:{port}"
    owner = Owner(ctx.obj["root"], url=url, polling=polling, reconcile_every=reconcile_every).start()
    console = logging.StreamHandler()
    console.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    logging.getLogger("memfs").addHandler(console)
    logging.getLogger("memfs").setLevel(logging.INFO)
    try:
        click.echo(f"memfs {__version__} serving {owner.layout.root} at {url} (docs at {url}/docs)", err=True)
        config = uvicorn.Config(create_app(owner, token=token), host=host, port=port, log_level="warning",
                                lifespan="off", timeout_graceful_shutdown=30)
        # uvicorn shuts down gracefully on SIGTERM/SIGINT and then re-raises the signal to the handler
        # that was there before it; a no-op one lets the `finally` below drain and release cleanly.
        import signal

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: None)
        uvicorn.Server(config).run()
    finally:
        owner.close()
        logging.getLogger("memfs").removeHandler(console)
        click.echo("stopped; lock released", err=True)


def main() -> None:
    cli(prog_name="memfs")
