"""`memfs kv set|get|list|rm`: key/value memories, (namespace, key) unique, with an optional TTL. Parse,
call one operation (memfs.ops), print.
"""

from __future__ import annotations

import click

from .cmdline import command, emit_json, json_option, printable, with_operations


@click.group()
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



COMMANDS = (kv,)
