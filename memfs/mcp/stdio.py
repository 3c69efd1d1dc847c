"""`memfs mcp`: the MCP server over stdio (issue #10), reaching the store as every command does (#22):
through its owner, the memfs server at --url, or (--no-daemon) owning it in this process.

The tools are memfs.mcp.server's (the tool sets it builds); this module only runs them on stdio and
keeps stdout for the protocol.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .. import __version__
from ..stdio_guard import StdioGuard
from .gateway import Gateway, connect_to_owner
from .server import build_server

log = logging.getLogger("memfs.mcp")


def configure_logging(root: Path) -> None:
    """Logs to stderr and data/logs/mcp.log; stdout carries the protocol and nothing else."""
    import logging.handlers
    import sys

    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    logs = root / "data" / "logs"
    if logs.is_dir():
        try:
            handlers.append(logging.handlers.RotatingFileHandler(logs / "mcp.log", maxBytes=5 << 20, backupCount=3))
        except OSError as e:
            print(f"memfs mcp: cannot write {logs / 'mcp.log'}: {e.strerror}", file=sys.stderr)
    fmt = logging.Formatter(f"%(asctime)s %(levelname)s mcp[{os.getpid()}] %(name)s: %(message)s")
    for h in handlers:
        h.setFormatter(fmt)
        h.setLevel(logging.INFO)
    # The SDK puts a rich handler on the root logger; ours go to our handlers only, once.
    for name, level in (("memfs", logging.INFO), ("mcp", logging.WARNING)):
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False
        for h in handlers:
            logger.addHandler(h)


def serve_stdio(root: Path, *, tools: str = "native", create: bool = False, idle_exit: float | None = None,
                url: str | None = None, token: str | None = None, daemon: bool = True,
                import_kg: Path | None = None) -> None:
    """`memfs mcp`: serve until the client closes stdin. `url`: the store of the memfs server there;
    `daemon` False: own the store in this process; `import_kg`: a reference server's memory.jsonl,
    imported on the first tool call unless an import record says it was already (memfs.kg_import)."""
    configure_logging(root)
    connect = connect_to_owner(root, create=create, idle_exit=idle_exit, url=url, token=token, daemon=daemon)
    if import_kg is not None:
        from ..kg_import import importing_first

        connect = importing_first(connect, import_kg)
    gateway = Gateway(connect)
    server = build_server(gateway, tools)
    log.info("memfs mcp %s serving %s over stdio (tools: %s)", __version__, url or root, tools)
    gateway.warm()  # the owner loads its model while the client lists tools (#26)
    try:
        with StdioGuard():  # every line checked before the SDK reads it (#19)
            server.run("stdio")
    finally:
        gateway.close()
