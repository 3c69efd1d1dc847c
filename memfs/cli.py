"""The `memfs` command: parse, call one operation (memfs.ops), print.

Each command gets its operations from `with_operations` and never asks whether the store is in this
process or behind its owner. The owners themselves (`serve`, `watch`, and `owner`, the one a command
starts on demand) are at the end.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import click

from . import __version__
from .cmdline import (emit_json, command, json_option, printable, problems_found, progress_bar, settings,
                      store_options, with_operations)
from .errors import StoreBusyError
from .inputs import MAX_K, MAX_PAGE
from .query import MODES, Filters


def filter_options(fn):
    """--tag/--match/--type/--since/--until, shared by list and search."""
    options = [
        click.option("--tag", "tags", multiple=True, help="Only memories with this tag (repeatable)."),
        click.option("--match", type=click.Choice(["any", "all"]), default="any", show_default=True,
                     help="With several --tag: any of them, or all of them."),
        click.option("--type", "mem_type", help="Only memories of this type."),
        click.option("--since", callback=_time_param,
                     help="Created at or after: 2025-01-31, ISO-8601, 7d, 12h, 2w, yesterday, 'last week', 'last month'."),
        click.option("--until", callback=_time_param, help="Created before (the same forms as --since)."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _time_param(ctx, param, value):
    if value is None:
        return None
    from .timeparse import InvalidTimeError, parse_when

    try:
        return parse_when(value, option=f"--{param.name}")
    except InvalidTimeError as e:
        raise click.BadParameter(str(e)) from None


def _filters(tags, match, mem_type, since, until) -> Filters:
    return Filters(tags=tuple(tags), match=match, type=mem_type, since=since, until=until)


def _one_line(text: str, width: int = 70) -> str:
    text = printable(" ".join(text.split()))
    return text if len(text) <= width else text[: width - 1] + "…"


@click.group()
@click.version_option(__version__, prog_name="memfs")
@store_options
@click.pass_context
def cli(ctx: click.Context, root: Path, url: str | None, token: str | None, no_daemon: bool) -> None:
    """memfs: memories as JSON files you can edit, with semantic and keyword search.

    The files under ROOT/data/memories/ are the truth; everything else under ROOT/data/ is derived
    from them and rebuilt by `memfs reindex`. One process owns a store at a time (`memfs serve`,
    `memfs watch`, or one a command starts on demand, which exits when idle); every command goes
    through it. `memfs status` shows it, `memfs stop` stops it.
    """
    ctx.obj = settings(root, url, token, no_daemon)


@cli.command()
@json_option
@command()
def init(as_json) -> None:
    """Create the store's directory layout (safe to run again)."""

    layout = click.get_current_context().obj.local_only("memfs init")
    layout.create()
    from .sync.state import replica_id

    replica_id(layout)  # this store's replica id for `memfs sync` (docs/sync.md)
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
@command()
@with_operations(needs_model=True)
def add(ops, content, file, tags, mem_type, meta, allow_duplicate, as_json) -> None:
    """Store a memory. Same content twice gives back the first one, unless --allow-duplicate."""
    if (content is None) == (file is None):
        raise click.UsageError("give the content as an argument or with --file, not both")
    text = content if content is not None else file.read()
    result = ops.add(text, tags=tags, type=mem_type, metadata=_meta(meta), allow_duplicate=allow_duplicate)
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
@command()
@with_operations()
def get(ops, mem_id, as_json) -> None:
    """Show one memory, as its file says now."""
    r = ops.get(mem_id)
    if as_json:
        emit_json(r.to_dict())
        return
    m = r.memory
    if r.warning:
        click.echo(f"warning: {printable(r.warning)}", err=True)
    click.echo(f"id:      {printable(m.id)}\npath:    {printable(r.path)}\ntype:    {printable(m.type)}\n"
               f"tags:    {printable(', '.join(m.tags))}\ncreated: {m.created_at.isoformat()}\n"
               f"updated: {m.updated_at.isoformat()}\n\n{printable(m.content, multiline=True)}")


@cli.command("list")
@filter_options
@click.option("--limit", default=50, show_default=True, type=int,
              help=f"At most this many (1 to {MAX_PAGE}; the operations check it, as for every door).")
