"""`memfs mcp` (issue #10): a real `memfs mcp` subprocess driven over stdio with the SDK's client.

The server goes through the store's owner (started on demand as `memfs mcp` starts; the autouse
fixture in conftest stops it). Most tests share one store, emptied before each (fixture `shared`);
those about an owner's start or stop, or a new store, have their own. Real model, real Chroma:
searches check meaning.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters

from conftest import run_memfs, sized, stop_owners

DOCS = Path(__file__).resolve().parent.parent / "docs" / "mcp.md"


def server_params(root: Path, tools: str = "native", root_arg: str | None = None,
                  env: dict | None = None) -> StdioServerParameters:
    env = {**os.environ, "MEMFS_MCP_TOOLS": tools, **(env or {})}
    return StdioServerParameters(command=sys.executable, args=["-m", "memfs", "--root", root_arg or str(root), "mcp"],
                                 env=env)


@contextlib.asynccontextmanager
async def session(root: Path, tools: str = "native", root_arg: str | None = None, env: dict | None = None):
    async with Client(server_params(root, tools, root_arg, env), read_timeout_seconds=300) as client:
        yield client


async def call(client, name: str, args: dict | None = None) -> dict:
    """A tool call that must succeed; its structured result."""
    r = await client.call_tool(name, args or {})
    assert not r.is_error, f"{name}({args}) failed: {r.content[0].text if r.content else r}"
    return r.structured_content


async def fails(client, name: str, args: dict) -> str:
    """A tool call that must come back as a tool error; its message."""
    r = await client.call_tool(name, args)
    assert r.is_error, f"{name} should have failed: {r.structured_content}"
    return r.content[0].text


@pytest.fixture
def store_root(root) -> Path:
    assert run_memfs("--root", str(root), "init").returncode == 0
    return root


def memory_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "data" / "memories").rglob("*") if p.is_file())


class LongSession:
    """One `memfs mcp` driven by the SDK's client for a whole module. An MCP session cannot move from one
    asyncio.run to the next, so the client lives on an event loop of its own, in a thread; `run(go)`
    runs the coroutine go(client) there and returns its result (or raises what it raised)."""

    def __init__(self, root: Path, tools: str, env: dict):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"mcp-{tools}", daemon=True)
        self.thread.start()
        self.stop = asyncio.Event()
        self.opened: concurrent.futures.Future = concurrent.futures.Future()
        self.held = asyncio.run_coroutine_threadsafe(self._hold(root, tools, env), self.loop)
        concurrent.futures.wait([self.opened, self.held], timeout=300, return_when="FIRST_COMPLETED")
        if self.held.done():
            self.held.result()  # it could not start: say why
        self.client = self.opened.result(0)

    async def _hold(self, root: Path, tools: str, env: dict) -> None:
        async with session(root, tools, env=env) as c:
            self.opened.set_result(c)
            await self.stop.wait()

    def run(self, go):
        return asyncio.run_coroutine_threadsafe(go(self.client), self.loop).result(600)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.held.result(120)  # the client closed stdin and `memfs mcp` exited
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(60)
        self.loop.close()


@pytest.fixture(scope="module")
def one_store(tmp_path_factory):
    """One store, its owner and two sessions on it (native tools, and all of them), for every test that
    needs no new store or owner of its own (what the tools do; sessions, the CLI and hand edits sharing
    a store): one owner start and one model load for all of them, where each test paid 13-16 s of CI's
    time for its own. Tests that watch an owner start or stop keep a store of their own."""
    root = tmp_path_factory.mktemp("one-store") / "store"
    assert run_memfs("--root", str(root), "init").returncode == 0
    opened = []
    try:
        for tools in ("native", "all"):  # the owner they start stays for the module; stopped below
            opened.append(LongSession(root, tools, env={"MEMFS_IDLE_EXIT": "600"}))
        yield types.SimpleNamespace(root=root, native=opened[0], all=opened[1])
    finally:
        for s in opened:
            s.close()
        stop_owners(root)


@pytest.fixture
def shared(one_store):
    """The module's store with every memory deleted first (through the tools): each test starts on a
    store that holds nothing, as it did on a new one. Only test_backup_create_list_verify makes backups."""
    async def empty(c):
        while (await call(c, "memory_delete", {"since": "1970-01-01", "dry_run": False}))["count"]:
            pass
        assert (await call(c, "memory_stats"))["memories"] == 0
    one_store.native.run(empty)
    assert memory_files(one_store.root) == []
    return one_store


# -- start-up -----------------------------------------------------------------------------------------


def test_cold_start_imports_no_model_chroma_or_numpy(store_root):
    """What `memfs mcp` imports to answer initialize and tools/list, checked in a fresh interpreter."""
    code = f"""
