"""The MCP server (docs/mcp.md): StrictServer, and build_server over the registry of tool sets.

A tool set is a ToolSet class (memfs.mcp.common) in its own module; TOOL_SETS names them. None of them
imports this module: the server knows the sets, the sets know only what they share.
"""

from __future__ import annotations

from typing import Any, Callable

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from opentelemetry import trace  # the MCP SDK's own dependency: its spans are made with it

from .. import __version__
from .common import ToolSet
from .compat import CompatTools
from .gateway import Gateway
from .graph import GraphTools
from .native import NativeTools

# name -> its tools, in the order `all` lists them (MEMFS_MCP_TOOLS, `memfs mcp --tools`).
TOOL_SETS: dict[str, type[ToolSet]] = {"native": NativeTools, "compat": CompatTools, "graph": GraphTools}
CHOICES = (*TOOL_SETS, "all")

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
    """An MCPServer with the native tools, mcp-memory-service's names (memfs.mcp.compat), the reference
    memory server's knowledge graph (memfs.mcp.graph), or all of them. The native tools also understand
    mcp-memory-service 12.x's arguments to its tools of the same names (memfs.mcp.compat_args)."""
    if tools not in CHOICES:
        raise ValueError(f"MEMFS_MCP_TOOLS must be one of {', '.join(CHOICES)}, not {tools!r}")
    sets = [TOOL_SETS[name](gateway) for name in (TOOL_SETS if tools == "all" else (tools,))]
    shapes = {name: shape for s in sets for name, shape in s.shapes.items()}
    server = StrictServer("memfs", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING",
                          shapes=shapes)
    for s in sets:
        s.register(server)
    if not tracing_configured():
        # The SDK's span per message is a no-op without a tracer provider, and still cost /mcp ~50 µs a
        # tool call in context managers and span objects (#22: 5 % of the call). The SDK says to drop it
        # from this list to opt out; it stays when a provider is set (opentelemetry-instrument).
        server.middleware[:] = [m for m in server.middleware if type(m).__name__ != SDK_TRACING_MIDDLEWARE]
    return server


SDK_TRACING_MIDDLEWARE = "OpenTelemetryMiddleware"  # what the SDK puts first in Server.middleware


def tracing_configured() -> bool:
    """Whether an OpenTelemetry tracer provider is set, so that spans go somewhere (the API's default
    provider, a proxy, only becomes one when something sets a real provider: memfs never does)."""
    return not isinstance(trace.get_tracer_provider(), (trace.ProxyTracerProvider, trace.NoOpTracerProvider))
