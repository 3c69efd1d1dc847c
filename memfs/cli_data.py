"""`memfs export` and `memfs import`: the store's memories out as one JSON document, and in from other
stores (memfs or mcp-memory-service exports, SQLite stores, memory.jsonl). Parse, call one operation
(memfs.ops), print.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .cmdline import command, emit_json, json_option, printable, problems_found, progress_bar, with_operations


@click.command()
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


@click.command("import")
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



COMMANDS = (export, import_)
