"""The connection from the MCP tools to the store (docs/mcp.md): Gateway and connect_to_owner.

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
import logging
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

import anyio.to_thread
from mcp.server.mcpserver.exceptions import ToolError

from ..errors import MemfsError

log = logging.getLogger("memfs.mcp")

T = TypeVar("T")


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
        from ..connect import DEFAULT_IDLE_EXIT, connect as connect_store

        return connect_store(root, url=url, token=token, daemon=daemon, needs_model=True, create=create,
                             idle_exit=idle_exit or DEFAULT_IDLE_EXIT)
    return connect