import asyncio, sys
import memfs.cli
from memfs.mcp.gateway import Gateway, connect_to_owner
from memfs.mcp.server import build_server
from pathlib import Path
server = build_server(Gateway(connect_to_owner(Path({str(store_root)!r}))), "all")
tools = asyncio.run(server.list_tools())
heavy = sorted(m for m in ("numpy", "chromadb", "torch", "sentence_transformers", "fastapi") if m in sys.modules)
print(len(tools), heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split(None, 1) == ["28", "[]\n"]


def test_tools_list_answers_at_once_while_the_owner_warms_in_the_background(store_root):
    """tools/list never waits for the owner; the owner (and its model) is started as `memfs mcp` starts,
    before any tool call (issue #26: the first search from cold waited for the whole start)."""
    from memfs.lock import is_held, read_owner
    from test_watcher import wait_until

    lock = store_root / "data" / "memfs.lock"

    async def go():
        async with session(store_root, "all") as c:
            names = [t.name for t in (await c.list_tools()).tools]
            wait_until(lambda: is_held(lock) and read_owner(lock).get("socket"), timeout=60,
                       what="an owner started before any tool call")
            assert read_owner(lock)["started_by"] == "on-demand"
            health = await call(c, "memory_health")
            return names, health
    names, health = asyncio.run(go())
    assert len(names) == 28 and "memory_store" in names and "store_memory" in names and "read_graph" in names
    assert health["owner_started_by"] == "on-demand"


def test_tool_sets_follow_the_setting(one_store):
    async def names(tools):
        async with session(one_store.root, tools) as c:
            return {t.name for t in (await c.list_tools()).tools}
    native, compat = asyncio.run(names("native")), asyncio.run(names("compat"))
    assert all(n.startswith("memory_") for n in native) and len(native) == 9
    assert "retrieve_memory" in compat and not compat & native and len(compat) == 10
    graph = asyncio.run(names("graph"))
    assert graph == {"create_entities", "create_relations", "add_observations", "delete_entities",
                     "delete_observations", "delete_relations", "read_graph", "search_nodes", "open_nodes"}
    bad = run_memfs("--root", str(one_store.root), "mcp", env={"MEMFS_MCP_TOOLS": "every"}, input="")
    assert bad.returncode == 2 and "every" in bad.stderr and not bad.stdout


def test_every_tool_has_schemas_annotations_and_a_description(one_store):
    async def go(c):
        return (await c.list_tools()).tools
    listed = one_store.all.run(go)
    for t in listed:
        assert t.input_schema["type"] == "object", t.name
        assert t.output_schema and t.output_schema["type"] == "object", t.name
        a = t.annotations
        assert a is not None and a.read_only_hint is not None and a.destructive_hint is not None \
            and a.idempotent_hint is not None, t.name
        assert len(t.description) > 60, t.name
        if a.read_only_hint:
            assert not a.destructive_hint, t.name
    names = {t.name: t for t in listed}
    assert names["memory_delete"].annotations.destructive_hint
    assert names["memory_search"].annotations.read_only_hint


def test_every_listed_tool_is_documented(one_store):
    async def go(c):
        return [t.name for t in (await c.list_tools()).tools]
    documented = set(re.findall(r"^### `(\w+)`", DOCS.read_text(), re.M))
    missing = [n for n in one_store.all.run(go) if n not in documented]
    assert not missing, f"not documented in docs/mcp.md: {missing}"


def test_the_sdks_span_per_message_is_left_out_unless_a_tracer_provider_is_set(monkeypatch):
    """#22: without a provider the SDK's span is a no-op that cost /mcp ~50 µs a tool call; with one
    (opentelemetry-instrument) the spans stay. Also catches the SDK renaming its middleware."""
    from opentelemetry import trace

    from memfs.mcp import server as mcp_server
    from memfs.mcp.gateway import Gateway

    def middleware():
        return [type(m).__name__ for m in mcp_server.build_server(Gateway(lambda: None), "all").middleware]

    assert mcp_server.SDK_TRACING_MIDDLEWARE not in middleware()

    class Provider(trace.TracerProvider):
        def get_tracer(self, *args, **kwargs):
            return trace.NoOpTracer()

    monkeypatch.setattr(trace, "get_tracer_provider", Provider)
    assert middleware()[0] == mcp_server.SDK_TRACING_MIDDLEWARE


def test_limits_match_the_owners():
    from memfs import inputs, limits
    from memfs.mcp import common

    assert common.MAX_CONTENT == limits.MAX_CONTENT_CHARS and common.MAX_REQUEST_BYTES < inputs.MAX_REQUEST_BODY_BYTES


# -- round trips --------------------------------------------------------------------------------------


def test_native_store_search_update_delete(shared):
    async def go(c):
        stored = await call(c, "memory_store", {"content": "The user prefers a dark colour scheme in every editor",
                                                "tags": ["prefs"], "type": "preference", "metadata": {"src": "chat"}})
        await call(c, "memory_store", {"content": "Quarterly revenue grew by four percent", "tags": ["finance"]})
        await call(c, "memory_store", {"content": "Error E4417 means the upstream certificate expired"})
        assert not stored["duplicate"] and stored["path"].endswith(".json")
        again = await call(c, "memory_store", {"content": "The user prefers a dark colour scheme in every editor"})
        assert again["duplicate"] and again["id"] == stored["id"]

        hits = (await call(c, "memory_search", {"query": "what theme does the user like?"}))["hits"]
        assert hits[0]["id"] == stored["id"] and hits[0]["rank"] == 1
        only = (await call(c, "memory_search", {"query": "what theme does the user like?", "tags": ["finance"],
                                                 "min_score": 0}))["hits"]
        assert [h["tags"] for h in only] == [["finance"]]

        updated = await call(c, "memory_update", {"id": stored["id"], "add_tags": ["ui"],
                                                  "content": "The user prefers a light colour scheme in every editor"})
        assert updated["tags"] == ["prefs", "ui"] and updated["content"].startswith("The user prefers a light")
        by_hash = await call(c, "memory_get", {"id": updated["content_hash"]})
        assert by_hash["id"] == stored["id"] and by_hash["metadata"] == {"src": "chat"}

        page = await call(c, "memory_list", {"limit": 2})
        assert len(page["memories"]) == 2 and page["next_cursor"]
        rest = await call(c, "memory_list", {"limit": 2, "cursor": page["next_cursor"]})
        assert len(rest["memories"]) == 1 and rest["next_cursor"] is None

        gone = await call(c, "memory_delete", {"id": stored["id"]})
        assert gone == {"removed": [stored["id"]], "count": 1, "dry_run": False}
        assert "no memory with id" in await fails(c, "memory_get", {"id": stored["id"]})
        stats = await call(c, "memory_stats")
        assert stats["memories"] == 2 and stats["model"].endswith("all-MiniLM-L6-v2")
        health = await call(c, "memory_health")
        assert health["status"] == "ok" and health["owner_pid"]
    shared.native.run(go)
    assert len(memory_files(shared.root)) == 2


def test_delete_by_filter_is_a_dry_run_unless_told(shared):
    async def go(c):
        ids = {(await call(c, "memory_store", {"content": f"scratch note {n} about the build", "tags": ["scratch"]}))["id"]
               for n in range(3)}
        keep = (await call(c, "memory_store", {"content": "the office closes at six"}))["id"]
        preview = await call(c, "memory_delete", {"tags": ["scratch"]})
        assert preview["dry_run"] and set(preview["removed"]) == ids
        assert len((await call(c, "memory_list"))["memories"]) == 4
        assert "either id" in await fails(c, "memory_delete", {})
        assert "either id" in await fails(c, "memory_delete", {"id": keep, "tags": ["scratch"]})
        done = await call(c, "memory_delete", {"tags": ["scratch"], "dry_run": False})
        assert not done["dry_run"] and set(done["removed"]) == ids
        assert [m["id"] for m in (await call(c, "memory_list"))["memories"]] == [keep]
    shared.native.run(go)


def test_backup_create_list_verify(shared):
    async def go(c):
        await call(c, "memory_store", {"content": "a memory worth a backup"})
        made = await call(c, "memory_backup", {"action": "create"})
        assert made["created"]["name"].startswith("memory_backup_")
        listed = await call(c, "memory_backup", {"action": "verify"})
        assert [b["name"] for b in listed["backups"]] == [made["created"]["name"]]
        assert listed["backups"][0]["status"] == "ok"
        assert "restore" not in {t.name for t in (await c.list_tools()).tools}
        await fails(c, "memory_backup", {"action": "restore"})
    shared.native.run(go)


def test_compat_transcript_gives_the_same_results_as_native(shared):
    """An mcp-memory-service style session: its names, its argument shapes, memories named by hash."""
    text = "Deploys to production happen on Tuesdays after the standup"

    async def go(c):
        stored = await call(c, "store_memory", {"content": text, "tags": "ops, deploy",
                                                "metadata": {"tags": ["process"], "type": "decision", "team": "web"}})
        h = hashlib.sha256(text.encode()).hexdigest()
        assert stored["success"] and stored["content_hash"] == h
        dup = await call(c, "store_memory", {"content": text})
        assert not dup["success"] and "Duplicate" in dup["message"]
        await call(c, "store_memory", {"content": "The cafeteria serves soup on Fridays", "tags": ["food"]})

        got = await call(c, "memory_get", {"id": h})
        assert got["tags"] == ["ops", "deploy", "process"] and got["type"] == "decision"
        assert got["metadata"] == {"team": "web"}

        compat = await call(c, "retrieve_memory", {"query": "when do we ship releases?", "n_results": 2})
        native = await call(c, "memory_search", {"query": "when do we ship releases?", "k": 2, "mode": "semantic"})
        assert [m["content_hash"] for m in compat["memories"]] == [x["content_hash"] for x in native["hits"]]
        assert compat["memories"][0]["content_hash"] == h and compat["total_results"] == 2
        assert compat["memories"][0]["similarity_score"] == pytest.approx(native["hits"][0]["score"])

        recalled = await call(c, "recall_memory", {"query": "what did we decide about shipping today"})
        assert recalled["memories"][0]["content_hash"] == h
        tagged = await call(c, "search_by_tag", {"tags": ["ops", "food"]})
        assert tagged["total_results"] == 2
        assert (await call(c, "search_by_tag", {"tags": "ops,food", "match_all": True}))["total_results"] == 0
        exact = await call(c, "exact_match_retrieve", {"content": text})
        assert [m["content_hash"] for m in exact["memories"]] == [h]
        assert (await call(c, "exact_match_retrieve", {"content": text + "!"}))["memories"] == []
        listed = await call(c, "list_memories", {"page": 1, "page_size": 1})
        assert listed["total"] == 2 and listed["has_more"] and len(listed["memories"]) == 1
        assert (await call(c, "check_database_health"))["statistics"]["total_memories"] == 2

        updated = await call(c, "update_memory_metadata", {"content_hash": h, "updates": {
            "tags": ["ops", "release"], "memory_type": "fact", "metadata": {"owner": "ana"}}})
        assert updated["success"] and updated["updated_fields"] == ["tags", "memory_type", "metadata"]
        after = await call(c, "memory_get", {"id": h})
        assert after["tags"] == ["ops", "release"] and after["type"] == "fact"
        assert after["metadata"] == {"team": "web", "owner": "ana"}

        deleted = await call(c, "delete_memory", {"content_hash": h})
        assert deleted["success"] and deleted["deleted_count"] == 1
        again = await call(c, "delete_memory", {"content_hash": h})
        assert not again["success"] and "not found" in again["message"]
        by_tag = await call(c, "delete_by_tag", {"tags": "food"})
        assert by_tag["deleted_count"] == 1
        assert (await call(c, "memory_stats"))["memories"] == 0
    shared.all.run(go)
    assert memory_files(shared.root) == []


def test_recall_memory_time_expressions():
    from datetime import datetime, timezone

    from memfs.mcp.compat_inputs import parse_timeframe

    now = datetime(2025, 3, 12, 15, 30, tzinfo=timezone.utc)  # a Wednesday
    rest, since, until = parse_timeframe("what did we decide last week?", now)
    assert rest == "what did we decide" and (since.day, until.day) == (3, 10)
    assert parse_timeframe("yesterday", now)[1:] == (datetime(2025, 3, 11, tzinfo=timezone.utc),
                                                    datetime(2025, 3, 12, tzinfo=timezone.utc))
    assert parse_timeframe("notes from the last 3 days", now)[1] == datetime(2025, 3, 9, 15, 30, tzinfo=timezone.utc)
    assert parse_timeframe("two weeks ago", now)[1].day == 26
    assert parse_timeframe("plain question", now) == ("plain question", None, None)


# -- bad input ----------------------------------------------------------------------------------------


# -- mcp-memory-service 12.x's arguments to the tools of the same names (issue #26) -------------------


def test_mms_12_argument_shapes_are_understood(shared):
    """The three calls of issue #26 (they stored tags [] / type note, gave 5 hits, listed 20 unfiltered),
    and the rest of mcp-memory-service 12.x's shapes of memory_search / list / delete / update."""
    async def go(c):
        decision = await call(c, "memory_store", {"content": "We deploy on Tuesdays after the ops review",
                                                  "metadata": {"tags": "ops,deploy", "type": "decision",
                                                               "owner": "sam"}})
        got = await call(c, "memory_get", {"id": decision["id"]})
        assert (got["tags"], got["type"], got["metadata"]) == (["ops", "deploy"], "decision", {"owner": "sam"})
        listed = await call(c, "memory_store", {"content": "A list of tags as an array works as well",
                                                "metadata": {"tags": ["ops"]}, "conversation_id": "conv_1"})
        assert (await call(c, "memory_get", {"id": listed["id"]}))["metadata"] == {"conversation_id": "conv_1"}
        for n in range(6):
            await call(c, "memory_store", {"content": f"Python tip {n}: prefer pathlib over os.path for paths",
                                           "metadata": {"tags": ["python"]}})

        hits = (await call(c, "memory_search", {"query": "python file paths", "limit": 2}))["hits"]
        assert len(hits) == 2 and all("python" in h["tags"] for h in hits)
        page = (await call(c, "memory_list", {"tag": "python", "page_size": 3}))["memories"]
        assert len(page) == 3 and all(m["tags"] == ["python"] for m in page)
        page3 = (await call(c, "memory_list", {"tags": ["python"], "page": 2, "page_size": 4}))["memories"]
        assert len(page3) == 2 and not {m["id"] for m in page3} & {m["id"] for m in page}
        both = (await call(c, "memory_list", {"tags": ["ops", "deploy"], "tag_match": "all"}))["memories"]
        assert [m["id"] for m in both] == [decision["id"]]
        decisions = (await call(c, "memory_list", {"memory_type": "decision"}))["memories"]
        assert [m["id"] for m in decisions] == [decision["id"]]
        today = (await call(c, "memory_search", {"query": "when do we deploy", "time_expr": "today",
                                                 "tags": "ops,deploy", "mode": "semantic"}))["hits"]
        assert today[0]["id"] == decision["id"]
        assert not (await call(c, "memory_search", {"query": "when do we deploy", "min_score": 0,
                                                    "time_expr": "yesterday"}))["hits"]
        assert not (await call(c, "memory_search", {"query": "deploy", "before": "2001-01-01",
                                                    "min_score": 0}))["hits"]
        exact = (await call(c, "memory_search", {"query": "Tuesdays", "mode": "exact"}))["hits"]
        assert [h["id"] for h in exact] == [decision["id"]]

        updated = await call(c, "memory_update", {"content_hash": decision["content_hash"],
                                                  "updates": {"memory_type": "policy", "priority": "high"}})
        assert updated["type"] == "policy" and updated["metadata"] == {"owner": "sam", "priority": "high"}
        gone = await call(c, "memory_delete", {"content_hash": listed["content_hash"]})
        assert gone["removed"] == [listed["id"]]
        preview = await call(c, "memory_delete", {"tags": "python", "before": "2999-01-01"})
        assert preview["dry_run"] and preview["count"] == 6
    shared.native.run(go)
    assert len(memory_files(shared.root)) == 7


def test_unknown_or_unsupported_arguments_are_errors_that_name_them(shared):
    async def go(c):
        cases = [("memory_search", {"query": "x", "limt": 2}, "limt"),
                 ("memory_store", {"content": "never stored", "tgas": ["a"]}, "tgas"),
                 ("memory_list", {"stale_days": 30}, "stale_days"),
                 ("memory_stats", {"verbose": True}, "verbose"),
                 ("store_memory", {"content": "never stored", "priority": 1}, "priority"),
                 ("retrieve_memory", {"query": "x", "limit": 3}, "limit"),
                 ("memory_search", {"query": "x", "quality_boost": 0.3}, "quality_boost"),
                 ("memory_search", {"query": "x", "summarize": True}, "summarize"),
                 ("memory_search", {"query": "x", "time_expr": "the other day"}, "time_expr"),
                 ("memory_search", {"query": "x", "limit": 2, "k": 3}, "limit"),
                 ("memory_store", {"content": "never stored", "store": "docs"}, "store"),
                 ("memory_update", {"content_hash": "a" * 64, "updates": {"tags": ["a"]}}, "updates.tags"),
                 ("memory_update", {"content_hash": "a" * 64, "versioned": True, "updates": {"content": "x"}},
                  "versioned")]
        for name, args, named in cases:
            message = await fails(c, name, args)
            assert named in message and name in message, (name, args, message)
        assert "query is required" in await fails(c, "memory_search", {"time_expr": "last week"})
        ok = await call(c, "memory_search", {"query": "x", "quality_boost": 0, "rerank": False, "store": "default"})
        assert ok["hits"] == []
    shared.all.run(go)
    assert memory_files(shared.root) == []


def test_bad_input_is_a_tool_error_and_the_server_keeps_serving(shared):
    async def go(c):
        assert "valid string" in await fails(c, "memory_store", {"content": 42})
        assert "tags" in await fails(c, "memory_store", {"content": "x", "tags": "not-a-list"})
        assert "content is empty" in await fails(c, "memory_store", {"content": "   "})
        assert "content is empty" in await fails(c, "store_memory", {"content": ""})
        huge = "word " * (2 * 1024 * 1024)  # 10 MB
        message = await fails(c, "memory_store", {"content": huge})
        assert "one memory holds at most 262144" in message and "Split it" in message
        assert "no memory with id" in await fails(c, "memory_get", {"id": "0123456789abcdef"})
        for hostile in ("../../etc/passwd", "/etc/passwd", "..", "2025/01/../../../x", "%2e%2e%2fetc"):
            assert "memory_search or memory_list show the ids" in await fails(c, "memory_get", {"id": hostile})
            await fails(c, "memory_update", {"id": hostile, "content": "overwritten"})
            await fails(c, "memory_delete", {"id": hostile})
        assert "not a memory id" in await fails(c, "memory_get", {"id": "bad\x00id"})
        assert "nothing to change" in await fails(c, "memory_update", {"id": "0123456789abcdef"})
        # the core's limits and time parser (#19): k up to 1000, times as every door reads them
        assert "k must be between 1 and 1000" in await fails(c, "memory_search", {"query": "x", "k": 1001})
        assert "cannot read 'last tuesday' as a time" in await fails(c, "memory_list", {"since": "last tuesday"})
        assert "query is empty" in await fails(c, "memory_search", {"query": " "})
        assert "cursor" in await fails(c, "memory_list", {"cursor": "../x"})
        assert "not a content hash" not in await fails(c, "delete_memory", {"content_hash": 5})
        assert "updates takes" in await fails(c, "update_memory_metadata", {"content_hash": "a" * 64,
                                                                            "updates": {"content": "x"}})
        assert "unknown tool" in (await fails(c, "memory_restore", {"archive": "latest"})).lower()
        ok = await call(c, "memory_store", {"content": "still serving after all that"})
        assert not ok["duplicate"]
    shared.all.run(go)
    files = memory_files(shared.root)
    assert len(files) == 1 and json.loads(files[0].read_text())["content"] == "still serving after all that"
    assert not (Path("/etc") / "passwd").read_text().startswith("overwritten")


# -- sharing the store --------------------------------------------------------------------------------


STORES = sized(100, 50)  # per session in the three-session test


def test_three_sessions_the_cli_and_hand_edits_share_the_store(shared):
    memories = shared.root / "data" / "memories"
    stop = threading.Event()
    cli_added: list[str] = []
    edits: list[str] = []
    problems: list[str] = []

    def cli_loop():
        n = 0
        while not stop.is_set():
            token = f"clitoken{n}"
            out = run_memfs("--root", str(shared.root), "add", f"memory {token} added from the command line")
            if out.returncode != 0:
                problems.append(out.stderr)
            else:
                cli_added.append(token)
            n += 1

    def edit_loop():
        n = 0
        while not stop.is_set() and n < 20:
            token = f"handtoken{n}"
            (memories / f"by-hand-{n}.json").write_text(json.dumps({"content": f"note {token} written by hand"}))
            edits.append(token)
            n += 1
            time.sleep(0.2)

    async def one_session(s: int) -> list[str]:
        ids = []
        async with session(shared.root) as c:
            for n in range(STORES):
                r = await c.call_tool("memory_store", {"content": f"session {s} memory zq{s}x{n}: "
                                                                  f"a fact about item {n}", "tags": [f"s{s}"]})
                if r.is_error:
                    problems.append(r.content[0].text)
                else:
                    ids.append(r.structured_content["id"])
        return ids

    async def sessions():
        return await asyncio.gather(*(one_session(s) for s in range(3)))

    threads = [threading.Thread(target=cli_loop), threading.Thread(target=edit_loop)]
    for t in threads:
        t.start()
    try:
        results = asyncio.run(sessions())
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not problems, problems[:3]
    assert [len(ids) for ids in results] == [STORES] * 3 and len({i for ids in results for i in ids}) == 3 * STORES
    assert cli_added and edits

    async def check():
        async with session(shared.root) as c:
            for s in range(3):
                for n in range(STORES):
                    hits = (await call(c, "memory_search", {"query": f"zq{s}x{n}", "mode": "keyword", "k": 1}))["hits"]
                    assert hits and f"zq{s}x{n}:" in hits[0]["content"], (s, n)
            for token in cli_added:
                assert (await call(c, "memory_search", {"query": token, "mode": "keyword", "k": 1}))["hits"], token
            # The owner's watcher indexes hand-written files shortly after they land.
            deadline = time.monotonic() + 120
            for token in edits:
                while not (await call(c, "memory_search", {"query": token, "mode": "keyword", "k": 1}))["hits"]:
                    assert time.monotonic() < deadline, f"{token} never indexed"
                    await asyncio.sleep(0.5)
            semantic = await call(c, "memory_search", {"query": "a note somebody wrote by hand", "k": 3})
            assert any("by hand" in h["content"] for h in semantic["hits"])
            stats = await call(c, "memory_stats")
            assert stats["memories"] == 3 * STORES + len(cli_added) + len(edits) and stats["invalid_files"] == 0
    asyncio.run(check())


def _children_with_arg(parent: int, arg: str) -> list[int]:
    """This process's children with `arg` on their command line (read from /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and arg.encode() in argv:
            found.append(int(stat.parent.name))
    return found


def test_kill_9_of_one_session_mid_store_leaves_the_others_going(shared):
    victim_root = str(shared.root) + "/"  # the same store; a command line the test can tell apart
    stored: dict[str, list[str]] = {"victim": [], "a": [], "b": []}
    errors: list[str] = []

    async def victim(started: asyncio.Event):
        try:
            async with session(shared.root, root_arg=victim_root) as c:
                n = 0
                while True:
                    r = await c.call_tool("memory_store", {"content": f"victim memory {n} " + "padding " * 2000})
                    if not r.is_error:
                        stored["victim"].append(r.structured_content["id"])
                    n += 1
                    if n == 3:
                        started.set()
        except BaseException:  # its server was killed under it: expected
            pass

    async def survivor(name: str, started: asyncio.Event):
        async with session(shared.root) as c:
            await started.wait()
            for n in range(30):
                r = await c.call_tool("memory_store", {"content": f"{name} survivor memory {n}"})
                if r.is_error:
                    errors.append(r.content[0].text)
                else:
                    stored[name].append(r.structured_content["id"])
            assert (await call(c, "memory_stats"))["memories"] >= 60

    async def killer(started: asyncio.Event):
        await started.wait()
        await asyncio.sleep(0.3)
        pids = _children_with_arg(os.getpid(), victim_root)
        assert len(pids) == 1, pids
        os.kill(pids[0], signal.SIGKILL)

    async def go():
        started = asyncio.Event()
        victim_task = asyncio.create_task(victim(started))
        await asyncio.gather(survivor("a", started), survivor("b", started), killer(started))
        await asyncio.wait_for(victim_task, 60)
    asyncio.run(go())

    assert not errors and len(stored["a"]) == len(stored["b"]) == 30
    from memfs.remote import RemoteOperations
    from memfs.lock import read_owner

    with RemoteOperations(socket=read_owner(shared.root / "data" / "memfs.lock")["socket"]) as ops:
        report = ops.validate()
        assert report.ok, report.problems
        for mem_id in stored["a"] + stored["b"] + stored["victim"]:
            assert ops.get(mem_id).memory.content
    leftovers = [p for p in (shared.root / "data").rglob("*") if p.name.startswith(".") and p.suffix == ".tmp"]
    assert not leftovers
    for f in memory_files(shared.root):
        json.loads(f.read_text())  # every file whole


def test_no_store_is_a_tool_error_that_says_what_to_do(root):
    async def go():
        async with session(root) as c:
            names = [t.name for t in (await c.list_tools()).tools]
            return names, await fails(c, "memory_stats", {}), await fails(c, "memory_search", {"query": "x"})
    names, first, second = asyncio.run(go())
    assert len(names) == 9 and "memfs init" in first and "memfs init" in second
    assert not root.exists()


def test_init_flag_creates_the_store(root):
    async def go():
        async with Client(StdioServerParameters(command=sys.executable,
                                                args=["-m", "memfs", "--root", str(root), "mcp", "--init"],
                                                env=dict(os.environ))) as c:
            return await call(c, "memory_store", {"content": "the first memory of a new store"})
    assert not asyncio.run(go())["duplicate"]
    assert len(memory_files(root)) == 1


def test_stdout_carries_nothing_but_protocol(store_root):
    """Raw JSON-RPC over the pipes: every stdout line is a protocol message, even while the owner starts."""
    requests = [
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "memory_store",
                                                                       "arguments": {"content": "raw pipes"}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "memory_get",
                                                                       "arguments": {"id": "../../nope"}}},
    ]
    proc = subprocess.Popen([sys.executable, "-m", "memfs", "--root", str(store_root), "mcp"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    responses = {}
    try:
        for req in requests:
            proc.stdin.write(json.dumps(req) + "\n")
            proc.stdin.flush()
            while "id" in req and req["id"] not in responses:
                line = proc.stdout.readline()
                assert line, proc.stderr.read()
                msg = json.loads(line)  # anything but JSON-RPC here would fail
                assert msg["jsonrpc"] == "2.0"
                if "id" in msg:
                    responses[msg["id"]] = msg
        proc.stdin.close()
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert responses[1]["result"]["serverInfo"]["name"] == "memfs"
    assert len(responses[2]["result"]["tools"]) == 9
    assert responses[3]["result"]["structuredContent"]["duplicate"] is False
    assert responses[4]["result"]["isError"] is True
    assert "serving" in (store_root / "data" / "logs" / "mcp.log").read_text()


def test_a_session_outlives_its_owner(shared):
    """The owner is stopped (or exits idle) between two calls: the next call starts a new one. (The
    module's sessions outlive it too: their next call, if any, connects to the new owner.)"""
    async def go():
        async with session(shared.root) as c:
            first = await call(c, "memory_store", {"content": "stored before the owner stopped"})
            pid = (await call(c, "memory_health"))["owner_pid"]
            assert run_memfs("--root", str(shared.root), "stop").returncode == 0
            second = await call(c, "memory_store", {"content": "stored after the owner stopped"})
            assert (await call(c, "memory_health"))["owner_pid"] != pid
            hits = (await call(c, "memory_search", {"query": "stored before the owner stopped", "k": 2}))["hits"]
            assert {h["id"] for h in hits} == {first["id"], second["id"]}
    asyncio.run(go())