@click.option("--cursor", default=None, help="Continue after a previous page (its next_cursor).")
@json_option
@command()
@with_operations()
def list_(ops, tags, match, mem_type, since, until, limit, cursor, as_json) -> None:
    """List memories, newest first."""
    page = ops.list(_filters(tags, match, mem_type, since, until), limit=limit, cursor=cursor)
    if as_json:
        emit_json(page.to_dict())
        return
    for r in page.memories:
        m = r.memory
        click.echo(f"{printable(m.id)}  {m.created_at:%Y-%m-%d}  [{printable(', '.join(m.tags))}]  {_one_line(m.content)}")
    if page.next_cursor:
        click.echo(f"more: --cursor {page.next_cursor}", err=True)


@cli.command()
@click.argument("query")
@click.option("-k", "k", default=5, show_default=True, type=int, help=f"How many results (1 to {MAX_K}).")
@click.option("--mode", type=click.Choice(MODES), default="hybrid", show_default=True,
              help="semantic (meaning), keyword (exact words, ids like E4417) or hybrid (both, fused).")
@click.option("--min-score", type=click.FloatRange(0, 1), default=None,
              help="Only hits scoring at least this (0-1). Without it, a query with no good match says so "
                   "instead of listing unrelated memories; --min-score 0 lists whatever was found.")
@filter_options
@json_option
@command()
@with_operations(needs_model=lambda kw: kw["mode"] != "keyword")
def search(ops, query, k, mode, min_score, tags, match, mem_type, since, until, as_json) -> None:
    """Find the memories that best answer QUERY.

    Each hit shows its score (0-1: what the list is ordered by), the cosine similarity to the query,
    the query's words it contains, and a snippet with those words highlighted. --json carries every
    figure, and each index's own rank.
    """
    result = ops.search(query, k=k, mode=mode, filters=_filters(tags, match, mem_type, since, until),
                        min_score=min_score)
    if as_json:
        emit_json(result.to_dict())
        return
    if not result.hits:
        click.echo(result.note or "no matches", err=True)
    color = sys.stdout.isatty()
    for h in result.hits:
        sim = "   -" if h.similarity is None else f"{h.similarity:.2f}"
        terms = f"  matched: {printable(', '.join(h.matched_terms))}" if h.matched_terms else ""
        click.echo(f"{h.rank:>2}. score {h.score:.2f}  similarity {sim}  {printable(h.memory.id)}  "
                   f"[{printable(', '.join(h.memory.tags))}]{terms}")
        click.echo(f"    {_highlighted(h.snippet or h.memory.content, h.matched_terms, color)}")


def _highlighted(text: str, terms, color: bool) -> str:
    from .query import highlight

    text = _one_line(text, 240)
    if color:
        return highlight(text, terms, "\x1b[1m", "\x1b[0m")
    return highlight(text, terms, "*", "*")


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
@command()
@with_operations(needs_model=lambda kw: kw["content"] is not None or kw["file"] is not None)
def update(ops, mem_id, content, file, tags, add_tag, remove_tag, mem_type, meta, as_json) -> None:
    """Change a memory in place (its file is rewritten atomically)."""
    if content is not None and file is not None:
        raise click.UsageError("give --content or --file, not both")
    text = file.read() if file is not None else content
    r = ops.update(mem_id, content=text, tags=tags or None, add_tags=add_tag, remove_tags=remove_tag,
                   type=mem_type, metadata=_meta(meta))
    if as_json:
        emit_json(r.to_dict())
    else:
        click.echo(f"{printable(r.memory.id)}  updated")


@cli.command()
@click.argument("ids", nargs=-1, required=True, metavar="ID...")
@json_option
@command()
@with_operations()
def rm(ops, ids, as_json) -> None:
    """Delete memories: their files and their index entries."""
    removed = [ops.remove(i).memory.id for i in ids]
    if as_json:
        emit_json({"removed": removed})
    else:
        for i in removed:
            click.echo(f"{printable(i)}  removed")


