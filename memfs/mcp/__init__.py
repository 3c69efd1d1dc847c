"""The store as MCP tools for agents (issue #10; docs/mcp.md), one module per job:

- gateway: the connection to the store's owner (Gateway, connect_to_owner)
- common: what every tool set shares: limits, annotations, the ToolSet base, checks made before a call
- native: the memfs tools (memory_store, memory_search, ...)
- compat, compat_inputs, compat_args: mcp-memory-service's tools, its input forms (comma tags, time
  expressions), and its 12.x arguments to the native tools rewritten into theirs
- graph: the MCP reference memory server's knowledge-graph tools and resource
- server: StrictServer and build_server over the registry of tool sets
- stdio: `memfs mcp`, the server over stdio (MCP over HTTP at /mcp: memfs.http.mcp)

Nothing here imports a model, chromadb or numpy: `initialize` and `tools/list` answer before them.
Inside this package `mcp` still names the SDK (imports are absolute).
"""
