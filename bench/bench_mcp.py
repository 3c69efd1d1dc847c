#!/usr/bin/env python3
"""`memfs mcp` (issue 10), each figure beside its anchor from the same run.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_mcp.py [N] [--runs 10] [--rounds 2]

- cold start to tools/list answered: spawn `memfs mcp` over stdio with the SDK's client, initialize,
  tools/list (goal < 1 s), p50/p95 over --runs; beside it, a bare `python -c pass` start
- 3 MCP sessions storing N memories between them (each its own `memfs mcp`, one owner) ÷ in-process
  LocalOperations.add of the same N texts on a fresh store, one at a time (goal ≥ 0.8); the model is
  warm on both sides before the clock starts; rounds alternate the two
"""

from __future__ import annotations

import argparse
import asyncio
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


def in_process(root: Path, texts: list[str]) -> float:
    subprocess.run([sys.executable, "-m", "memfs", "--root", str(root), "init"], check=True, capture_output=True)
    with LocalOperations.open(root) as ops:
        ops.add("warm-up: load the model before the clock starts")
        t = time.perf_counter()
        for text in texts:
            ops.add(text)
        return len(texts) / (time.perf_counter() - t)


async def mcp_sessions(root: Path, texts: list[str], sessions: int = 3) -> float:
    subprocess.run([sys.executable, "-m", "memfs", "--root", str(root), "init"], check=True, capture_output=True)
    ready = asyncio.Barrier(sessions + 1)
    done = asyncio.Barrier(sessions + 1)

    async def one(s: int) -> None:
        async with Client(params(root), read_timeout_seconds=600) as c:
            r = await c.call_tool("memory_store", {"content": f"warm-up of session {s}"})
            assert not r.is_error
            await ready.wait()
            for text in texts[s::sessions]:
                r = await c.call_tool("memory_store", {"content": text})
                assert not r.is_error, r.content
            await done.wait()

    async def clock() -> float:
        await ready.wait()
        t = time.perf_counter()
        await done.wait()
        return time.perf_counter() - t

    results = await asyncio.gather(clock(), *(one(s) for s in range(sessions)))
    return len(texts) / results[0]


def stop_owner(root: Path) -> None:
    subprocess.run([sys.executable, "-m", "memfs", "--root", str(root), "stop"], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=150)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
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

        local, remote = [], []
        for r in range(args.rounds):
            local.append(in_process(base / f"local-{r}", texts))
            mcp_root = base / f"mcp-{r}"
            try:
                remote.append(asyncio.run(mcp_sessions(mcp_root, texts)))
            finally:
                stop_owner(mcp_root)
            print(f"round {r + 1}: in-process {local[-1]:.1f} docs/s, 3 MCP sessions {remote[-1]:.1f} docs/s, "
                  f"ratio {remote[-1] / local[-1]:.2f}")
        lm, rm = statistics.median(local), statistics.median(remote)
        print(f"store throughput: 3 MCP sessions {rm:.1f} docs/s ÷ in-process {lm:.1f} docs/s = {rm / lm:.2f} "
              f"(goal ≥ 0.8; N={args.n}, {args.rounds} rounds, medians)")


if __name__ == "__main__":
    main()