@cli.command()
@json_option
@command()
@with_operations(needs_model=True)
def reindex(ops, as_json) -> None:
    """Bring every index level with the files, re-embedding only content never embedded before.

    Also checks that Chroma holds a vector for every memory. Exits 1 if invalid files were found.
    """
    with progress_bar(not as_json) as progress:
        report = ops.reindex(progress=progress)
    if as_json:
        emit_json(report.to_dict())
    else:
        click.echo(f"{report.scanned} files: {report.added} added, {report.updated} updated, {report.moved} moved, "
                   f"{report.removed} removed; {report.embedded} embedded, {report.vectors_missing} missing "
                   f"vectors restored, {report.vectors_orphaned} orphans removed ({report.seconds:.2f}s)")
        for bad in report.invalid:
            click.echo(f"invalid: {printable(bad.path)}: {printable(bad.reason)}", err=True)
    if report.invalid:
        problems_found()


@cli.command()
@json_option
@command()
@with_operations()
def stats(ops, as_json) -> None:
    """Counts, sizes, model and last index time."""
    s = ops.stats().to_dict()
    if as_json:
        emit_json(s)
        return
    for key, value in s.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        click.echo(f"{key + ':':<17}{value}")


# -- in and out, key/value ------------------------------------------------------------------------


@cli.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True, path_type=Path),
              help="Write to this file (default: standard output).")
@click.option("--format", "fmt", type=click.Choice(["memfs", "mms"]), default="memfs", show_default=True,
              help="memfs, or mms: mcp-memory-service's export format (its import_memories.py reads it).")
@click.option("--filter-tags", default="", metavar="A,B", help="Only memories with any of these tags.")
@click.option("--include-embeddings", is_flag=True, help="Carry each memory's vector (384 floats) too.")
@command()
@with_operations()
def export(ops, output, fmt, filter_tags, include_embeddings) -> None:
    """Write every memory as one JSON document, streamed (constant memory at any size)."""
    tags = [t.strip() for t in filter_tags.split(",") if t.strip()]
    if output is None:
        report = ops.export(sys.stdout.buffer, format=fmt, filter_tags=tags, include_embeddings=include_embeddings)
        sys.stdout.buffer.flush()
    else:
        from .filestore import atomic_write_stream

        with atomic_write_stream(output) as out:
            report = ops.export(out, format=fmt, filter_tags=tags, include_embeddings=include_embeddings)
    click.echo(f"exported {report.count} memories ({report.format}) in {report.seconds:.1f}s", err=True)


@cli.command("import")
@click.argument("sources", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "memfs", "mms-json", "mms-sqlite", "extended-memory", "swarm", "swarm-json",
                                 "kg-jsonl"]),
              help="The sources' format; auto reads it from their content.")
@click.option("--dry-run", is_flag=True, help="Count new / duplicate / updated / invalid per source; write nothing.")
@click.option("--no-dedup", is_flag=True, help="Store content that is already stored again.")
@click.option("--source-tag", metavar="NAME", help="Tag each memory source:NAME (default: from the source).")
@click.option("--namespace", metavar="NS", help="Namespace for key/value sources (default: the source's own).")
@click.option("--history", is_flag=True, help="List the migration records of earlier imports.")
@click.option("--verify", "verify_record", metavar="RECORD", help="Re-read a record's source; prove every record is here.")
@json_option
@command()
@with_operations(needs_model=lambda kw: not (kw["dry_run"] or kw["history"] or kw["verify_record"]))
def import_(ops, sources, fmt, dry_run, no_dedup, source_tag, namespace, history, verify_record, as_json) -> None:
    """Bring memories in from other stores: memfs or mcp-memory-service exports, its SQLite, the
    extended-memory service's SQLite, claude-flow .swarm/memory.db, the MCP memory server's memory.jsonl.

    Sources are opened read-only; running the same import twice adds nothing. Exit 1 if records were
    invalid or a source failed (the rest is imported and reported).
    """
    ctx = click.get_current_context()
    if history:
        records = ops.import_history()
        if as_json:
            emit_json(records)
        for r in records if not as_json else ():
            c, src = r.get("counts") or {}, r.get("source") or {}
            click.echo(f"{r.get('id')}  {r.get('status')}  {printable(str(src.get('path')))} ({src.get('format')})  "
                       f"read {c.get('read')}: new {c.get('new')}, duplicate {c.get('duplicate')}, "
                       f"updated {c.get('updated')}, invalid {c.get('invalid')}")
        return
    if verify_record:
        report = ops.import_verify(verify_record)
        emit_json(report.to_dict()) if as_json else click.echo(printable(str(report.to_dict())))
        if not report.ok:
            problems_found()
        return
    if not sources:
        raise click.UsageError("name at least one SOURCE (or --history / --verify RECORD)")
    from .importers import format_report

    with progress_bar(not as_json) as progress:
        report = ops.import_sources([str(p.resolve()) for p in sources], format=fmt, dry_run=dry_run,
                                    dedup=not no_dedup, source_tag=source_tag, namespace=namespace, progress=progress)
    emit_json(report.to_dict()) if as_json else click.echo(printable(format_report(report), multiline=True))
    if report.problems:
        problems_found()


