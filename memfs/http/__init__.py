"""memfs's HTTP doors (issue #19: one room, one job), served by `memfs serve` (memfs.daemon).

- `app`: `create_app`, the owner's API assembled from the routers below, and the extended-memory port;
- `guard`: the ASGI middleware in front of every listener (token, header/body limits, body timeout);
- `errors`: the JSON error bodies and the one set of exception handlers every app installs;
- `deps`: what a route asks for (the operations, readiness, a path on the owner's machine);
- one module per resource: `admin`, `memories`, `search`, `backups`, `transfer`, `kv`, `graph`;
- `extended`: the extended-memory service's API; `mcp`: MCP over streamable HTTP at /mcp.

The web page's routes are memfs.web's, the sync routes memfs.sync.http's.
"""
