"""What every MCP tool set shares (docs/mcp.md § Limits): the limits checked before a call, the tool
annotations, the ToolSet base that registers a set's tools, and the checks and lookups the tools make
before anything is sent (check_content, check_ref, resolve, make_filters).
"""

from __future__ import annotations

import inspect
import json
import re
from typing import Callable

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from ..errors import MemfsError, NotFoundError
from ..inputs import MAX_CONTENT_CHARS
from ..query import Filters
from ..schemas import filters
from .gateway import Gateway

# Limits (docs/mcp.md § Limits). MAX_CONTENT is the owner's own limit (memfs.limits.MAX_CONTENT_CHARS), checked
# here first so the message can say what to do; MAX_REQUEST_BYTES stays under the owner's 1 MB body limit.
MAX_CONTENT = MAX_CONTENT_CHARS  # characters in one memory: the store's own limit (memfs/limits.py)
MAX_REQUEST_BYTES = 1_000_000  # content + metadata as JSON
# k, a page and tags per memory: the core's limits (memfs.inputs), the same through every door (#19:
# MCP once capped k and a page at 100 and refused ids over 200 characters, which made them unreachable).
MAX_DELETE = 1000  # memories one filtered delete removes

READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
# An update overwrites what it changes; calling it twice with the same arguments changes nothing more.
OVERWRITE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
DELETE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)


# -- a tool set ---------------------------------------------------------------------------------------


def tool(annotations: ToolAnnotations):
    """Mark a ToolSet method as a tool with these annotations; its docstring (dedented) is the
    description the model reads."""
    def mark(fn):
        fn.tool_annotations = annotations
        return fn
    return mark


class ToolSet:
    """The tools of one set over one gateway: its methods marked @tool, listed in the order they are
    defined. `shapes` (tool -> args -> args) rewrites other servers' arguments to its tools (StrictServer)."""

    shapes: dict[str, Callable[[dict], dict]] = {}

    def __init__(self, gw: Gateway):
        self.gw = gw

    def register(self, server: MCPServer) -> None:
        for name, fn in vars(type(self)).items():
            annotations = getattr(fn, "tool_annotations", None)
            if annotations is not None:
                server.add_tool(getattr(self, name), description=inspect.cleandoc(fn.__doc__ or ""),
                                annotations=annotations)


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
