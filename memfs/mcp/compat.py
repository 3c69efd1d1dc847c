"""mcp-memory-service's tool names and argument shapes, over the same operations (docs/mcp.md § Compatibility).

So the prompts, hooks and habits of mcp-memory-service users keep working: `store_memory`, `retrieve_memory`,
`recall_memory`, `search_by_tag`, `delete_memory`, `delete_by_tag`, `exact_match_retrieve`, `list_memories`,
`check_database_health`, `update_memory_metadata`. Memories are named by content hash here, as there;
every tool that takes one also takes a memfs id. Listed when MEMFS_MCP_TOOLS is compat or all.
"""

from __future__ import annotations

from typing import Annotated, Any

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from ..documents import Memory, content_hash, format_time
from ..errors import MemfsError, NotFoundError
from ..inputs import MAX_K, MAX_PAGE, MAX_QUERY_CHARS
from ..query import Filters
from .common import (DELETE, MAX_DELETE, OVERWRITE, READ, WRITE, ToolSet, check_content, check_ref, make_filters,
                     resolve, tool)
from .compat_inputs import parse_timeframe, split_tags


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


TagsArg = Annotated[list[str] | str | None, Field(description='A list of tags, or a comma-separated string: "a,b".')]


class CompatTools(ToolSet):
    """mcp-memory-service's tools, by its names and with its arguments and results."""

    @tool(WRITE)
    async def store_memory(
        self,
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
        r = await self.gw.run(lambda ops: ops.add(content, tags=all_tags, type=mem_type, metadata=meta))
        h = r.memory.content_hash
        if r.duplicate:
            return StoreResult(success=False, message=f"Duplicate content detected: already stored (hash {h})",
                               content_hash=h, id=r.memory.id)
        return StoreResult(success=True, message="Memory stored successfully", content_hash=h, id=r.memory.id)

    @tool(READ)
    async def retrieve_memory(
        self,
        query: Annotated[str, Field(description="What to look for, in natural language.", max_length=10_000)],
        n_results: Annotated[int, Field(ge=1, le=MAX_K, description="How many memories to return.")] = 5,
        min_similarity: Annotated[float, Field(ge=0.0, le=1.0, description="Drop results below this similarity.")] = 0.0,
    ) -> MemoriesResult:
        """Semantic search (mcp-memory-service's retrieve_memory): the memories closest in meaning to the query.

        Returns memories best first, each with similarity_score (cosine similarity, 0 to 1).
        """
        if not query.strip():
            raise ToolError("query is empty: say what to look for")
        result = await self.gw.run(lambda ops: ops.search(query, k=n_results, mode="semantic", min_score=0))
        memories = [compat_memory(h.memory, h.score) for h in result.hits if h.score >= min_similarity]
        return MemoriesResult(memories=memories, total_results=len(memories), query=query)

    @tool(READ)
    async def recall_memory(
        self,
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
            result = await self.gw.run(lambda ops: ops.search(rest, k=n_results, mode="semantic", filters=filters,
                                                               min_score=0))
            memories = [compat_memory(h.memory, h.score) for h in result.hits]
        elif since is not None:
            page = await self.gw.run(lambda ops: ops.list(filters, limit=n_results))
            memories = [compat_memory(r.memory) for r in page.memories]
        else:
            raise ToolError('query is empty: say what to recall, e.g. "what did we decide last week"')
        return MemoriesResult(memories=memories, total_results=len(memories), query=query)

    @tool(READ)
    async def search_by_tag(
        self,
        tags: Annotated[list[str] | str, Field(description='Tags: a list, or a comma-separated string.')],
        match_all: Annotated[bool, Field(description="true: memories with all the tags; false: any of them.")] = False,
    ) -> MemoriesResult:
        """Memories with the given tags, newest first (mcp-memory-service's search_by_tag; at most 100)."""
        wanted = split_tags(tags)
        if not wanted:
            raise ToolError("give at least one tag")
        filters = make_filters(wanted, "all" if match_all else "any")
        page = await self.gw.run(lambda ops: ops.list(filters, limit=MAX_PAGE))
        memories = [compat_memory(r.memory) for r in page.memories]
        return MemoriesResult(memories=memories, total_results=len(memories), search_tags=wanted, match_all=match_all)

    @tool(DELETE)
    async def delete_memory(
        self,
        content_hash: Annotated[str, Field(description="The memory's content_hash (a memfs id works too).")],
    ) -> DeleteResult:
        """Delete one memory by its content hash (mcp-memory-service's delete_memory)."""
        ref = check_ref(content_hash)

        def remove(ops):
            try:
                return ops.remove(resolve(ops, ref).memory.id)
            except NotFoundError:
                return None  # mcp-memory-service answers success: false here, not an error
        removed = await self.gw.run(remove)
        if removed is None:
            return DeleteResult(success=False, message=f"Memory not found: {ref}", content_hash=ref)
        return DeleteResult(success=True, message="Memory deleted successfully", content_hash=removed.memory.content_hash,
                            deleted_count=1, deleted_ids=[removed.memory.id])

    @tool(DELETE)
    async def delete_by_tag(
        self,
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
        r = await self.gw.run(lambda ops: ops.remove_matching(filters, dry_run=dry_run, limit=MAX_DELETE))
        verb = "would be deleted" if dry_run else "deleted"
        return DeleteResult(success=True, message=f"{len(r.removed)} memories {verb} with tags {', '.join(wanted)}",
                            deleted_count=len(r.removed), deleted_ids=r.removed)

    @tool(READ)
    async def exact_match_retrieve(
        self,
        content: Annotated[str, Field(description="The exact content of the memory, character for character.")],
    ) -> MemoriesResult:
        """The memory whose content is exactly this text (mcp-memory-service's exact_match_retrieve)."""
        h = content_hash(content)

        def find(ops):
            try:
                return [ops.find(content_hash=h)]
            except NotFoundError:
                return []
        found = await self.gw.run(find)
        memories = [compat_memory(r.memory) for r in found]
        return MemoriesResult(memories=memories, total_results=len(memories))

    @tool(READ)
    async def list_memories(
        self,
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
        result, total = await self.gw.run(listing)
        return ListResult(memories=[compat_memory(r.memory) for r in result.memories], page=page, page_size=page_size,
                          total=total, has_more=result.next_cursor is not None)

    @tool(READ)
    async def check_database_health(self) -> HealthResult:
        """Whether the store works, and its statistics (mcp-memory-service's check_database_health)."""
        def check(ops):
            return ops.health(), ops.stats()
        h, s = await self.gw.run(check)
        stats = {"total_memories": s.memories, "total_tags": s.distinct_tags, "memory_types": s.types,
                 "storage_size": sum(s.disk_bytes.values()), "vectors": s.vectors, "invalid_files": s.invalid_files,
                 "embedding_model": s.model}
        return HealthResult(status="healthy" if h.status == "ok" else "unhealthy", backend="memfs (JSON files)",
                            statistics=stats, version=h.version)

    @tool(OVERWRITE)
    async def update_memory_metadata(
        self,
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
        r = await self.gw.run(update)
        fields = [f for f, v in (("tags", new_tags), ("memory_type", new_type), ("metadata", meta)) if v is not None]
        return UpdateResult(success=True, message="Memory metadata updated successfully",
                            content_hash=r.memory.content_hash, updated_fields=fields)

