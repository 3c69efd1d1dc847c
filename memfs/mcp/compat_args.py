"""mcp-memory-service 12.x's arguments to the native memory_* tools, rewritten into theirs (docs/mcp.md
§ mcp-memory-service compatibility): MMS_ARGUMENTS, tool -> args -> args, which StrictServer applies
before the native schema validates a call.

mcp-memory-service 12.x names its tools as memfs does (memory_store, memory_search, memory_list,
memory_delete, memory_update) with other arguments (its src/mcp_memory_service/tools/registry.py).
Its shapes used to be dropped silently (issue #26: `{"limit": 2}` gave 5 hits). What memfs cannot do
is refused with an error naming the argument; an argument no shape knows is refused by the server
(memfs.mcp.server).
"""

from __future__ import annotations

import json

from mcp.server.mcpserver.exceptions import ToolError

from ..documents import format_time
from .compat_inputs import parse_timeframe, split_tags


def _rename(tool: str, args: dict, old: str, new: str) -> None:
    if old in args:
        if new in args:
            raise ToolError(f"{tool}: give {new} or {old} (mcp-memory-service's name for it), not both")
        args[new] = args.pop(old)


def _default_only(tool: str, args: dict, name: str, allowed: tuple, why: str) -> None:
    """An argument memfs has no use for: accepted at a value that changes nothing, refused otherwise."""
    if name in args:
        value = args.pop(name)
        if value not in allowed or isinstance(value, bool) != isinstance(allowed[0], bool):
            choices = " or ".join(json.dumps(a) for a in allowed)
            raise ToolError(f"{tool}: {name}={json.dumps(value)} is not supported ({why or 'it takes ' + choices}); "
                            f"leave {name} out")


def _tag_list(tool: str, args: dict) -> None:
    if isinstance(args.get("tags"), str):  # mcp-memory-service takes "a,b" as well as ["a", "b"]
        args["tags"] = split_tags(args["tags"])


def _common(tool: str, args: dict) -> dict:
    _default_only(tool, args, "store", ("default", "all"), "memfs has one store per root (MEMFS_ROOT)")
    _rename(tool, args, "tag_match", "match")
    _rename(tool, args, "after", "since")
    _rename(tool, args, "before", "until")
    if tool != "memory_store":  # its memory_store takes tags in metadata only
        _tag_list(tool, args)
    return args


def _store_args(args: dict) -> dict:
    tool = "memory_store"
    meta = args.get("metadata")
    if isinstance(meta, dict) and ("tags" in meta or "type" in meta):
        meta = dict(meta)
        if "tags" in meta:
            args["tags"] = list(args.get("tags") or []) + split_tags(meta.pop("tags"))
        if "type" in meta:
            kind = meta.pop("type")
            if args.get("type", kind) != kind:
                raise ToolError(f"{tool}: type {args['type']!r} and metadata.type {kind!r} differ: give one")
            args["type"] = kind
        args["metadata"] = meta
    for key in ("conversation_id", "agent_id"):  # kept with the memory, as mcp-memory-service keeps them
        if key in args:
            meta = args["metadata"] = dict(args.get("metadata") or {})
            meta[key] = args.pop(key)
    _default_only(tool, args, "restore_deleted", (True, False), "")  # memfs refuses no deleted content
    return _common(tool, args)


def _search_args(args: dict) -> dict:
    tool = "memory_search"
    if "query" not in args:  # its time-only search
        raise ToolError(f"{tool}: query is required; to list memories by time, tags or type without a query, "
                        "use memory_list (since, until, tags, type)")
    _rename(tool, args, "limit", "k")
    if args.get("mode") == "exact":  # its exact: memories containing the words
        args["mode"] = "keyword"
    if "time_expr" in args:
        expr = args.pop("time_expr")
        rest, since, until = parse_timeframe(expr) if isinstance(expr, str) else (expr, None, None)
        if since is None or rest:
            raise ToolError(f"{tool}: time_expr {expr!r} is not understood; say e.g. \"yesterday\", \"last week\", "
                            "\"3 days ago\", or give after / before as dates (2025-01-31)")
        if "after" in args or "before" in args:
            raise ToolError(f"{tool}: give time_expr or after/before, not both")
        args["after"], args["before"] = format_time(since), format_time(until) if until else None
    args = _common(tool, args)
    if args.get("until") is None:
        args.pop("until", None)
    for name, allowed, why in (
            ("quality_boost", (0.0, 0), "memfs keeps no quality scores"),
            ("rerank", (False,), "memfs has no second-stage reranker"),
            ("include_debug", (False,), "memfs's hits carry their ranks in each index; no debug output"),
            ("include_superseded", (False, True), ""), ("fallback", (False,), "hybrid mode already adds keyword hits"),
            ("include_beliefs", (False,), "memfs derives no beliefs"),
            ("summarize", (False,), "memfs returns the memories, never an LLM summary")):
        _default_only(tool, args, name, allowed, why)
    return args


def _list_args(args: dict) -> dict:
    tool = "memory_list"
    _rename(tool, args, "page_size", "limit")
    _rename(tool, args, "memory_type", "type")
    if "tag" in args:  # older mcp-memory-service list_memories took one tag
        if "tags" in args:
            raise ToolError(f"{tool}: give tags or tag, not both")
        args["tags"] = [args.pop("tag")] if isinstance(args["tag"], str) else args.pop("tag")
    if "page" in args:
        page = args.pop("page")
        if not isinstance(page, int) or isinstance(page, bool) or page < 1:
            raise ToolError(f"{tool}: page must be a whole number from 1, not {page!r}")
        if "cursor" in args:
            raise ToolError(f"{tool}: give page or cursor, not both")
        if page > 1:
            limit = args.get("limit", 20)
            args["cursor"] = str((page - 1) * limit) if isinstance(limit, int) else limit
    return _common(tool, args)


def _delete_args(args: dict) -> dict:
    _rename("memory_delete", args, "content_hash", "id")
    return _common("memory_delete", args)


def _update_args(args: dict) -> dict:
    tool = "memory_update"
    _rename(tool, args, "content_hash", "id")
    _default_only(tool, args, "preserve_timestamps", (True,), "memfs keeps created_at and records the update time")
    _default_only(tool, args, "versioned", (False,), "memfs keeps no versions; a backup (memory_backup) keeps "
                                                     "earlier copies")
    if "updates" in args:
        updates = args.pop("updates")
        if not isinstance(updates, dict):
            raise ToolError(f"{tool}: updates must be a JSON object")
        updates = dict(updates)
        if "tags" in updates:
            raise ToolError(f"{tool}: updates.tags (replace all tags) is not supported here; give add_tags and "
                            "remove_tags, or use update_memory_metadata (MEMFS_MCP_TOOLS=all)")
        if "reason" in updates:
            raise ToolError(f"{tool}: updates.reason goes with versioned updates, which memfs has not; leave it out")
        for old, new in (("memory_type", "type"), ("content", "content")):
            if old in updates:
                if new in args:
                    raise ToolError(f"{tool}: give {new} or updates.{old}, not both")
                args[new] = updates.pop(old)
        meta = updates.pop("metadata", None) or {}
        if not isinstance(meta, dict):
            raise ToolError(f"{tool}: updates.metadata must be a JSON object")
        extra = {**updates, **meta}  # its other keys in updates are custom metadata fields, merged
        if extra:
            args["metadata"] = {**(args.get("metadata") or {}), **extra}
    return args


MMS_ARGUMENTS = {"memory_store": _store_args, "memory_search": _search_args, "memory_list": _list_args,
                 "memory_delete": _delete_args, "memory_update": _update_args}
