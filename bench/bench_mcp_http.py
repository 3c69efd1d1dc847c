#!/usr/bin/env python3
"""MCP over HTTP and the knowledge graph (issue #22), each figure beside its anchor from the same run.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_mcp_http.py [--calls 200] [--distractors 300]

- round trip: a tool call on `/mcp` of a real `memfs serve` (the SDK's streamable HTTP client, one
  session) ÷ the same operation over the JSON API (httpx, keep-alive), p50 of --calls each, the two
  sides taking turns 20 calls at a time so both see the same load (goal ≤ 1.3). Two operations:
  memory_get ÷ GET /memories/{id}, and memory_search ÷ POST /search (semantic, k=5). memory_get also
  as a bare JSON-RPC POST (httpx, the headers and `_meta` the SDK's client sends at 2026-07-28): the
  server's /mcp without the SDK client's own work (its streams, its check of every result against the
  tool's output schema), which any other client (another SDK, a proxy) does its own way.
- search_nodes recall@5: a graph of hand-written entities (people, offices, projects, tools) with one
  question each that names none of its words, plus --distractors entities of realistic text (CPython's
  help paragraphs); a question scores when its entity is among the first five search_nodes returns.
  memfs vs the reference server (`@modelcontextprotocol/server-memory` under node, substring match),
  the same graph loaded into both; also a set of name/word queries, where substring matching works.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

import httpx2  # noqa: E402
from mcp.client import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402
from mcp.client.streamable_http import streamable_http_client  # noqa: E402

from conftest import filler_texts  # noqa: E402

# (name, type, observations, a question naming none of the observation's words)
GRAPH = [
    ("Ana Duarte", "person", ["Runs the Lisbon office"], "who is in charge of the Portugal branch"),
    ("Ben Okafor", "person", ["Backend engineer who prefers Rust"], "which developer likes a memory-safe systems language"),
    ("Chen Wei", "person", ["Joined the company in May 2024"], "who is the newest hire"),
    ("Dana Kim", "person", ["Owns the deploy pipeline"], "who should I ask about shipping releases to production"),
    ("Elif Sahin", "person", ["Allergic to peanuts"], "does anyone have a food allergy"),
    ("Farid Haddad", "person", ["Speaks Arabic, French and English"], "who is multilingual"),
    ("Grace Liu", "person", ["Manages the quarterly budget"], "who handles finances and spending plans"),
    ("Hugo Martin", "person", ["Works remotely from a farm in Normandy"], "which colleague lives in the French countryside"),
    ("Ines Costa", "person", ["Leads customer support on weekends"], "who helps clients on Saturday"),
    ("Jon Berg", "person", ["Plays cello in an orchestra"], "who is a classical musician"),
    ("Kofi Mensah", "person", ["Ran a marathon in under three hours"], "which teammate is a fast long-distance runner"),
    ("Lena Vogel", "person", ["Writes the company newsletter"], "who authors our internal bulletin"),
    ("Heron", "project", ["Migrates billing to Postgres"], "the effort to move invoices onto a new database"),
    ("Kestrel", "project", ["Rebuilds the mobile app in Flutter"], "rewrite of the phone application"),
    ("Osprey", "project", ["Cuts cloud costs by half"], "initiative to reduce hosting spend"),
    ("Atlas", "project", ["Search across every internal wiki"], "a tool to find documents in our knowledge base"),
    ("Berlin office", "office", ["Twelve desks and a rooftop terrace"], "workplace with outdoor space on top"),
    ("Nairobi office", "office", ["Opened in 2023 for the Africa sales team"], "our newest location for selling in Kenya"),
    ("Tokyo office", "office", ["Closed every August for Obon"], "which site shuts down in summer for a holiday"),
    ("Grafana", "tool", ["Dashboards for every service's latency"], "where do I look at response time charts"),
    ("PagerDuty", "tool", ["Wakes the on-call engineer at night"], "what alerts people when production breaks"),
    ("Terraform", "tool", ["Describes all cloud infrastructure as code"], "how do we provision servers declaratively"),
    ("Friday demo", "meeting", ["Teams show what they shipped this week"], "the weekly show-and-tell"),
    ("Security review", "process", ["Required before any public API launch"], "what must happen before exposing an endpoint externally"),
    ("Parental leave", "policy", ["Sixteen weeks fully paid"], "how long can new parents take off"),
]
WORD_QUERIES = [("Lisbon", "Ana Duarte"), ("Rust", "Ben Okafor"), ("Postgres", "Heron"), ("Flutter", "Kestrel"),
                ("marathon", "Kofi Mensah"), ("newsletter", "Lena Vogel"), ("Obon", "Tokyo office"),
                ("Terraform", "Terraform"), ("budget", "Grace Liu"), ("cello", "Jon Berg")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memfs(*args: str, env=None) -> None:
    subprocess.run([sys.executable, "-m", "memfs", *args], check=True, capture_output=True,
                   env={**os.environ, **(env or {})})


def start_serve(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "memfs", "--root", str(root), "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=open(root.parent / "serve.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/owner", timeout=5) as r:
                if json.loads(r.read()).get("model_loaded"):
                    return proc, url
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("memfs serve did not come up with its model in 300 s")


def tool_call(i: int, name: str, arguments: dict) -> tuple[dict, bytes]:
    """A tools/call as the SDK's client sends it at protocol 2026-07-28: its headers and its body."""
    headers = {"content-type": "application/json", "accept": "application/json, text/event-stream",
               "mcp-protocol-version": "2026-07-28", "mcp-method": "tools/call", "mcp-name": name}
    meta = {"io.modelcontextprotocol/protocolVersion": "2026-07-28", "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "bench", "version": "1"}}
    body = {"jsonrpc": "2.0", "id": i, "method": "tools/call", "params": {"name": name, "arguments": arguments,
                                                                          "_meta": meta}}
    return headers, json.dumps(body).encode()


async def bare_tool_call(http: httpx2.AsyncClient, i: int, name: str, arguments: dict) -> httpx2.Response:
    """A tools/call as one POST, without the SDK's client; a JSON-RPC error or a tool error stops the bench."""
    headers, body = tool_call(i, name, arguments)
    r = await http.post("/mcp", content=body, headers=headers)
    answer = r.json()
    assert r.status_code == 200 and "error" not in answer and not answer["result"].get("isError"), answer
    return r


async def round_trips(url: str, calls: int) -> dict:
    texts = filler_texts(50)
    async with httpx2.AsyncClient(base_url=url, timeout=120) as api, \
            httpx2.AsyncClient(timeout=120) as hc, \
            Client(streamable_http_client(url + "/mcp", http_client=hc), read_timeout_seconds=120) as mcp:
        ids = [(await api.post("/memories", json={"content": t})).json()["id"] for t in texts]
        queries = ["how do I read a file line by line", "what does a with statement do", "numeric types and precision",
                   "how are exceptions raised", "what is a generator"]
        ops = {
            "memory_get ÷ GET /memories/{id}": (
                lambda i: mcp.call_tool("memory_get", {"id": ids[i % len(ids)]}),
                lambda i: api.get(f"/memories/{ids[i % len(ids)]}")),
            "memory_get as a bare JSON-RPC POST ÷ GET /memories/{id}": (
                lambda i: bare_tool_call(api, i, "memory_get", {"id": ids[i % len(ids)]}),
                lambda i: api.get(f"/memories/{ids[i % len(ids)]}")),
            "memory_search ÷ POST /search (semantic, k=5)": (
                lambda i: mcp.call_tool("memory_search", {"query": queries[i % 5], "mode": "semantic", "k": 5}),
                lambda i: api.post("/search", json={"query": queries[i % 5], "mode": "semantic", "k": 5})),
        }
        out = {}
        for name, (over_mcp, over_api) in ops.items():
            for i in range(10):  # warm both paths
                await over_mcp(i)
                await over_api(i)
            t_mcp, t_api = [], []
            for start in range(0, calls, 20):
                for side, fn, sink in (("mcp", over_mcp, t_mcp), ("api", over_api, t_api)):
                    for i in range(start, start + 20):
                        t0 = time.perf_counter()
                        r = await fn(i)
                        sink.append(time.perf_counter() - t0)
                        assert not getattr(r, "is_error", False) and getattr(r, "status_code", 200) < 400
            out[name] = (statistics.median(t_mcp) * 1000, statistics.median(t_api) * 1000)
        return out


def graph_lines(distractors: int) -> list[dict]:
    lines = [{"type": "entity", "name": n, "entityType": t, "observations": obs} for n, t, obs, _ in GRAPH]
    for i, text in enumerate(filler_texts(distractors)):
        lines.append({"type": "entity", "name": f"Note {i:04d}", "entityType": "note", "observations": [text]})
    lines += [{"type": "relation", "from": "Ana Duarte", "to": "Berlin office", "relationType": "visits"},
              {"type": "relation", "from": "Ben Okafor", "to": "Heron", "relationType": "works on"}]
    return lines


async def search_all(params: StdioServerParameters, queries: list[str]) -> list[list[str]]:
    async with Client(params, read_timeout_seconds=600) as c:
        out = []
        for q in queries:
            r = await c.call_tool("search_nodes", {"query": q})
            out.append([e["name"] for e in r.structured_content["entities"]])
        return out


def recall(results: list[list[str]], targets: list[str]) -> float:
    return sum(t in r[:5] for r, t in zip(results, targets)) / len(targets)


def reference_entry() -> Path | None:
    ref = Path(tempfile.gettempdir()) / "memfs-tests-server-memory"
    entry = ref / "node_modules" / "@modelcontextprotocol" / "server-memory" / "dist" / "index.js"
    if not entry.is_file() and shutil.which("npm"):
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(ref),
                        "@modelcontextprotocol/server-memory"], capture_output=True)
    return entry if entry.is_file() and shutil.which("node") else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--distractors", type=int, default=300)
    ap.add_argument("--only", choices=["trip", "recall"], default=None,
                    help="one part: the timed round trip (needs the bench lock), or recall (times nothing)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.only != "recall":
            round_trip_part(tmp, a.calls)
        if a.only != "trip":
            recall_part(tmp, a.distractors)


def round_trip_part(tmp: Path, calls: int) -> None:
    root = tmp / "store"
    memfs("--root", str(root), "init")
    proc, url = start_serve(root)
    try:
        trips = asyncio.run(round_trips(url, calls))
    finally:
        proc.terminate()
        proc.wait(60)
    print("round trip, p50 (ms): MCP over /mcp | JSON API | ratio (goal ≤ 1.3)")
    for name, (m, j) in trips.items():
        print(f"  {name}: {m:.2f} | {j:.2f} | {m / j:.2f}")


def recall_part(tmp: Path, distractors: int) -> None:
    source = tmp / "memory.jsonl"
    source.write_text("\n".join(json.dumps(x) for x in graph_lines(distractors)))
    questions = [q for *_, q in GRAPH]
    targets = [n for n, *_ in GRAPH]
    words = [w for w, _ in WORD_QUERIES]
    word_targets = [t for _, t in WORD_QUERIES]
    groot = tmp / "graph"
    memfs("--root", str(groot), "init")
    params = StdioServerParameters(command=sys.executable, args=["-m", "memfs", "--root", str(groot), "mcp",
                                                                 "--import-kg", str(source)],
                                   env={**os.environ, "MEMFS_MCP_TOOLS": "graph"})
    mine = asyncio.run(search_all(params, questions + words))
    memfs("--root", str(groot), "stop")
    n = len(questions)
    print(f"search_nodes recall@5 ({len(GRAPH)} entities + {distractors} distractors):")
    print(f"  paraphrased questions ({n}): memfs {recall(mine[:n], targets):.2f}", end="")
    entry = reference_entry()
    if entry is None:
        print(" | reference: node/npm not available")
        print(f"  word queries ({len(words)}): memfs {recall(mine[n:], word_targets):.2f}")
        return
    ref_file = tmp / "ref-memory.jsonl"
    shutil.copy(source, ref_file)
    ref = asyncio.run(search_all(StdioServerParameters(command="node", args=[str(entry)],
                                                       env={**os.environ, "MEMORY_FILE_PATH": str(ref_file)}),
                                 questions + words))
    print(f" | reference server {recall(ref[:n], targets):.2f}")
    print(f"  word queries ({len(words)}): memfs {recall(mine[n:], word_targets):.2f} | "
          f"reference server {recall(ref[n:], word_targets):.2f}")


if __name__ == "__main__":
    main()
