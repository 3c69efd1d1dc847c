"""The `memfs` command: its group, the commands on memories (init, add, get, list, search, update, rm,
reindex, stats) and `memfs mcp`; parse, call one operation (memfs.ops), print.

Each command gets its operations from `with_operations` and never asks whether the store is in this
process or behind its owner. The other command groups live in modules of their own and are attached
here: memfs.cli_data (export, import), memfs.cli_kv (kv), memfs.cli_owner (status, stop and the owners
`watch`, `serve`, `owner`), memfs.sync_cli (sync, conflicts).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__, cli_data, cli_kv, cli_owner, sync_cli
from .cmdline import (emit_json, command, json_option, printable, problems_found, progress_bar, settings,
                      store_options, with_operations)
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


for group in (cli_data, cli_kv, cli_owner):
    for one in group.COMMANDS:
        cli.add_command(one)
cli.add_command(sync_cli.sync)
cli.add_command(sync_cli.conflicts)


def main() -> None:
    cli(prog_name="memfs")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
