#!/usr/bin/env python3
"""`memfs mcp` (issue 10), each figure beside its anchor from the same run.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_mcp.py [N] [--runs 10] [--batch 15]

- cold start to tools/list answered: spawn `memfs mcp` over stdio with the SDK's client, initialize,
  tools/list (goal < 1 s), p50/p95 over --runs; beside it, a bare `python -c pass` start
- 3 MCP sessions storing N memories between them (each its own `memfs mcp`, one owner) ÷ in-process
  LocalOperations.add of the same N texts on another fresh store, one at a time (goal ≥ 0.8); the model
  is warm on both sides before the clock starts, and the two sides take turns, a batch each, so that
  both see the same load on a shared machine
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from mcp.client import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

from conftest import filler_texts  # noqa: E402
from memfs.local import LocalOperations  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def params(root: Path) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "memfs", "--root", str(root), "mcp"],
                                 env=dict(os.environ))


async def cold_start(root: Path) -> float:
    t = time.perf_counter()
    async with Client(params(root)) as c:
        tools = await c.list_tools()
        elapsed = time.perf_counter() - t
    assert len(tools.tools) == 9
    return elapsed


def bare_python() -> float:
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - t


async def throughput(base: Path, texts: list[str], batch: int, sessions: int = 3) -> tuple[float, float]:
    """(in-process docs/s, MCP docs/s): the same texts into two fresh stores, batch by batch, the two
    sides alternating so both see the same load on a shared machine."""
    for name in ("local", "mcp"):
        subprocess.run([sys.executable, "-m", "memfs", "--root", str(base / name), "init"], check=True,
                       capture_output=True)
    local_time = mcp_time = 0.0
    with LocalOperations.open(base / "local") as ops:
        async with contextlib.AsyncExitStack() as stack:
            clients = [await stack.enter_async_context(Client(params(base / "mcp"), read_timeout_seconds=600))
                       for _ in range(sessions)]
            ops.add("warm-up: load the model before the clock starts")
            for s, c in enumerate(clients):  # the first call starts the owner, which loads the model
                r = await c.call_tool("memory_store", {"content": f"warm-up of session {s}"})
                assert not r.is_error, r.content

            async def store(c, chunk: list[str]) -> None:
                for text in chunk:
                    r = await c.call_tool("memory_store", {"content": text})
                    assert not r.is_error, r.content

            for start in range(0, len(texts), batch):
                chunk = texts[start:start + batch]
                t = time.perf_counter()
                for text in chunk:
                    ops.add(text)
                local_time += time.perf_counter() - t
                t = time.perf_counter()
                await asyncio.gather(*(store(c, chunk[i::sessions]) for i, c in enumerate(clients)))
                mcp_time += time.perf_counter() - t
    return len(texts) / local_time, len(texts) / mcp_time


def stop_owner(root: Path) -> None:
    subprocess.run([sys.executable, "-m", "memfs", "--root", str(root), "stop"], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=150)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=15, help="memories per turn of each side")
    args = ap.parse_args()
    texts = filler_texts(args.n)

    with tempfile.TemporaryDirectory(prefix="bench-mcp-") as tmp:
        base = Path(tmp)
        cold_root = base / "cold"
        subprocess.run([sys.executable, "-m", "memfs", "--root", str(cold_root), "init"], check=True,
                       capture_output=True)
        starts = [asyncio.run(cold_start(cold_root)) for _ in range(args.runs)]
        bare = [bare_python() for _ in range(args.runs)]
        print(f"cold start to tools/list: p50 {statistics.median(starts):.3f} s, p95 {pct(starts, 95):.3f} s "
              f"(bare python start p50 {statistics.median(bare):.3f} s; goal < 1 s)")

        try:
            lm, rm = asyncio.run(throughput(base / "tp", texts, args.batch))
        finally:
            stop_owner(base / "tp" / "mcp")
        print(f"store throughput: 3 MCP sessions {rm:.1f} docs/s ÷ in-process {lm:.1f} docs/s = {rm / lm:.2f} "
              f"(goal ≥ 0.8; N={args.n} in batches of {args.batch}, the two sides alternating)")


if __name__ == "__main__":
    main()
