"""The store as MCP tools for agents (issue #10; docs/mcp.md): over stdio (`memfs mcp`, memfs.mcp_stdio) and
over HTTP at /mcp on `memfs serve` (memfs.mcp_http).

Thin over the operations interface (memfs.ops), always through the store's owner (memfs.connect):
several agents' sessions, the CLI and the HTTP API share one writer, so none of them can corrupt the
store the way two processes sharing a database file do. The connection is made in the background at
start-up (Gateway.warm), never in the way of `initialize` and `tools/list`: they answer before any
model, chromadb or numpy is imported (the owner, started on demand, loads the model). This module
imports none of them.

Errors are tool errors (`isError`) whose message says what to do; the server keeps serving. Every
write is one operation of the owner, which writes a file atomically: a call that fails or a process
that is killed leaves the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import re
import threading
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, TypeVar

import anyio.to_thread
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations
from pydantic import BaseModel, Field

from . import __version__
from .documents import Memory
from .errors import MemfsError, NotFoundError
from .inputs import MAX_CONTENT_CHARS, MAX_K, MAX_PAGE, MAX_TAGS  # noqa: F401  (MAX_K, MAX_PAGE: mcp_compat)
from .query import Filters
from .schemas import K, PageLimit, When, filters

log = logging.getLogger("memfs.mcp")

# Limits (docs/mcp.md § Limits). MAX_CONTENT is the owner's own limit (memfs.limits.MAX_CONTENT_CHARS), checked
# here first so the message can say what to do; MAX_REQUEST_BYTES stays under the owner's 1 MB body limit.
MAX_CONTENT = MAX_CONTENT_CHARS  # characters in one memory: the store's own limit (memfs/limits.py)
MAX_REQUEST_BYTES = 1_000_000  # content + metadata as JSON
# k, a page and tags per memory: the core's limits (memfs.inputs), the same through every door (#19:
# MCP once capped k and a page at 100 and refused ids over 200 characters, which made them unreachable).
MAX_DELETE = 1000  # memories one filtered delete removes
TOOL_SETS = ("native", "compat", "graph", "all")

T = TypeVar("T")

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
# An update overwrites what it changes; calling it twice with the same arguments changes nothing more.
OVERWRITE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
DELETE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)


# -- the connection to the owner ----------------------------------------------------------------------


class Gateway:
    """The operations of one store, connected on first use; one call at a time per MCP session.

    `connect` is injected so plumbing tests can hand in any Operations object.
    """

    def __init__(self, connect: Callable[[], Any]):
        self._connect = connect
        self._ops: Any = None
        self._lock: Any = threading.Lock()
        self._roots: list[str] = []  # store paths to show relative in messages (an HTTP client's view)

    @classmethod
    def of(cls, ops: Any) -> "Gateway":
        """Over operations already open and safe to call from several threads (the owner's own, for
        /mcp on `memfs serve`): calls run side by side, as the HTTP API's do. Messages name files from
        the store's root, as the API's do (#15), so stdio (through the API) and /mcp say the same."""
        gw = cls(lambda: ops)
        gw._ops = ops
        gw._lock = contextlib.nullcontext()
        root = getattr(getattr(ops, "layout", None), "root", None)
        if root is not None:
            gw._roots = sorted({str(root), str(Path(root).resolve())}, key=len, reverse=True)
        return gw

    def message(self, e: Exception) -> str:
        text = str(e)
        for r in self._roots:
            text = text.replace(r + "/", "").replace(r, ".")
        return text

    def call(self, fn: Callable[[Any], T]) -> T:
        with self._lock:
            if self._ops is None:
                log.info("connecting to the store's owner (starting one if none runs)")
                self._ops = self._connect()
            return fn(self._ops)

    async def run(self, fn: Callable[[Any], T]) -> T:
        """`fn(ops)` in a worker thread (the operations block); a MemfsError becomes a tool error."""
        try:
            return await anyio.to_thread.run_sync(self.call, fn)
        except ToolError:
            raise
        except MemfsError as e:
            log.info("tool error: %s", e)
            raise ToolError(self.message(e)) from None

    def warm(self) -> None:
        """Connect in the background now, not on the first tool call: the owner (started on demand)
        loads the model while the client is still listing tools (issue #26: the first search from
        cold waited for the whole start). A failure here is only logged; the first call reports it."""
        def connect() -> None:
            try:
                self.call(lambda ops: None)
            except Exception as e:  # the first tool call connects again and says what went wrong
                log.info("warming the store's owner failed: %s", e)
        threading.Thread(target=connect, name="memfs-mcp-warm", daemon=True).start()

    def close(self) -> None:
        with self._lock:
            if self._ops is not None:
                self._ops.close()
                self._ops = None


def connect_to_owner(root: Path, *, create: bool = False, idle_exit: float | None = None, url: str | None = None,
                     token: str | None = None, daemon: bool = True) -> Callable[[], Any]:
    """How the Gateway connects: to the server at `url` (with `token`); else through the store's owner,
    started on demand (it loads the model, not us); with `daemon` False, by owning the store here."""
    def connect():
        from .connect import DEFAULT_IDLE_EXIT, connect as connect_store

        return connect_store(root, url=url, token=token, daemon=daemon, needs_model=True, create=create,
                             idle_exit=idle_exit or DEFAULT_IDLE_EXIT)
    return connect


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


def tool(server: MCPServer, annotations: ToolAnnotations):
    """Register a tool, its docstring (dedented) as the description the model reads."""
    def decorate(fn):
        server.add_tool(fn, description=inspect.cleandoc(fn.__doc__ or ""), annotations=annotations)
        return fn
    return decorate


def memory_out(m: Memory, path: str) -> MemoryOut:
    d = m.to_dict()
    return MemoryOut(id=m.id, content=m.content, tags=list(m.tags), type=m.type, metadata=m.metadata,
                     created_at=d["created_at"], updated_at=d["updated_at"], content_hash=m.content_hash, path=path)


# -- checks made before anything is sent --------------------------------------------------------------

_HASH = re.compile(r"^[0-9a-fA-F]{64}$")
_BAD_ID = re.compile(r"[\x00-\x1f\x7f]")


def check_content(content: str, metadata: dict | None = None) -> None:
    if not content.strip():
        raise ToolError("content is empty: give the text to remember")
    if len(content) > MAX_CONTENT:
        raise ToolError(f"content is {len(content)} characters; one memory holds at most {MAX_CONTENT}. "
                        "Split it into several memories, or store a summary and where the full text lives")
    size = len(json.dumps({"content": content, "metadata": metadata or {}}, ensure_ascii=False).encode())
    if size > MAX_REQUEST_BYTES:
        raise ToolError(f"content and metadata take {size} bytes as JSON; at most {MAX_REQUEST_BYTES} fit in "
                        "one call. Split the content into several memories or trim the metadata")


def check_ref(ref: str) -> str:
    """An id or a content hash as given; refuse what neither can be (control characters, a page of text)."""
    # Not stripped: an id is exact, as every other door takes it (#19: "mem-01 " found mem-01 here only).
    if not ref.strip() or _BAD_ID.search(ref):
        raise ToolError(f"{ref[:60]!r} is not a memory id or content hash; memory_search or memory_list "
                        "show the ids")
    return ref


def resolve(ops, ref: str):
    """The MemoryRecord for an id, or for a content hash (what mcp-memory-service names memories by)."""
    try:
        return ops.get(ref)
    except NotFoundError:
        if not _HASH.match(ref):
            raise NotFoundError(f"no memory with id {ref!r}; memory_search or memory_list show the ids") from None
    return ops.find(content_hash=ref)


def make_filters(tags: list[str] | None = None, match: str = "any", type: str | None = None,
                 since: str | None = None, until: str | None = None) -> Filters:
    try:  # times: memfs.timeparse, as for every door (#19: ISO only here once)
        return filters([t.strip() for t in tags or () if t.strip()], match, type or None, since, until)
    except MemfsError as e:
        raise ToolError(str(e)) from None


# -- the server ---------------------------------------------------------------------------------------

INSTRUCTIONS = """\
Long-term memory that persists across sessions, kept as JSON files the user can read and edit.
Store facts, decisions and preferences worth remembering with memory_store; before answering from
prior context, look with memory_search (it finds paraphrases, not only the same words). Every memory
has an id; memory_get, memory_update and memory_delete take it (or its content_hash)."""


class StrictServer(MCPServer):
    """An MCPServer that refuses arguments a tool does not take (the SDK drops them silently), after
    rewriting the argument shapes of other servers' same-named tools (`shapes`: tool -> args -> args)."""

    def __init__(self, *args: Any, shapes: dict[str, Callable[[dict], dict]] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.shapes = shapes or {}
        self._takes: dict[str, list[str]] = {}

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Any = None) -> Any:
        if name in self.shapes:
            arguments = self.shapes[name](dict(arguments))
        if not self._takes:
            self._takes = {t.name: list(t.input_schema.get("properties", {})) for t in await self.list_tools()}
        takes = self._takes.get(name)
        unknown = sorted(set(arguments) - set(takes)) if takes is not None else []
        if unknown:
            raise ToolError(f"{name} does not take {', '.join(unknown)}: it takes "
                            f"{', '.join(takes) or 'no arguments'} (see tools/list for what each means)")
        return await super().call_tool(name, arguments, context)


def build_server(gateway: Gateway, tools: str = "native") -> MCPServer:
    """An MCPServer with the native tools, mcp-memory-service's names (memfs.mcp_compat), the reference
    memory server's knowledge graph (memfs.mcp_graph), or all of them. The native tools also understand
    mcp-memory-service 12.x's arguments to its tools of the same names."""
    if tools not in TOOL_SETS:
        raise ValueError(f"MEMFS_MCP_TOOLS must be one of {', '.join(TOOL_SETS)}, not {tools!r}")
    from .mcp_compat import MMS_ARGUMENTS

    server = StrictServer("memfs", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING",
                          shapes=MMS_ARGUMENTS if tools in ("native", "all") else None)
    if tools in ("native", "all"):
        add_native_tools(server, gateway)
    if tools in ("compat", "all"):
        from .mcp_compat import add_compat_tools

        add_compat_tools(server, gateway)
    if tools in ("graph", "all"):
        from .mcp_graph import add_graph_tools

        add_graph_tools(server, gateway)
    return server


# A tag's length is the core's to check (memfs.inputs.MAX_TAG_CHARS), as for HTTP and the CLI.
Tags = Annotated[list[str], Field(max_length=MAX_TAGS)]
Since = Annotated[When, Field(description="Only memories created at or after this time: 2025-01-31, ISO-8601, "
                                          "or relative (7d, 12h, yesterday, last week).")]
Until = Annotated[When, Field(description="Only memories created before this time (the same forms as since).")]
Match = Annotated[Literal["any", "all"], Field(description="With several tags: memories with any of them, or all.")]
Ref = Annotated[str, Field(description="The memory's id (or its content_hash).")]


def add_native_tools(server: MCPServer, gw: Gateway) -> None:
    @tool(server, WRITE)
    async def memory_store(
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
        r = await gw.run(lambda ops: ops.add(content, tags=tags, type=type, metadata=metadata))
        return StoreOut(id=r.memory.id, path=r.path, duplicate=r.duplicate, content_hash=r.memory.content_hash)

    @tool(server, READ)
    async def memory_search(
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
        result = await gw.run(lambda ops: ops.search(query, k=k, mode=mode, filters=filters, min_score=min_score))
        hits = [HitOut(**memory_out(h.memory, h.path).model_dump(), rank=i, score=h.score, ranks=h.ranks)
                for i, h in enumerate(result.hits, 1)]
        return SearchOut(hits=hits, note=result.note)

    @tool(server, READ)
    async def memory_get(id: Ref) -> MemoryOut:
        """Read one memory in full by its id (or content_hash), as its file holds it now.

        Use it after a search or list when you need the whole memory, or to check one before updating it.
        Returns the memory: id, content, tags, type, metadata, times, content_hash and its file's path.
        """
        ref = check_ref(id)
        r = await gw.run(lambda ops: resolve(ops, ref))
        return memory_out(r.memory, r.path)

    @tool(server, READ)
    async def memory_list(
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
        page = await gw.run(lambda ops: ops.list(filters, limit=limit, cursor=cursor))
        return ListOut(memories=[memory_out(r.memory, r.path) for r in page.memories], next_cursor=page.next_cursor)

    @tool(server, OVERWRITE)
    async def memory_update(
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
        r = await gw.run(update)
        return memory_out(r.memory, r.path)

    @tool(server, DELETE)
    async def memory_delete(
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
            removed = await gw.run(remove_one)
            return DeleteOut(removed=removed, count=len(removed), dry_run=bool(dry_run))
        filters = make_filters(tags, match, type, since, until)
        dry = True if dry_run is None else dry_run
        r = await gw.run(lambda ops: ops.remove_matching(filters, dry_run=dry, limit=MAX_DELETE))
        return DeleteOut(removed=r.removed, count=len(r.removed), dry_run=r.dry_run)

    @tool(server, READ)
    async def memory_stats() -> StatsOut:
        """How much is stored: memories, types, distinct tags, bytes, invalid files, index sizes, disk use.

        Use it to answer "how many memories do I have" or to check the store before a cleanup.
        """
        s = await gw.run(lambda ops: ops.stats())
        return StatsOut(**{k: v for k, v in s.to_dict().items() if k in StatsOut.model_fields})

    @tool(server, READ)
    async def memory_health() -> HealthOut:
        """Whether the store answers: its owner process, whether the model is loaded, index state.

        Use it when other memory tools fail or seem slow. The first call starts the store's owner if
        none runs (loading the model takes a few seconds).
        """
        def health(ops):
            return ops.health(), ops.status()
        h, s = await gw.run(health)
        return HealthOut(status=h.status, version=h.version, model_loaded=h.model_loaded or s.model_loaded,
                         owner_pid=s.pid, owner_started_by=s.started_by, owner_idle_exit=s.idle_exit, index=h.index)

    @tool(server, WRITE)
    async def memory_backup(
        action: Annotated[Literal["create", "list", "verify"], Field(
            description="create: a new backup archive; list: the backups; verify: list, reading each backup whole to prove it restorable.")],
    ) -> BackupOut:
        """Make a backup of the whole store, or list the backups (verify: and check their checksums).

        Use create before a large cleanup or when the user asks. Backups are never deleted through MCP,
        and restoring one is left to the user (`memfs`/`manage_data.py restore`): a model cannot roll the
        store back. Returns the new archive, or the list of backups.
        """
        if action == "create":
            r = await gw.run(lambda ops: ops.backup(prune=False))
            return BackupOut(action=action, created=r.to_dict(), backups=None)
        listing = await gw.run(lambda ops: ops.list_backups(verify="deep" if action == "verify" else None))
        rows = [{k: v for k, v in b.to_dict().items() if k != "retention"} for b in listing.backups]
        return BackupOut(action=action, created=None, backups=rows, backup_dir=listing.backup_dir)
