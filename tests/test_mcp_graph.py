"""The knowledge-graph tools (issue #22): the MCP reference memory server's names and shapes.

A transcript is recorded against the real reference server (`@modelcontextprotocol/server-memory`,
run with node from its npm package; installed here when node and npm are) and replayed against a
real `memfs mcp`; the results must be the same, entity order aside. Real model, real Chroma.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from conftest import run_memfs

REF_PACKAGE = "@modelcontextprotocol/server-memory"
REF_DIR = Path(tempfile.gettempdir()) / "memfs-tests-server-memory"


def reference_server() -> Path:
    """dist/index.js of the reference server, installed from npm once per machine; skip without node."""
    entry = REF_DIR / "node_modules" / "@modelcontextprotocol" / "server-memory" / "dist" / "index.js"
    if entry.is_file():
        return entry
    if not (shutil.which("node") and shutil.which("npm")):
        pytest.skip("node and npm are needed to run the reference server (scripts/test.sh installs them as root)")
    REF_DIR.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(REF_DIR), REF_PACKAGE],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not entry.is_file():
        pytest.skip(f"could not install {REF_PACKAGE} from npm: {r.stderr[-500:]}")
    return entry


def memfs_params(root: Path, *extra: str, env: dict | None = None) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "memfs", "--root", str(root), "mcp", *extra],
                                 env={**os.environ, "MEMFS_MCP_TOOLS": "graph", **(env or {})})


async def run_transcript(params, steps) -> list[dict]:
    out = []
    async with Client(params, read_timeout_seconds=300) as c:
        for name, args in steps:
            r = await c.call_tool(name, args)
            out.append({"error": r.content[0].text if r.is_error else None, "result": r.structured_content})
    return out


def normal(result: dict | None) -> dict | None:
    """A result with entity and relation order aside (and memfs's paging fields apart)."""
    if result is None:
        return None
    result = {k: v for k, v in result.items() if k not in ("next_cursor", "remaining")}
    for key in ("entities", "relations", "results"):
        if key in result:
            result[key] = sorted(result[key], key=lambda x: json.dumps(x, sort_keys=True))
    return result


TRANSCRIPT = [
    ("create_entities", {"entities": [
        {"name": "Ana Duarte", "entityType": "person", "observations": ["Runs the Lisbon office", "Speaks Portuguese and French"]},
        {"name": "Ben Okafor", "entityType": "person", "observations": ["Backend engineer", "Prefers Rust over Go"]},
        {"name": "Acme|Lisbon", "entityType": "office", "observations": ["Opened in 2021", "Twelve desks"]},
        {"name": "Project Heron", "entityType": "project", "observations": ["Migrates billing to Postgres"]}]}),
    ("create_entities", {"entities": [
        {"name": "Ana Duarte", "entityType": "person", "observations": ["ignored: the name is taken"]},
        {"name": "Chen Wei", "entityType": "person", "observations": []}]}),
    ("create_relations", {"relations": [
        {"from": "Ana Duarte", "to": "Acme|Lisbon", "relationType": "manages"},
        {"from": "Ben Okafor", "to": "Project Heron", "relationType": "works on"},
        {"from": "Ana Duarte", "to": "Ben Okafor", "relationType": "mentors"}]}),
    ("create_relations", {"relations": [
        {"from": "Ana Duarte", "to": "Acme|Lisbon", "relationType": "manages"},
        {"from": "Chen Wei", "to": "Project Heron", "relationType": "reviews"}]}),
    ("add_observations", {"observations": [
        {"entityName": "Ben Okafor", "contents": ["Prefers Rust over Go", "On call in March"]},
        {"entityName": "Chen Wei", "contents": ["Joined in May"]}]}),
    ("add_observations", {"observations": [{"entityName": "Nobody Here", "contents": ["x"]}]}),
    ("open_nodes", {"names": ["Ben Okafor", "Nobody Here"]}),
    ("search_nodes", {"query": "rust"}),
    ("search_nodes", {"query": "PERSON"}),
    ("search_nodes", {"query": "Lisbon"}),
    ("delete_observations", {"deletions": [{"entityName": "Ben Okafor", "observations": ["On call in March"]},
                                           {"entityName": "Nobody Here", "observations": ["x"]}]}),
    ("delete_relations", {"relations": [{"from": "Ana Duarte", "to": "Ben Okafor", "relationType": "mentors"}]}),
    ("read_graph", {}),
    ("delete_entities", {"entityNames": ["Project Heron", "Nobody Here"]}),
    ("read_graph", {}),
    ("open_nodes", {"names": ["Ana Duarte", "Chen Wei"]}),
]


def test_transcript_replayed_against_memfs_gives_the_reference_servers_results(root, tmp_path):
    entry = reference_server()
    memory_file = tmp_path / "memory.jsonl"
    ref_params = StdioServerParameters(command="node", args=[str(entry)],
                                       env={**os.environ, "MEMORY_FILE_PATH": str(memory_file)})
    expected = asyncio.run(run_transcript(ref_params, TRANSCRIPT))
    assert run_memfs("--root", str(root), "init").returncode == 0
    got = asyncio.run(run_transcript(memfs_params(root), TRANSCRIPT))
    for (name, args), want, have in zip(TRANSCRIPT, expected, got):
        assert (want["error"] is None) == (have["error"] is None), (name, args, want, have)
        if want["error"]:
            # The reference's message, and memfs says what to do next after it.
            assert have["error"].startswith(want["error"].split(": ", 1)[-1].rstrip(".")) or \
                want["error"].split(": ", 1)[-1] in have["error"], (name, want["error"], have["error"])
            continue
        if name == "search_nodes":
            # Every entity its substring match finds, memfs finds too (and may add ones close in meaning).
            ref_names = {e["name"] for e in want["result"]["entities"]}
            mine = {e["name"]: e for e in have["result"]["entities"]}
            assert ref_names <= set(mine), (args, ref_names, set(mine))
            assert all(e in have["result"]["entities"] for e in want["result"]["entities"])
            assert all(r in have["result"]["relations"] for r in want["result"]["relations"])
            continue
        assert normal(have["result"]) == normal(want["result"]), (name, args)

    # Meaning, not only substrings: the reference finds nothing for this; memfs finds the manager.
    async def by_meaning():
        async with Client(memfs_params(root), read_timeout_seconds=300) as c:
            return (await c.call_tool("search_nodes", {"query": "who is in charge of the Portugal branch"})).structured_content
    assert "Ana Duarte" in [e["name"] for e in asyncio.run(by_meaning())["entities"]]

    # Switching costs one line: the reference's own memory.jsonl, imported on first start, reads the same.
    final_ref = expected[TRANSCRIPT.index(("read_graph", {}), 13)]["result"]
    other = tmp_path / "switched"
    assert run_memfs("--root", str(other), "init").returncode == 0
    steps = [("read_graph", {})]
    for _ in range(2):  # the second start finds the import record and imports nothing
        got = asyncio.run(run_transcript(memfs_params(other, env={"MEMORY_FILE_PATH": str(memory_file)}), steps))
        assert normal(got[0]["result"]) == normal(final_ref)
    history = run_memfs("--root", str(other), "import", "--history", "--json")
    assert history.returncode == 0, history.stderr
    records = json.loads(history.stdout)
    records = records.get("imports", records) if isinstance(records, dict) else records
    assert len(records) == 1 and records[0]["source"]["path"] == str(memory_file.resolve())


def test_entities_are_files_a_person_can_read(root):
    assert run_memfs("--root", str(root), "init").returncode == 0
    steps = [("create_entities", {"entities": [{"name": "Dana", "entityType": "person",
                                                "observations": ["Owns the deploy pipeline"]}]}),
             ("create_relations", {"relations": [{"from": "Dana", "to": "Deploys", "relationType": "owns"}]})]
    asyncio.run(run_transcript(memfs_params(root), steps))
    docs = [json.loads(p.read_text()) for p in (root / "data" / "memories").rglob("*.json")]
    entity = next(d for d in docs if d.get("type") == "entity")
    assert entity["content"] == "Dana (person)\nOwns the deploy pipeline"
    assert entity["namespace"] == "kg" and entity["key"] == "entity:Dana"
    relation = next(d for d in docs if d.get("type") == "relation")
    assert relation["content"] == "Dana owns Deploys"
    # Deleting an entity removes its relations (and their files), as the reference server does.
    asyncio.run(run_transcript(memfs_params(root), [("delete_entities", {"entityNames": ["Dana"]})]))
    assert not [p for p in (root / "data" / "memories").rglob("*.json")]


class OneHotEmbedder:
    """Fake: vectors carry no meaning (paging is plumbing; 6,000 real embeddings take minutes here)."""

    model_id, dim = "fake-one-hot", 384

    def embed(self, texts):
        import hashlib

        import numpy as np

        out = np.zeros((len(texts), 384), np.float32)
        for i, t in enumerate(texts):
            out[i, hashlib.sha256(t.encode()).digest()[0] % 384] = 1
        return out


def test_plumbing_fake_embedder_read_graph_pages_5000_entities_under_the_documented_size(root, tmp_path):
    """5,000 entities (and 1,000 relations) from a memory.jsonl, read through the read_graph tool (the SDK's
    client, in memory): every page's JSON under PAGE_BYTES, every entity and relation exactly once across
    the pages, `remaining` counting down to 0."""
    from memfs.local import LocalOperations
    from memfs.mcp.graph import PAGE_BYTES
    from memfs.mcp.gateway import Gateway
    from memfs.mcp.server import build_server

    lines = []
    for i in range(5000):
        lines.append({"type": "entity", "name": f"Person {i:04d}", "entityType": "person",
                      "observations": [f"Works in team {i % 40}", f"Joined in {2000 + i % 25}", "Likes long walks " * 3]})
        if i % 5 == 0:
            lines.append({"type": "relation", "from": f"Person {i:04d}", "to": f"Person {(i + 1) % 5000:04d}",
                          "relationType": "reports to"})
    source = tmp_path / "memory.jsonl"
    source.write_text("\n".join(json.dumps(x) for x in lines))
    assert run_memfs("--root", str(root), "init").returncode == 0

    async def pages(ops):
        out = []
        async with Client(build_server(Gateway.of(ops), "graph")) as c:
            cursor = None
            while True:
                r = await c.call_tool("read_graph", {"cursor": cursor} if cursor else {})
                assert not r.is_error, r.content[0].text
                out.append(r.structured_content)
                cursor = r.structured_content["next_cursor"]
                if cursor is None:
                    return out
    with LocalOperations.open(root, embedder=OneHotEmbedder(), watch=False) as ops:
        report = ops.import_sources([str(source)], format="kg-jsonl")
        assert report.sources[0].new == 6000
        got = asyncio.run(pages(ops))
    assert len(got) > 5
    for page in got:
        assert len(json.dumps(page, ensure_ascii=False).encode()) <= PAGE_BYTES
        assert page["entities"] or page["relations"]
    names = [e["name"] for p in got for e in p["entities"]]
    rels = [(r["from"], r["to"]) for p in got for r in p["relations"]]
    assert sorted(names) == [f"Person {i:04d}" for i in range(5000)]
    assert len(rels) == len(set(rels)) == 1000
    left = [p["remaining"]["entities"] + p["remaining"]["relations"] for p in got]
    assert left == sorted(left, reverse=True) and left[-1] == 0
    assert left[0] == 6000 - len(got[0]["entities"]) - len(got[0]["relations"])


def test_graph_actions_refuse_bad_input_through_the_operations(root):
    """The checks live in memfs.graph, so the HTTP API refuses what the MCP tools refuse."""
    from memfs.errors import BadRequestError

    with _open(root) as ops:
        for action, args in [("create_entities", {"entities": [{"name": "", "entityType": "x", "observations": []}]}),
                             ("create_entities", {"entities": "Ana"}),
                             ("create_relations", {"relations": [{"from": "a\x00b", "to": "c", "relationType": "r"}]}),
                             ("open_nodes", {"names": ["x" * 501]}),
                             ("read_graph", {"cursor": "../etc/passwd"}),
                             ("read_graph", {"limit": 0}),
                             ("drop_everything", {})]:
            with pytest.raises(BadRequestError):
                ops.graph(action, args)
        assert ops.graph("read_graph", {})["entities"] == []


def _open(root):
    from memfs.local import LocalOperations

    assert run_memfs("--root", str(root), "init").returncode == 0
    return LocalOperations.open(root)
