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
import statistics
import tempfile
import time
from pathlib import Path

from bench_mcp_http import tool_call  # the request the SDK's client sends, as the end-to-end bench sends it
from memfs.http.app import create_app
from memfs.local import LocalOperations


def scope(method: str, path: str, headers: dict) -> dict:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
            "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "state": {},
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            "client": ("127.0.0.1", 5555), "server": ("127.0.0.1", 80)}


async def call(app, method: str, path: str, body: bytes = b"", headers: dict | None = None) -> float:
    """One request through the app; its time in seconds (a non-200 answer stops the bench)."""
    headers = {"host": "127.0.0.1", **(headers or {})} | ({"content-length": str(len(body))} if body else {})
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
                        headers, body = tool_call(i, "memory_get", {"id": memory_id})
                        t = await call(app, "POST", "/mcp", body, headers)
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
