"""mcp-memory-service's tool names and argument shapes, over the same operations (docs/mcp.md § Compatibility).

So the prompts, hooks and habits of mcp-memory-service users keep working: `store_memory`, `retrieve_memory`,
`recall_memory`, `search_by_tag`, `delete_memory`, `delete_by_tag`, `exact_match_retrieve`, `list_memories`,
`check_database_health`, `update_memory_metadata`. Memories are named by content hash here, as there;
every tool that takes one also takes a memfs id. Listed when MEMFS_MCP_TOOLS is compat or all.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from .documents import Memory, content_hash, format_time, normalize_tags
from .errors import MemfsError, NotFoundError
from .inputs import MAX_QUERY_CHARS
from .mcp_server import (DELETE, MAX_DELETE, MAX_K, MAX_PAGE, OVERWRITE, READ, WRITE, Gateway, check_content,
                         check_ref, make_filters, resolve, tool)
from .query import Filters
from .timeparse import parse_when


class CompatMemory(BaseModel):
    content: str
    content_hash: str
    tags: list[str]
    memory_type: str
    metadata: dict[str, Any]
    created_at: str
    updated_at: str
    id: str = Field(description="memfs's id for the memory (memfs tools take it; these take it too).")
    similarity_score: float | None = None


class StoreResult(BaseModel):
    success: bool
    message: str
    content_hash: str
    id: str


class MemoriesResult(BaseModel):
    memories: list[CompatMemory]
    total_results: int
    query: str | None = None
    search_tags: list[str] | None = None
    match_all: bool | None = None


class ListResult(BaseModel):
    memories: list[CompatMemory]
    page: int
    page_size: int
    total: int | None = Field(description="Memories in the store; null when a filter is given.")
    has_more: bool


class DeleteResult(BaseModel):
    success: bool
    message: str
    content_hash: str | None = None
    deleted_count: int = 0
    deleted_ids: list[str] = []


class HealthResult(BaseModel):
    status: str = Field(description="healthy or unhealthy")
    backend: str
    statistics: dict[str, Any]
    version: str


class UpdateResult(BaseModel):
    success: bool
    message: str
    content_hash: str
    updated_fields: list[str]


def compat_memory(m: Memory, score: float | None = None) -> CompatMemory:
    return CompatMemory(content=m.content, content_hash=m.content_hash, tags=list(m.tags), memory_type=m.type,
                        metadata=m.metadata, created_at=format_time(m.created_at), updated_at=format_time(m.updated_at),
                        id=m.id, similarity_score=score)


def split_tags(value: Any) -> list[str]:
    """Tags as mcp-memory-service takes them: a list, or one string of comma-separated tags."""
    if value is None:
        return []
    if isinstance(value, str):
        return list(normalize_tags(value.split(",")))
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return list(normalize_tags(value))
    raise ToolError('tags must be a list of strings or a comma-separated string, e.g. ["a", "b"] or "a,b"')


TagsArg = Annotated[list[str] | str | None, Field(description='A list of tags, or a comma-separated string: "a,b".')]


# -- recall_memory's time expressions -----------------------------------------------------------------

_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "ten": 10}
_TIME = re.compile(
    r"\b(?:(?P<named>today|yesterday|this week|last week|this month|last month|this year|last year)"
    r"|(?:(?:in the )?(?:last|past) (?P<n>\d+|a|an|one|two|three|four|five|six|seven|ten) (?P<unit>days?|weeks?|months?|years?))"
    r"|(?:(?P<n2>\d+|a|an|one|two|three|four|five|six|seven|ten) (?P<unit2>days?|weeks?|months?|years?) ago))\b",
    re.IGNORECASE)
# Where a named period ends: the start of the one after it (its start is memfs.timeparse's).
_ENDS = {"yesterday": "today", "last week": "this week", "last month": "this month", "last year": "this year"}


def parse_timeframe(query: str, now: datetime | None = None) -> tuple[str, datetime | None, datetime | None]:
    """(the query without its time expression, since, until): "what did we decide last week" ->
    ("what did we decide", Monday a week ago, this Monday). No expression: (query, None, None).

    Finding the expression in the text is this module's; what instant it names is memfs.timeparse's,
    the one parser of times for every door (#19)."""
    now = now or datetime.now(timezone.utc)
    m = _TIME.search(query)
    if not m:
        return query, None, None
    named = (m.group("named") or "").lower()
    until: datetime | None = None
    if named:
        since = parse_when(named, now=now)
        until = parse_when(_ENDS[named], now=now) if named in _ENDS else None
    elif m.group("unit"):
        since = parse_when(f"{_count(m.group('n'))} {m.group('unit').lower()}", now=now)
    else:  # "N days ago": that day
        since = parse_when(f"{_count(m.group('n2'))} {m.group('unit2').lower()} ago", now=now)
        since = since.replace(hour=0, minute=0, second=0, microsecond=0)
        until = since + timedelta(days=1)
    rest = " ".join((query[:m.start()] + " " + query[m.end():]).split()).strip(" ,.?!")
    return rest, since, until


def _count(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBERS[word.lower()]


# -- the tools ----------------------------------------------------------------------------------------


def add_compat_tools(server: MCPServer, gw: Gateway) -> None:
    @tool(server, WRITE)
    async def store_memory(
        content: Annotated[str, Field(description="The text to remember.")],
        tags: TagsArg = None,
        memory_type: Annotated[str | None, Field(description="A kind: note, decision, task, reference…")] = None,
        metadata: Annotated[dict[str, Any] | None, Field(
            description="Kept with the memory; metadata.tags (list or comma string) and metadata.type are read "
                        "as tags and memory_type.")] = None,
        client_hostname: Annotated[str | None, Field(description="Recorded in metadata.hostname.")] = None,
    ) -> StoreResult:
        """Store a new memory (mcp-memory-service's store_memory). Same content twice is stored once.

        Returns success, a message, and the memory's content_hash (and memfs id).
        """
        meta = dict(metadata or {})
        all_tags = split_tags(tags) + split_tags(meta.pop("tags", None))
        mem_type = memory_type or meta.pop("type", None) or meta.pop("memory_type", None) or "note"
        if not isinstance(mem_type, str):
            raise ToolError("memory_type must be a string, e.g. \"note\"")
        if client_hostname:
            meta.setdefault("hostname", client_hostname)
        check_content(content, meta)
        r = await gw.run(lambda ops: ops.add(content, tags=all_tags, type=mem_type, metadata=meta))
        h = r.memory.content_hash
        if r.duplicate:
            return StoreResult(success=False, message=f"Duplicate content detected: already stored (hash {h})",
                               content_hash=h, id=r.memory.id)
        return StoreResult(success=True, message="Memory stored successfully", content_hash=h, id=r.memory.id)

    @tool(server, READ)
    async def retrieve_memory(
        query: Annotated[str, Field(description="What to look for, in natural language.", max_length=10_000)],
        n_results: Annotated[int, Field(ge=1, le=MAX_K, description="How many memories to return.")] = 5,
        min_similarity: Annotated[float, Field(ge=0.0, le=1.0, description="Drop results below this similarity.")] = 0.0,
    ) -> MemoriesResult:
        """Semantic search (mcp-memory-service's retrieve_memory): the memories closest in meaning to the query.

        Returns memories best first, each with similarity_score (cosine similarity, 0 to 1).
        """
        if not query.strip():
            raise ToolError("query is empty: say what to look for")
        result = await gw.run(lambda ops: ops.search(query, k=n_results, mode="semantic", min_score=0))
        memories = [compat_memory(h.memory, h.score) for h in result.hits if h.score >= min_similarity]
        return MemoriesResult(memories=memories, total_results=len(memories), query=query)

    @tool(server, READ)
    async def recall_memory(
        query: Annotated[str, Field(description='A question with a time expression: "what did we decide last week".',
                                    max_length=MAX_QUERY_CHARS)],
        n_results: Annotated[int, Field(ge=1, le=MAX_K)] = 5,
    ) -> MemoriesResult:
        """Recall memories by time and meaning (mcp-memory-service's recall_memory).

        Understands today, yesterday, this/last week, this/last month, this/last year, last N days/weeks/
        months, N days ago. The rest of the query ranks the memories in that window by meaning; with no
        rest, the newest come first. Without a time expression it is a semantic search.
        """
        try:
            rest, since, until = parse_timeframe(query)
        except MemfsError as e:  # "the last 99999999999 years": before the year 1
            raise ToolError(str(e)) from None
        filters = Filters(since=since, until=until)
        if rest:
            result = await gw.run(lambda ops: ops.search(rest, k=n_results, mode="semantic", filters=filters,
                                                               min_score=0))
            memories = [compat_memory(h.memory, h.score) for h in result.hits]
        elif since is not None:
            page = await gw.run(lambda ops: ops.list(filters, limit=n_results))
            memories = [compat_memory(r.memory) for r in page.memories]
        else:
            raise ToolError('query is empty: say what to recall, e.g. "what did we decide last week"')
        return MemoriesResult(memories=memories, total_results=len(memories), query=query)

    @tool(server, READ)
    async def search_by_tag(
        tags: Annotated[list[str] | str, Field(description='Tags: a list, or a comma-separated string.')],
        match_all: Annotated[bool, Field(description="true: memories with all the tags; false: any of them.")] = False,
    ) -> MemoriesResult:
        """Memories with the given tags, newest first (mcp-memory-service's search_by_tag; at most 100)."""
        wanted = split_tags(tags)
        if not wanted:
            raise ToolError("give at least one tag")
        filters = make_filters(wanted, "all" if match_all else "any")
        page = await gw.run(lambda ops: ops.list(filters, limit=MAX_PAGE))
        memories = [compat_memory(r.memory) for r in page.memories]
        return MemoriesResult(memories=memories, total_results=len(memories), search_tags=wanted, match_all=match_all)

    @tool(server, DELETE)
    async def delete_memory(
        content_hash: Annotated[str, Field(description="The memory's content_hash (a memfs id works too).")],
    ) -> DeleteResult:
        """Delete one memory by its content hash (mcp-memory-service's delete_memory)."""
        ref = check_ref(content_hash)

        def remove(ops):
            try:
                return ops.remove(resolve(ops, ref).memory.id)
            except NotFoundError:
                return None  # mcp-memory-service answers success: false here, not an error
        removed = await gw.run(remove)
        if removed is None:
            return DeleteResult(success=False, message=f"Memory not found: {ref}", content_hash=ref)
        return DeleteResult(success=True, message="Memory deleted successfully", content_hash=removed.memory.content_hash,
                            deleted_count=1, deleted_ids=[removed.memory.id])

    @tool(server, DELETE)
    async def delete_by_tag(
        tags: TagsArg = None,
        tag: Annotated[str | None, Field(description="One tag (the older form of this tool).")] = None,
        dry_run: Annotated[bool, Field(description="Only say how many would be deleted.")] = False,
    ) -> DeleteResult:
        """Delete every memory with any of the given tags (mcp-memory-service's delete_by_tag).

        Deletes at once, as mcp-memory-service does (memfs's memory_delete previews first); at most 1000.
        """
        wanted = split_tags(tags) + split_tags(tag)
        if not wanted:
            raise ToolError("give tags (a list or a comma-separated string) or tag")
        filters = make_filters(wanted, "any")
        r = await gw.run(lambda ops: ops.remove_matching(filters, dry_run=dry_run, limit=MAX_DELETE))
        verb = "would be deleted" if dry_run else "deleted"
        return DeleteResult(success=True, message=f"{len(r.removed)} memories {verb} with tags {', '.join(wanted)}",
                            deleted_count=len(r.removed), deleted_ids=r.removed)

    @tool(server, READ)
    async def exact_match_retrieve(
        content: Annotated[str, Field(description="The exact content of the memory, character for character.")],
    ) -> MemoriesResult:
        """The memory whose content is exactly this text (mcp-memory-service's exact_match_retrieve)."""
        h = content_hash(content)

        def find(ops):
            try:
                return [ops.find(content_hash=h)]
            except NotFoundError:
                return []
        found = await gw.run(find)
        memories = [compat_memory(r.memory) for r in found]
        return MemoriesResult(memories=memories, total_results=len(memories))

    @tool(server, READ)
    async def list_memories(
        page: Annotated[int, Field(ge=1, le=1_000_000, description="Page number, from 1.")] = 1,
        page_size: Annotated[int, Field(ge=1, le=MAX_PAGE)] = 10,
        tag: Annotated[str | None, Field(description="Only memories with this tag.")] = None,
        memory_type: Annotated[str | None, Field(description="Only memories of this type.")] = None,
    ) -> ListResult:
        """Memories page by page, newest first (mcp-memory-service's list_memories)."""
        filters = make_filters([tag] if tag else [], "any", memory_type)
        cursor = str((page - 1) * page_size) if page > 1 else None

        def listing(ops):
            result = ops.list(filters, limit=page_size, cursor=cursor)
            total = None if not filters.empty else ops.stats().memories
            return result, total
        result, total = await gw.run(listing)
        return ListResult(memories=[compat_memory(r.memory) for r in result.memories], page=page, page_size=page_size,
                          total=total, has_more=result.next_cursor is not None)

    @tool(server, READ)
    async def check_database_health() -> HealthResult:
        """Whether the store works, and its statistics (mcp-memory-service's check_database_health)."""
        def check(ops):
            return ops.health(), ops.stats()
        h, s = await gw.run(check)
        stats = {"total_memories": s.memories, "total_tags": s.distinct_tags, "memory_types": s.types,
                 "storage_size": sum(s.disk_bytes.values()), "vectors": s.vectors, "invalid_files": s.invalid_files,
                 "embedding_model": s.model}
        return HealthResult(status="healthy" if h.status == "ok" else "unhealthy", backend="memfs (JSON files)",
                            statistics=stats, version=h.version)

    @tool(server, OVERWRITE)
    async def update_memory_metadata(
        content_hash: Annotated[str, Field(description="The memory's content_hash (a memfs id works too).")],
        updates: Annotated[dict[str, Any], Field(
            description='What to change: {"tags": [...] (replaces the tags), "memory_type": "...", '
                        '"metadata": {...} (merged)}.')],
        preserve_timestamps: Annotated[bool, Field(
            description="Accepted for compatibility; memfs always records the update time.")] = True,
    ) -> UpdateResult:
        """Change a memory's tags, type or metadata, keeping its content (mcp-memory-service's update_memory_metadata)."""
        ref = check_ref(content_hash)
        unknown = set(updates) - {"tags", "memory_type", "type", "metadata"}
        if unknown:
            raise ToolError(f"cannot update {', '.join(sorted(unknown))}: updates takes tags, memory_type and metadata")
        new_tags = split_tags(updates["tags"]) if "tags" in updates else None
        new_type = updates.get("memory_type") or updates.get("type")
        meta = updates.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise ToolError("updates.metadata must be a JSON object")
        if new_type is not None and not isinstance(new_type, str):
            raise ToolError("updates.memory_type must be a string")
        if new_tags is None and new_type is None and not meta:
            raise ToolError("nothing to update: give updates.tags, updates.memory_type or updates.metadata")

        def update(ops):
            mem_id = resolve(ops, ref).memory.id
            return ops.update(mem_id, tags=new_tags, type=new_type, metadata=meta)
        r = await gw.run(update)
        fields = [f for f, v in (("tags", new_tags), ("memory_type", new_type), ("metadata", meta)) if v is not None]
        return UpdateResult(success=True, message="Memory metadata updated successfully",
                            content_hash=r.memory.content_hash, updated_fields=fields)


# -- mcp-memory-service 12.x's arguments to the memory_* tools -------------------------------------------
#
# mcp-memory-service 12.x names its tools as memfs does (memory_store, memory_search, memory_list,
# memory_delete, memory_update) with other arguments (its src/mcp_memory_service/tools/registry.py).
# Its shapes are rewritten here into the native tool's before the native schema validates them (issue
# #26: they used to be dropped silently, so `{"limit": 2}` gave 5 hits). What memfs cannot do is refused
# with an error naming the argument; an argument no shape knows is refused by the server (mcp_server).

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
