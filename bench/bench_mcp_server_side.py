"""The server's share of an /mcp tool call (issue #22), with no client and no socket in the way.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_mcp_server_side.py [--calls 2000]

Drives the real app's ASGI callable (memfs.http.app.create_app over an in-process store) with a
`tools/call memory_get` as the SDK's client sends it at protocol 2026-07-28 (one POST, routing
headers), and `GET /memories/{id}` as the anchor, in 50-call blocks taking turns. A third block sends
the same tool call with /mcp moved behind every API router, where it was before session 10, so the
route's order is measured in the same run. Prints the p50 of each and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from memfs.http.app import create_app
from memfs.local import LocalOperations

HEADERS = {"host": "127.0.0.1", "content-type": "application/json", "accept": "application/json, text/event-stream",
           "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": "memory_get"}
META = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}}


def scope(method: str, path: str, headers: dict) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "state": {},
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 80)}


async def call(app, method: str, path: str, body: bytes = b"") -> float:
    """One request through the app; its time in seconds (a non-200 answer stops the bench)."""
    headers = {**HEADERS, "content-length": str(len(body))} if body else {"host": "127.0.0.1"}
    delivered, out = False, []

    async def receive():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)  # no disconnect while the app answers

    async def send(message):
        out.append(message)

    t0 = time.perf_counter()
    await app(scope(method, path, headers), receive, send)
    elapsed = time.perf_counter() - t0
    if out[0]["status"] != 200:
        raise SystemExit(f"{method} {path}: {out[0]['status']} {b''.join(m.get('body', b'') for m in out[1:])!r}")
    return elapsed


async def measure(app, memory_id: str, calls: int) -> dict[str, float]:
    routes = app.router.routes
    mcp_route = next(r for r in routes if getattr(r, "path", "") == "/mcp")
    times: dict[str, list[float]] = {"mcp": [], "mcp, route last": [], "api": []}
    async with app.router.lifespan_context(app):
        for block in range(-1, calls // 50):  # block -1 warms every path and is not counted
            for side in times:
                routes.remove(mcp_route)
                if side == "mcp, route last":
                    routes.append(mcp_route)
                else:
                    routes.insert(0, mcp_route)
                for i in range(50):
                    if side == "api":
                        t = await call(app, "GET", f"/memories/{memory_id}")
                    else:
                        body = json.dumps({"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {
                            "name": "memory_get", "arguments": {"id": memory_id}, "_meta": META}}).encode()
                        t = await call(app, "POST", "/mcp", body)
                    if block >= 0:
                        times[side].append(t)
    return {side: statistics.median(ts) * 1000 for side, ts in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=2000, help="calls of each kind (default 2000)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, LocalOperations.open(Path(tmp) / "store") as ops:
        memory_id = ops.add("a memory to read back, over MCP and over the JSON API").memory.id
        p50 = asyncio.run(measure(create_app(ops), memory_id, a.calls))
    api = p50["api"]
    print(f"server side, p50 of {a.calls} calls each (ms): GET /memories/{{id}} {api:.3f}")
    for side in ("mcp", "mcp, route last"):
        print(f"  memory_get over /mcp ({side}): {p50[side]:.3f} | ÷ the API {p50[side] / api:.2f}")


if __name__ == "__main__":
    main()