@cli.group()
def kv() -> None:
    """Key/value memories: (namespace, key) unique, optional TTL; reads counted, files never rewritten on read."""


def _ns_option(fn):
    return click.option("--namespace", "-n", default="default", show_default=True, help="The key's namespace.")(fn)


@kv.command("set")
@click.argument("key")
@click.argument("value")
@_ns_option
@click.option("--ttl", type=click.FloatRange(min=0, min_open=True), help="Seconds until it expires.")
@click.option("--json-value", is_flag=True, help="VALUE is JSON (a number, list, object…), not a string.")
@json_option
@command()
@with_operations(needs_model=True)
def kv_set(ops, key, value, namespace, ttl, json_value, as_json) -> None:
    """Store VALUE under KEY (replacing what it held)."""
    import orjson

    if json_value:
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError as e:
            raise click.BadParameter(f"not JSON: {e}", param_hint="VALUE") from None
    item = ops.kv_set(key, value, namespace=namespace, ttl=ttl)
    emit_json(item.to_dict()) if as_json else click.echo(f"{printable(item.namespace)}/{printable(item.key)}  set"
                                                         + (f", expires {item.expires_at:%Y-%m-%dT%H:%M:%SZ}"
                                                            if item.expires_at else ""))


@kv.command("get")
@click.argument("key")
@_ns_option
@json_option
@command()
@with_operations()
def kv_get(ops, key, namespace, as_json) -> None:
    """Print the value under KEY (exit 3 if there is none, or it expired)."""
    import orjson

    item = ops.kv_get(key, namespace=namespace)
    if as_json:
        emit_json(item.to_dict())
    else:
        click.echo(item.value if isinstance(item.value, str) else orjson.dumps(item.value).decode())


@kv.command("list")
@_ns_option
@click.option("--all", "all_", is_flag=True, help="Every namespace.")
@click.option("--prefix", help="Only keys starting with this.")
@click.option("--limit", type=click.IntRange(1), default=None)
@json_option
@command()
@with_operations()
def kv_list(ops, namespace, all_, prefix, limit, as_json) -> None:
    """Keys, sorted by namespace and key, with their access counts and expiry."""
    items = ops.kv_list(namespace=None if all_ else namespace, prefix=prefix, limit=limit)
    if as_json:
        emit_json([i.to_dict() for i in items])
        return
    for i in items:
        expiry = f"  expires {i.expires_at:%Y-%m-%dT%H:%M:%SZ}" if i.expires_at else ""
        click.echo(f"{printable(i.namespace)}/{printable(i.key)}  read {i.access_count}x{expiry}")


@kv.command("rm")
@click.argument("key")
@_ns_option
@command()
@with_operations()
def kv_rm(ops, key, namespace) -> None:
    """Remove KEY."""
    removed = ops.kv_rm(key, namespace=namespace)
    click.echo(f"{printable(namespace)}/{printable(key)}  removed ({len(removed)} memory file(s))")


# -- the owner ----------------------------------------------------------------------------------------


@cli.command()
@json_option
@command()
def status(as_json) -> None:
    """Whether an owner runs for this store: its pid, how it was started, where it listens, idle time left."""
    from .lock import is_held, read_owner
    from .remote import OwnerGoneError, RemoteOperations
    from .results import OwnerStatus

    layout = click.get_current_context().obj.local_only("memfs owner status")
    record = read_owner(layout.lock_file) if is_held(layout.lock_file) else {}
    st = OwnerStatus(False)
    unreachable = False
    if record.get("socket"):
        try:
            with RemoteOperations(socket=record["socket"], ready_wait=0) as remote:
                st = remote.status()
        except OwnerGoneError:
            # The lock is held: the owner is alive, only its socket does not answer (issue #24, 3).
            unreachable = is_held(layout.lock_file)
    if unreachable or (record and not record.get("socket")):
        st = OwnerStatus(True, pid=record.get("pid"), started_by=record.get("started_by"), since=record.get("since"),
                         socket=record.get("socket"))
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


