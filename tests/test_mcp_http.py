"""MCP over streamable HTTP at /mcp on `memfs serve`, and `memfs mcp --url` (issue #22).

A real `memfs serve` on 127.0.0.1 (tests/test_server.py's Server), the SDK's client over HTTP and
over stdio, the real model and Chroma behind them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys

import httpx2
import pytest
from mcp.client import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client

from conftest import run_memfs
from test_server import Server

TOKEN = "t0ken-" + "k" * 40


@contextlib.asynccontextmanager
async def http_session(url: str, token: str | None = None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=300) as hc:
        async with Client(streamable_http_client(url + "/mcp", http_client=hc), read_timeout_seconds=300) as c:
            yield c


def stdio_params(*global_args: str, tools: str = "all", env: dict | None = None) -> StdioServerParameters:
    return StdioServerParameters(command=sys.executable, args=["-m", "memfs", *global_args, "mcp"],
                                 env={**os.environ, "MEMFS_MCP_TOOLS": tools, **(env or {})})


async def ok(c, name: str, args: dict) -> dict:
    r = await c.call_tool(name, args)
    assert not r.is_error, f"{name}: {r.content[0].text}"
    return r.structured_content


async def whole_graph(c) -> tuple[list[dict], list[dict]]:
    entities, relations, cursor = [], [], None
    while True:
        page = await ok(c, "read_graph", {"cursor": cursor} if cursor else {})
        entities += page["entities"]
        relations += page["relations"]
        cursor = page["next_cursor"]
        if cursor is None:
            return entities, relations


def module_server(tmp_path_factory, name: str, env: dict | None = None):
    """One `memfs serve` (its owner, its model) for the module's tests, which never look at each
    other's memories: starting one per test was 5-10 s each of CI's time."""
    root = tmp_path_factory.mktemp(name) / "store"
    assert run_memfs("--root", str(root), "init").returncode == 0
    s = Server(root, env=env)
    yield s
    if s.proc.poll() is None:
        assert s.stop() == 0


@pytest.fixture(scope="module")
def token_server(tmp_path_factory):
    yield from module_server(tmp_path_factory, "token", env={"MEMFS_API_TOKEN": TOKEN})


@pytest.fixture(scope="module")
def open_server(tmp_path_factory):
    """Without a token (a server on 127.0.0.1 needs none)."""
    yield from module_server(tmp_path_factory, "open")


def test_remote_agent_needs_the_token_and_memfs_mcp_url_reaches_the_same_store(token_server, tmp_path):
    url = token_server.url
    # Without the token: 401 before anything else (the guard in front of every route).
    r = httpx2.post(url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                    headers={"Accept": "application/json, text/event-stream"})
    assert r.status_code == 401
    r = httpx2.post(url + "/mcp", json={}, headers={"Authorization": "Bearer wrong-" + "x" * 40})
    assert r.status_code == 401

    async def over_http():
        async with http_session(url, TOKEN) as c:
            await ok(c, "create_entities", {"entities": [{"name": "Remote Agent", "entityType": "agent",
                                                          "observations": ["Talks to memfs over HTTP"]}]})
            stored = await ok(c, "memory_store", {"content": "The staging database is reset every Sunday"})
            return stored["id"]
    mem_id = asyncio.run(over_http())

    # `memfs --url … --token … mcp` over stdio: the server's store; nothing local is started or created.
    elsewhere = tmp_path / "no-store-here"
    params = stdio_params("--root", str(elsewhere), "--url", url, "--token", TOKEN)

    async def over_stdio():
        async with Client(params, read_timeout_seconds=300) as c:
            opened = await ok(c, "open_nodes", {"names": ["Remote Agent"]})
            got = await ok(c, "memory_get", {"id": mem_id})
            hits = await ok(c, "memory_search", {"query": "when is staging wiped?", "mode": "semantic"})
            await ok(c, "create_entities", {"entities": [{"name": "Stdio Agent", "entityType": "agent",
                                                          "observations": []}]})
            return opened, got, hits
    opened, got, hits = asyncio.run(over_stdio())
    assert [e["name"] for e in opened["entities"]] == ["Remote Agent"]
    assert got["content"] == "The staging database is reset every Sunday"
    assert hits["hits"][0]["id"] == mem_id
    assert not elsewhere.exists(), "memfs mcp --url must not create or own a local store"

    async def back_over_http():
        async with http_session(url, TOKEN) as c:
            return await ok(c, "open_nodes", {"names": ["Stdio Agent"]})
    assert [e["name"] for e in asyncio.run(back_over_http())["entities"]] == ["Stdio Agent"]

    # A wrong token through `memfs mcp --url` is a tool error that says so; the session goes on.
    async def wrong_token():
        async with Client(stdio_params("--root", str(elsewhere), "--url", url, "--token", "nope-" + "x" * 40),
                          read_timeout_seconds=300) as c:
            r = await c.call_tool("read_graph", {})
            return r.is_error, r.content[0].text
    is_error, text = asyncio.run(wrong_token())
    assert is_error and "token" in text.lower()
    assert not elsewhere.exists()


def test_stdio_and_http_sessions_creating_200_entities_each_at_once_lose_nothing(open_server):
    server, root = open_server, open_server.root

    async def create(c, prefix: str):
        for start in range(0, 200, 20):
            names = [f"{prefix} {i:03d}" for i in range(start, start + 20)]
            made = await ok(c, "create_entities", {"entities": [
                {"name": n, "entityType": prefix, "observations": [f"{n} was made by the {prefix} session"]}
                for n in names]})
            assert len(made["entities"]) == 20
            made = await ok(c, "create_relations", {"relations": [
                {"from": a, "to": b, "relationType": "follows"} for a, b in zip(names[1:], names)]})
            assert len(made["relations"]) == 19

    async def both():
        async with Client(stdio_params("--root", str(root), tools="graph"), read_timeout_seconds=300) as s, \
                http_session(server.url) as h:
            before = await whole_graph(h)  # what the module's other tests left
            await asyncio.gather(create(s, "stdio"), create(h, "http"))
            return before, await whole_graph(h)
    (old_entities, old_relations), (entities, relations) = asyncio.run(both())
    names = sorted(e["name"] for e in entities if e not in old_entities)
    assert names == sorted([f"stdio {i:03d}" for i in range(200)] + [f"http {i:03d}" for i in range(200)])
    assert len(entities) == len(old_entities) + 400 and all(e in entities for e in old_entities)
    new = [r for r in relations if r not in old_relations]
    assert len(new) == 2 * 10 * 19 == len({(r["from"], r["to"]) for r in new})
    assert len(relations) == len(old_relations) + len(new)


HOSTILE = [
    ("create_entities", {"entities": [{"name": "", "entityType": "person", "observations": []}]}),
    ("create_entities", {"entities": [{"name": "x", "entityType": "person", "observations": [1, 2]}]}),
    ("create_entities", {"entities": "not a list"}),
    ("create_entities", {"entities": [{"name": "n" * 600, "entityType": "t", "observations": []}]}),
    ("create_relations", {"relations": [{"from": "a\x00b", "to": "c", "relationType": "r"}]}),
    ("add_observations", {"observations": [{"entityName": "../../etc/passwd", "contents": ["x"]}]}),
    ("read_graph", {"cursor": "'; DROP TABLE docs; --"}),
    ("read_graph", {"limit": -1}),
    ("search_nodes", {"query": ""}),
    ("search_nodes", {"query": "q" * 20_000}),
    ("open_nodes", {"names": [None]}),
    ("memory_get", {"id": "../../../etc/passwd"}),
    ("memory_store", {"content": ""}),
    ("memory_search", {"query": "x", "k": 10_000}),
]


def test_hostile_tool_input_over_http_gets_the_same_refusals_as_over_stdio(open_server):
    server, root = open_server, open_server.root

    async def refusals(c) -> list[str]:
        out = []
        for name, args in HOSTILE:
            r = await c.call_tool(name, args)
            assert r.is_error, (name, args, r.structured_content)
            out.append(r.content[0].text)
        return out

    async def both():
        async with http_session(server.url) as h:
            before = await whole_graph(h)  # what the module's other tests left
            over_http = await refusals(h)
        async with Client(stdio_params("--root", str(root)), read_timeout_seconds=300) as s:
            over_stdio = await refusals(s)
        async with http_session(server.url) as h:  # and the server keeps serving
            await ok(h, "create_entities", {"entities": [{"name": "Still here", "entityType": "t",
                                                          "observations": []}]})
            return over_http, over_stdio, before, await whole_graph(h)
    over_http, over_stdio, (old_entities, old_relations), (entities, relations) = asyncio.run(both())
    assert over_http == over_stdio
    # nothing the refusals were sent made it in: the graph is what it was, and the one entity added after
    assert [e["name"] for e in entities if e not in old_entities] == ["Still here"]
    assert len(entities) == len(old_entities) + 1 and sorted(map(str, relations)) == sorted(map(str, old_relations))


def test_mcp_keeps_the_body_limit(token_server):
    from memfs.inputs import MAX_REQUEST_BODY_BYTES

    big = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": "memory_store", "arguments": {"content": "x" * (MAX_REQUEST_BODY_BYTES + 10)}}}
    r = httpx2.post(token_server.url + "/mcp", json=big, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert r.status_code == 413


# -- the SDK's server built in the background (plumbing: no store, a stand-in session manager) -------


def test_the_owners_app_imports_the_mcp_sdk_only_once_it_runs():
    """An owner's start waited ~0.6 s for the SDK's import before it answered /health."""
    import subprocess

    code = "import sys, memfs.http.app; print(sorted(m for m in ('mcp', 'mcp.server') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _endpoint_app(build):
    from starlette.applications import Starlette

    from memfs.http.mcp import McpEndpoint

    endpoint = McpEndpoint(build, is_ready=lambda: True)
    app = Starlette(routes=[endpoint.route])
    app.router.lifespan_context = endpoint.lifespan(app.router.lifespan_context)
    return app


def test_a_call_before_the_sdk_is_built_waits_for_it_and_a_failed_build_is_a_clear_500():
    import threading
    import time

    from starlette.responses import PlainTextResponse
    from starlette.testclient import TestClient

    class Manager:
        running = False

        @contextlib.asynccontextmanager
        async def run(self):
            Manager.running = True
            yield

        async def handle_request(self, scope, receive, send):
            await PlainTextResponse("answered by the SDK" if Manager.running else "not running")(scope, receive, send)

    release = threading.Event()

    def slow_build():
        assert release.wait(10)
        return Manager()

    with TestClient(_endpoint_app(slow_build)) as client:
        threading.Timer(0.3, release.set).start()
        t = time.monotonic()
        r = client.post("/mcp", json={})
        assert r.text == "answered by the SDK" and time.monotonic() - t >= 0.25

    def broken_build():
        raise ImportError("no module named mcp")

    with TestClient(_endpoint_app(broken_build)) as client:
        r = client.post("/mcp", json={})
        assert r.status_code == 500 and "no module named mcp" in r.json()["error"]["message"]
