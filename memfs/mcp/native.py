"""The native MCP tools (docs/mcp.md § Tools): memory_store, memory_search, memory_get, memory_list,
memory_update, memory_delete, memory_stats, memory_health, memory_backup; their argument types and
output models (the schemas clients see). They also take mcp-memory-service 12.x's arguments to its tools
of the same names (memfs.mcp.compat_args).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from ..documents import Memory
from ..inputs import MAX_TAGS
from ..schemas import K, PageLimit, When
from .common import (DELETE, MAX_DELETE, OVERWRITE, READ, WRITE, ToolSet, check_content, check_ref, make_filters,
                     resolve, tool)
from .compat_args import MMS_ARGUMENTS

# -- what tools return (the output schemas) -----------------------------------------------------------


class MemoryOut(BaseModel):
    """One memory as its file holds it."""

    id: str = Field(description="The memory's id: pass it to memory_get, memory_update, memory_delete.")
    content: str
    tags: list[str]
    type: str
    metadata: dict[str, Any]
    created_at: str = Field(description="UTC, ISO-8601")
    updated_at: str = Field(description="UTC, ISO-8601")
    content_hash: str = Field(description="SHA-256 of the content (hex); accepted wherever an id is.")
    path: str = Field(description="The memory's JSON file, relative to data/memories/.")


class HitOut(MemoryOut):
    rank: int = Field(description="1 is the best match.")
    score: float = Field(description="Higher is better. Semantic: cosine similarity; hybrid: fused rank score.")
    ranks: dict[str, int] = Field(description="Rank in each index that found it (semantic, keyword).")


class StoreOut(BaseModel):
    id: str
    path: str
    duplicate: bool = Field(description="True: this content was already stored, and id is that memory's.")
    content_hash: str


class SearchOut(BaseModel):
    hits: list[HitOut]
    note: str | None = None


class ListOut(BaseModel):
    memories: list[MemoryOut]
    next_cursor: str | None = Field(description="Pass it as cursor for the next page; null: this was the last.")


class DeleteOut(BaseModel):
    removed: list[str] = Field(description="Ids removed, or with dry_run the ids that would be.")
    count: int
    dry_run: bool


class StatsOut(BaseModel):
    memories: int
    types: dict[str, int]
    distinct_tags: int
    content_bytes: int
    invalid_files: int = Field(description="Files under data/memories/ that do not parse; `memfs validate` names them.")
    vectors: int
    model: str
    last_reconcile: str | None
    disk_bytes: dict[str, int]


class HealthOut(BaseModel):
    status: str = Field(description="ok, or starting while the owner's first reconcile runs.")
    version: str
    model_loaded: bool
    owner_pid: int | None
    owner_started_by: str | None
    owner_idle_exit: float | None = Field(description="Seconds without requests after which the owner exits.")
    index: dict[str, Any] | None = Field(description="Catalog, vector index and watcher state.")


class BackupOut(BaseModel):
    action: str
    created: dict[str, Any] | None = Field(description="For create: archive path, name, size, md5 file.")
    backups: list[dict[str, Any]] | None = Field(
        description="For list and verify: name, created, size, status (verify: ok = restorable, read whole "
                    "and checked; mismatch / corrupt / missing / newer format = not restorable; list: unverified).")
    backup_dir: str | None = None


def memory_out(m: Memory, path: str) -> MemoryOut:
    d = m.to_dict()
    return MemoryOut(id=m.id, content=m.content, tags=list(m.tags), type=m.type, metadata=m.metadata,
                     created_at=d["created_at"], updated_at=d["updated_at"], content_hash=m.content_hash, path=path)


# A tag's length is the core's to check (memfs.inputs.MAX_TAG_CHARS), as for HTTP and the CLI.
Tags = Annotated[list[str], Field(max_length=MAX_TAGS)]
Since = Annotated[When, Field(description="Only memories created at or after this time: 2025-01-31, ISO-8601, "
                                          "or relative (7d, 12h, yesterday, last week).")]
Until = Annotated[When, Field(description="Only memories created before this time (the same forms as since).")]
Match = Annotated[Literal["any", "all"], Field(description="With several tags: memories with any of them, or all.")]
Ref = Annotated[str, Field(description="The memory's id (or its content_hash).")]


class NativeTools(ToolSet):
    """memfs's own tools; mcp-memory-service 12.x's arguments to the same names are rewritten first."""

    shapes = MMS_ARGUMENTS

    @tool(WRITE)
    async def memory_store(
        self,
        content: Annotated[str, Field(description="The text to remember, self-contained: say who/what it is about.")],
        tags: Annotated[Tags, Field(description="Short labels to filter by later, e.g. [\"prefs\", \"ui\"].")] = [],
        type: Annotated[str, Field(description="A kind: note, fact, decision, preference, todo…", max_length=100)] = "note",
        metadata: Annotated[dict[str, Any], Field(description="Any JSON object kept with the memory.")] = {},
    ) -> StoreOut:
        """Remember something for later sessions: a fact, a decision, a preference, a lesson learned.

        Use it when the user tells you something worth keeping or asks you to remember. Storing the same
        content again does not make a copy: you get the existing memory's id with duplicate=true.
        Returns the new memory's id (for memory_get / memory_update / memory_delete), the file it was
        written to (under data/memories/), duplicate, and the content hash.
        """
        check_content(content, metadata)
        r = await self.gw.run(lambda ops: ops.add(content, tags=tags, type=type, metadata=metadata))
        return StoreOut(id=r.memory.id, path=r.path, duplicate=r.duplicate, content_hash=r.memory.content_hash)

    @tool(READ)
    async def memory_search(
        self,
        query: Annotated[str, Field(description="What you are looking for, in your own words.", max_length=10_000)],
        mode: Annotated[Literal["hybrid", "semantic", "keyword"],
                        Field(description="hybrid (default): meaning and words; semantic: meaning only; "
                                          "keyword: exact words, names, codes.")] = "hybrid",
        k: K = 5,
        tags: Annotated[Tags, Field(description="Only memories with these tags.")] = [],
        match: Match = "any",
        type: Annotated[str | None, Field(description="Only memories of this type.")] = None,
        since: Since = None,
        until: Until = None,
        min_score: Annotated[float | None, Field(
            description="Only hits scoring at least this (0-1). Left out: nothing comes back when no memory "
                        "is a good match (the note says so); 0: the nearest memories whatever they are.",
            ge=0, le=1)] = None,
    ) -> SearchOut:
        """Find stored memories relevant to a question or topic, best first.

        Use it before answering anything that may depend on earlier sessions (preferences, decisions,
        project facts). It matches meaning, so a paraphrase finds the memory. Filters (tags, type,
        since/until) apply before ranking. Returns up to k hits, each the full memory with its rank and
        score (0-1); an empty list and a note when no memory is a good match.
        """
        filters = make_filters(tags, match, type, since, until)
        if not query.strip():
            raise ToolError("query is empty: say what to look for (memory_list lists memories without a query)")
        result = await self.gw.run(lambda ops: ops.search(query, k=k, mode=mode, filters=filters, min_score=min_score))
        hits = [HitOut(**memory_out(h.memory, h.path).model_dump(), rank=i, score=h.score, ranks=h.ranks)
                for i, h in enumerate(result.hits, 1)]
        return SearchOut(hits=hits, note=result.note)

    @tool(READ)
    async def memory_get(self, id: Ref) -> MemoryOut:
        """Read one memory in full by its id (or content_hash), as its file holds it now.

        Use it after a search or list when you need the whole memory, or to check one before updating it.
        Returns the memory: id, content, tags, type, metadata, times, content_hash and its file's path.
        """
        ref = check_ref(id)
        r = await self.gw.run(lambda ops: resolve(ops, ref))
        return memory_out(r.memory, r.path)

    @tool(READ)
    async def memory_list(
        self,
        tags: Annotated[Tags, Field(description="Only memories with these tags.")] = [],
        match: Match = "any",
        type: Annotated[str | None, Field(description="Only memories of this type.")] = None,
        since: Since = None,
        until: Until = None,
        limit: PageLimit = 20,
        cursor: Annotated[str | None, Field(description="next_cursor from the previous page.")] = None,
    ) -> ListOut:
        """List memories, newest first, optionally filtered by tags, type and creation time.

        Use it to browse or to review what is stored (e.g. every memory tagged "todo"); to find memories
        about something, memory_search is better. Returns a page of memories and next_cursor (null on
        the last page).
        """
        filters = make_filters(tags, match, type, since, until)
        page = await self.gw.run(lambda ops: ops.list(filters, limit=limit, cursor=cursor))
        return ListOut(memories=[memory_out(r.memory, r.path) for r in page.memories], next_cursor=page.next_cursor)

    @tool(OVERWRITE)
    async def memory_update(
        self,
        id: Ref,
        content: Annotated[str | None, Field(description="New content, replacing the old.")] = None,
        add_tags: Annotated[Tags, Field(description="Tags to add.")] = [],
        remove_tags: Annotated[Tags, Field(description="Tags to remove.")] = [],
        type: Annotated[str | None, Field(description="New type.", max_length=100)] = None,
        metadata: Annotated[dict[str, Any] | None, Field(description="Keys to set; merged into the existing metadata.")] = None,
    ) -> MemoryOut:
        """Change a stored memory in place: its content, tags, type or metadata. The id stays the same.

        Use it when a remembered fact changed (correct it rather than storing a contradicting memory).
        Give only what changes. Returns the memory as it is now.
        """
        ref = check_ref(id)
        if content is None and not add_tags and not remove_tags and type is None and not metadata:
            raise ToolError("nothing to change: give content, add_tags, remove_tags, type or metadata")
        if content is not None:
            check_content(content, metadata)

        def update(ops):
            mem_id = resolve(ops, ref).memory.id
            return ops.update(mem_id, content=content, add_tags=add_tags, remove_tags=remove_tags, type=type,
                              metadata=metadata)
        r = await self.gw.run(update)
        return memory_out(r.memory, r.path)

    @tool(DELETE)
    async def memory_delete(
        self,
        id: Annotated[str | None, Field(description="Delete this one memory (id or content_hash).")] = None,
        tags: Annotated[Tags, Field(description="Or: delete the memories with these tags.")] = [],
        match: Match = "any",
        type: Annotated[str | None, Field(description="Or: … of this type.")] = None,
        since: Since = None,
        until: Until = None,
        dry_run: Annotated[bool | None, Field(
            description="Only say what would be deleted. Default: false for an id, TRUE for filters.")] = None,
    ) -> DeleteOut:
        """Delete a memory by id, or every memory matching filters (tags, type, since/until).

        Deleting by filters is a dry run unless dry_run=false is given: call once to see which ids would
        go, confirm with the user, then call again with dry_run=false. At most 1000 memories per call.
        The memory's file is deleted; a backup (memory_backup) keeps an earlier copy. Returns the ids
        removed (or that would be).
        """
        filtered = bool(tags) or type is not None or since is not None or until is not None
        if (id is None) == (not filtered):
            raise ToolError("give either id (one memory) or filters (tags, type, since, until), not both or neither")
        if id is not None:
            ref = check_ref(id)

            def remove_one(ops):
                mem_id = resolve(ops, ref).memory.id
                if dry_run:
                    return [mem_id]
                return [ops.remove(mem_id).memory.id]
            removed = await self.gw.run(remove_one)
            return DeleteOut(removed=removed, count=len(removed), dry_run=bool(dry_run))
        filters = make_filters(tags, match, type, since, until)
        dry = True if dry_run is None else dry_run
        r = await self.gw.run(lambda ops: ops.remove_matching(filters, dry_run=dry, limit=MAX_DELETE))
        return DeleteOut(removed=r.removed, count=len(r.removed), dry_run=r.dry_run)

    @tool(READ)
    async def memory_stats(self) -> StatsOut:
        """How much is stored: memories, types, distinct tags, bytes, invalid files, index sizes, disk use.

        Use it to answer "how many memories do I have" or to check the store before a cleanup.
        """
        s = await self.gw.run(lambda ops: ops.stats())
        return StatsOut(**{k: v for k, v in s.to_dict().items() if k in StatsOut.model_fields})

    @tool(READ)
    async def memory_health(self) -> HealthOut:
        """Whether the store answers: its owner process, whether the model is loaded, index state.

        Use it when other memory tools fail or seem slow. The first call starts the store's owner if
        none runs (loading the model takes a few seconds).
        """
        def health(ops):
            return ops.health(), ops.status()
        h, s = await self.gw.run(health)
        return HealthOut(status=h.status, version=h.version, model_loaded=h.model_loaded or s.model_loaded,
                         owner_pid=s.pid, owner_started_by=s.started_by, owner_idle_exit=s.idle_exit, index=h.index)

    @tool(WRITE)
    async def memory_backup(
        self,
        action: Annotated[Literal["create", "list", "verify"], Field(
            description="create: a new backup archive; list: the backups; verify: list, reading each backup whole to prove it restorable.")],
    ) -> BackupOut:
        """Make a backup of the whole store, or list the backups (verify: and check their checksums).

        Use create before a large cleanup or when the user asks. Backups are never deleted through MCP,
        and restoring one is left to the user (`memfs`/`manage_data.py restore`): a model cannot roll the
        store back. Returns the new archive, or the list of backups.
        """
        if action == "create":
            r = await self.gw.run(lambda ops: ops.backup(prune=False))
            return BackupOut(action=action, created=r.to_dict(), backups=None)
        listing = await self.gw.run(lambda ops: ops.list_backups(verify="deep" if action == "verify" else None))
        rows = [{k: v for k, v in b.to_dict().items() if k != "retention"} for b in listing.backups]
        return BackupOut(action=action, created=None, backups=rows, backup_dir=listing.backup_dir)