@cli.command()
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait for it to finish its work.")
@command()
def stop(timeout) -> None:
    """Stop the store's owner cleanly: it finishes pending work, closes and releases the store."""
    from .lock import is_held, read_owner
    from .remote import OwnerGoneError, RemoteOperations

    layout = click.get_current_context().obj.local_only("memfs owner stop")
    record = read_owner(layout.lock_file)
    if not is_held(layout.lock_file) or not record.get("socket"):
        click.echo(f"no owner runs for {layout.root}")
        return
    try:
        with RemoteOperations(socket=record["socket"], ready_wait=0) as remote:
            remote.stop()
    except OwnerGoneError:
        _signal_owner(record)  # its socket is gone (issue #24, item 3): SIGTERM stops it the same way
    deadline = time.monotonic() + timeout
    while is_held(layout.lock_file):
        if time.monotonic() > deadline:
            raise StoreBusyError(f"the owner (pid {record.get('pid')}) has not stopped after {timeout:.0f}s")
        time.sleep(0.05)
    click.echo(f"stopped the owner (pid {record.get('pid')})")


def _signal_owner(record: dict) -> None:
    """SIGTERM to the owner named by the lock record, when it runs on this host (a clean stop)."""
    import os
    import signal
    import socket

    if record.get("pid") and record.get("host") == socket.gethostname():
        try:
            os.kill(int(record["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise StoreBusyError(f"permission denied: the owner (pid {record['pid']}) runs as another user; "
                                 "stop it as that user") from None


def _take_over(layout, started_by: str) -> None:
    """Before an explicit owner starts: an owner started on demand makes way; another explicit one
    means this one is a second owner (exit 4)."""
    from .lock import describe, is_held, read_owner
    from .remote import OwnerGoneError, RemoteOperations

    record = read_owner(layout.lock_file)
    if not is_held(layout.lock_file):
        return
    if record.get("started_by") not in ("on-demand",) or not record.get("socket"):
        if record.get("socket"):
            raise StoreBusyError(f"the store at {layout.root} is already owned by {describe(record)}; "
                                 f"it serves every command, so `memfs {started_by}` is not needed")
        return  # a command holding the lock for its own run: wait for it (the lock timeout)
    try:
        with RemoteOperations(socket=record["socket"], ready_wait=0) as remote:
            remote.stop()
    except OwnerGoneError:
        pass
    click.echo(f"took over from the owner started on demand (pid {record.get('pid')})", err=True)


def _stop_before_owning(*_) -> None:
    click.echo("stopped before it owned the store (the files are untouched; the indexes are derived)", err=True)
    raise SystemExit(0)


def _run_owner(started_by: str, **options) -> None:
    import logging

    from .daemon import log_to_owner_file, run_owner

    ctx = click.get_current_context()
    layout = ctx.obj.local_only("memfs " + started_by)
    # A stop asked for while this process still waits to own the store (an on-demand owner handing
    # over, the lock, the startup reconcile) ends the wait cleanly (Owner.start closes what it opened
    # and releases the lock it took, logged), as a stop of a running owner does;
    # SIGTERM's default action killed it with -15 (the torture test's watch, on a loaded machine).
    # run_owner installs its own handlers once it serves.
    signal.signal(signal.SIGTERM, _stop_before_owning)
    console = None
    if started_by != "on-demand":
        _take_over(layout, started_by)
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        logging.getLogger("memfs").addHandler(console)
    handler = log_to_owner_file(layout)

    def ready(owner) -> None:
        where = f"{owner.socket}" + (f" and {owner.url}" if owner.url else "")
        click.echo(f"memfs {__version__} {started_by}: owning {layout.root}, watching {layout.memories}, "
                   f"listening on {where}; Ctrl-C stops", err=True)

    try:
        left = run_owner(layout, started_by=started_by, on_ready=ready, **options)
    finally:
        logging.getLogger("memfs").removeHandler(handler)
        if console is not None:
            logging.getLogger("memfs").removeHandler(console)
    click.echo(f"stopped; {left}; lock released", err=True)


from .sync_cli import sync_loop_options  # noqa: E402  (issue #20: --sync DEST --sync-every 30s)


def _owner_options(fn):
    fn = click.option("--reconcile-every", default=300.0, show_default=True, metavar="SECONDS",
                      help="Also run a full (stat-only) reconcile this often, to recover events the OS dropped.")(fn)
    return click.option("--polling", is_flag=True, envvar="MEMFS_POLLING",
                        help="Poll instead of inotify: for network filesystems and docker/macOS bind mounts "
                             "(env MEMFS_POLLING).")(fn)


@cli.command()
@_owner_options
@sync_loop_options
@command()
def watch(polling, reconcile_every, sync_loop) -> None:
    """Own the store in the foreground and keep search current with the files until Ctrl-C.

    Reconciles once, then follows every change. Other commands go through it (over data/memfs.sock)
    meanwhile. An owner that a command started on demand makes way for it.
    """
    _run_owner("watch", polling=polling, reconcile_every=reconcile_every, lock_timeout=60.0, sync=sync_loop)


@cli.command()
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


@cli.command(hidden=True)
@click.option("--idle-exit", type=float, default=None, help="Exit after this many seconds without requests.")
@_owner_options
@command()
def owner(idle_exit, polling, reconcile_every) -> None:
    """The owner a command starts on demand (detached; logs to data/logs/owner.log)."""
    from .lock import is_held, read_owner

    layout = click.get_current_context().obj.local_only("memfs owner")
    deadline = time.monotonic() + 60
    while is_held(layout.lock_file):
        if read_owner(layout.lock_file).get("socket") or time.monotonic() > deadline:
            return  # another owner serves (a racing client started it): nothing to do
        time.sleep(0.05)
    try:
        _run_owner("on-demand", idle_exit=idle_exit, polling=polling, reconcile_every=reconcile_every,
                   lock_timeout=0.5)
    except StoreBusyError:
        return  # lost the race to another on-demand owner; the clients find that one


@cli.command()
@click.option("--tools", type=click.Choice(["native", "compat", "graph", "all"]), envvar="MEMFS_MCP_TOOLS",
              default="native", show_default=True,
              help="Which tools to list: memfs's own, mcp-memory-service's names, the MCP reference memory "
                   "server's knowledge graph, or all (env MEMFS_MCP_TOOLS).")
@click.option("--init", "create", is_flag=True, help="Create the store at --root if there is none yet.")
@click.option("--import-kg", "import_kg", envvar="MEMORY_FILE_PATH", default=None,
              type=click.Path(dir_okay=False, path_type=Path),
              help="The reference memory server's memory.jsonl: imported on the first start, once (an import "
                   "record says so); env MEMORY_FILE_PATH, as that server reads it.")
def mcp(tools, create, import_kg) -> None:
    """Serve the store to MCP clients (Claude Code, Claude Desktop, Cursor…) over stdio.

    Goes through the store's owner, starting one on the first tool call, so any number of sessions,
    commands and `memfs serve` share the store safely; with --url, through the memfs server there
    (with --token), starting nothing here; with --no-daemon, owning the store in this process.
    stdout carries only the protocol; logs go to stderr and data/logs/mcp.log. See docs/mcp.md.
    """
    from .mcp.stdio import serve_stdio

    o = click.get_current_context().obj
    if o.url and import_kg is not None:
        raise click.UsageError("--import-kg reads a file on this machine; with --url, import it on the server's "
                               "machine (`memfs import PATH`) or run `memfs mcp` there")
    if o.url and create:
        raise click.UsageError("--init creates a local store; with --url the server's store is used")
    serve_stdio(Path(o.root), tools=tools, create=create, idle_exit=o.idle_exit, url=o.url,
                token=o.token, daemon=o.daemon, import_kg=import_kg)


from .sync_cli import conflicts as _conflicts_group, sync as _sync_group  # noqa: E402  (issue #20)

cli.add_command(_sync_group)
cli.add_command(_conflicts_group)


def main() -> None:
    cli(prog_name="memfs")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
