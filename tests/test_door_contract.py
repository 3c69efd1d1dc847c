"""The contract over the front doors (#19): the same inputs — valid, at the limits, over them, hostile —
through in-process operations, the owner's socket, HTTP, MCP and the CLI give the same result and the
same error (its exit code; MCP, which has no codes, the same ok-or-error).

Cases are generated from the request schemas' bounds (memfs.schemas / memfs.inputs) by hypothesis;
each interface answers every case (≥ 200 per interface per operation). One `memfs serve` (token set),
one `memfs mcp` session and one in-process store serve the whole module: two stores with the same
hand-written memories (fixed ids and times), one owned here, one by the server.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import urllib.parse
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import run_memfs, stop_owners
from test_front_door import mcp_process, rpc
from test_server import Server, call, free_port, wait_until

from memfs import inputs, schemas
from memfs.cli import cli
from memfs.errors import MemfsError, error_class
from memfs.local import LocalOperations
from memfs.remote import RemoteOperations

TOKEN = "door-contract-token-0123456789abcdef"
TAGS = ["alpha", "beta", "gamma", "with space", "ünï"]
TYPES = ["note", "fact", "todo"]
CASES = int(os.environ.get("MEMFS_CONTRACT_CASES", "200"))


def write_memories(root: Path) -> None:
    assert run_memfs("--root", str(root), "init").returncode == 0
    now = datetime.now(timezone.utc).replace(microsecond=0)
    for i in range(40):
        created = now - timedelta(days=i * 3 + 0.5)  # never near a day boundary of "7d", "2w"…
        doc = {"id": f"mem-{i:02d}", "content": f"contract memory number {i} about {TAGS[i % 5]}",
               "tags": [TAGS[i % 5], TAGS[(i * 2) % 5]], "type": TYPES[i % 3],
               "created_at": created.isoformat().replace("+00:00", "Z"),
               "updated_at": created.isoformat().replace("+00:00", "Z")}
        (root / "data" / "memories" / f"mem-{i:02d}.json").write_text(json.dumps(doc))


class Doors:
    """Each interface as a function of the same request, answering an Outcome: ("ok", result) or
    ("error", exit code)."""

    def __init__(self, local, remote, server: Server, mcp):
        self.local, self.remote, self.server, self.mcp = local, remote, server, mcp
        self.http = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        self.mcp_id = 1000

    # -- list ---------------------------------------------------------------------------------------
    def list_ops(self, ops, r: dict):
        try:
            page = ops.list(schemas.filters(r["tags"], r["match"], r["type"], r["since"], r["until"]),
                            limit=r["limit"], cursor=r["cursor"])
        except MemfsError as e:
            return "error", e.exit_code
        return "ok", ([m.memory.id for m in page.memories], page.next_cursor)

    def list_http(self, r: dict):
        q = [("tag", t) for t in r["tags"]] + [(k, r[k]) for k in ("match", "type", "since", "until", "cursor")
                                              if r[k] is not None] + [("limit", r["limit"])]
        self.http.request("GET", "/memories?" + urllib.parse.urlencode(q),
                          headers={"Authorization": f"Bearer {TOKEN}"})
        resp = self.http.getresponse()
        body = json.loads(resp.read())
        if resp.status >= 400:
            return "error", error_class(body["error"]["code"]).exit_code
        return "ok", ([m["id"] for m in body["memories"]], body["next_cursor"])

    def list_cli(self, r: dict):
        args = ["--url", self.server.url, "--token", TOKEN, "list", "--json", "--limit", str(r["limit"]),
                "--match", r["match"]]
        for t in r["tags"]:
            args += ["--tag", t]
        for k, flag in (("type", "--type"), ("since", "--since"), ("until", "--until"), ("cursor", "--cursor")):
            if r[k] is not None:
                args += [flag, r[k]]
        done = CliRunner().invoke(cli, args, catch_exceptions=False)
        self.last_cli = (args, done.output)
        if done.exit_code:
            return "error", done.exit_code
        body = json.loads(done.output)
        return "ok", ([m["id"] for m in body["memories"]], body["next_cursor"])

    def list_mcp(self, r: dict):
        self.mcp_id += 1
        arguments = {k: r[k] for k in ("tags", "match", "type", "since", "until", "limit", "cursor") if r[k] is not None}
        reply = rpc(self.mcp, {"jsonrpc": "2.0", "id": self.mcp_id, "method": "tools/call",
                               "params": {"name": "memory_list", "arguments": arguments}})
        result = reply.get("result")
        if result is None or result.get("isError"):
            return "error", None
        body = result["structuredContent"]
        return "ok", ([m["id"] for m in body["memories"]], body["next_cursor"])


def started_server(root: Path, env: dict) -> Server:
    """test_server.Server, with more patience for a loaded machine (the first reconcile embeds)."""
    s = Server.__new__(Server)
    s.root, s.port = root, free_port()
    s.url = f"http://127.0.0.1:{s.port}"
    s.env = {**os.environ, "MEMFS_ROOT": str(root), **env}
    s.proc = subprocess.Popen([sys.executable, "-m", "memfs", "serve", "--port", str(s.port)], env=s.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: call(s.url + "/health")[0] == 200, timeout=600, what="healthy server")
    except BaseException:
        s.proc.kill()
        s.proc.wait(60)
        raise
    return s


class MoreDoors:
    """get and keyword search, through the same five doors."""

    def get_ops(self, ops, mem_id: str):
        try:
            return "ok", ops.get(mem_id).memory.id
        except MemfsError as e:
            return "error", e.exit_code

    def get_http(self, mem_id: str):
        self.http.request("GET", "/memories/" + urllib.parse.quote(mem_id, safe=""),
                          headers={"Authorization": f"Bearer {TOKEN}"})
        resp = self.http.getresponse()
        body = json.loads(resp.read())
        if resp.status >= 400:
            return "error", error_class(body["error"]["code"]).exit_code
        return "ok", body["id"]

    def get_cli(self, mem_id: str):
        done = CliRunner().invoke(cli, ["--url", self.server.url, "--token", TOKEN, "get", "--json", "--", mem_id],
                                  catch_exceptions=False)
        self.last_cli = (mem_id, done.output)
        return ("error", done.exit_code) if done.exit_code else ("ok", json.loads(done.output)["id"])

    def get_mcp(self, mem_id: str):
        return self.tool("memory_get", {"id": mem_id}, lambda b: b["id"])

    def search_ops(self, ops, r: dict):
        try:
            hits = ops.search(r["query"], k=r["k"], mode="keyword")
        except MemfsError as e:
            return "error", e.exit_code
        return "ok", [h.memory.id for h in hits.hits]

    def search_http(self, r: dict):
        self.http.request("POST", "/search", body=json.dumps({"query": r["query"], "k": r["k"], "mode": "keyword"}),
                          headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        resp = self.http.getresponse()
        body = json.loads(resp.read())
        if resp.status >= 400:
            return "error", error_class(body["error"]["code"]).exit_code
        return "ok", [h["id"] for h in body["hits"]]

    def search_cli(self, r: dict):
        done = CliRunner().invoke(cli, ["--url", self.server.url, "--token", TOKEN, "search", "--json", "--mode",
                                        "keyword", "-k", str(r["k"]), "--", r["query"]], catch_exceptions=False)
        self.last_cli = (r, done.output)
        return ("error", done.exit_code) if done.exit_code else ("ok", [h["id"] for h in json.loads(done.output)["hits"]])

    def search_mcp(self, r: dict):
        return self.tool("memory_search", {"query": r["query"], "k": r["k"], "mode": "keyword"},
                         lambda b: [h["id"] for h in b["hits"]])

    def tool(self, name: str, arguments: dict, pick):
        self.mcp_id += 1
        reply = rpc(self.mcp, {"jsonrpc": "2.0", "id": self.mcp_id, "method": "tools/call",
                               "params": {"name": name, "arguments": arguments}})
        result = reply.get("result")
        if result is None or result.get("isError"):
            return "error", None
        return "ok", pick(result["structuredContent"])


class AllDoors(Doors, MoreDoors):
    pass


@pytest.fixture(scope="module")
def doors(tmp_path_factory):
    base = tmp_path_factory.mktemp("contract")
    write_memories(base / "local")
    write_memories(base / "served")
    os.environ.setdefault("MEMFS_IDLE_EXIT", "60")
    local = LocalOperations.open(base / "local")
    server = started_server(base / "served", {"MEMFS_API_TOKEN": TOKEN})
    mcp = sock = None
    try:  # whatever fails while setting up, nothing is left running
        sock = RemoteOperations(socket=str(next((base / "served" / "data").glob("memfs.sock"))))
        mcp = mcp_process(base / "served", client="contract")
        yield AllDoors(local, sock, server, mcp)
    finally:
        if mcp is not None:
            mcp.stdin.close()
            mcp.wait(60)
        if sock is not None:
            sock.close()
        local.close()
        server.stop()
        stop_owners(base)


# -- the cases: the schemas' bounds, each side of them, and what a careless client sends ------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)  # no surrogates: no URL carries one
limits = st.one_of(st.sampled_from([1, 2, 5, inputs.MAX_PAGE, inputs.MAX_PAGE + 1, 0, -1, 5000]),
                   st.integers(-3, inputs.MAX_PAGE + 3))
times = st.one_of(st.none(), st.sampled_from(["7d", "2w", "12h", "yesterday", "last week", "this month", "3 months",
                                              "2025-01-01", "2999-01-01T00:00:00Z", "99999999999d", "soon", "",
                                              "x" * (inputs.MAX_TIME_CHARS + 1), "0d", "1y"]), text)
cursors = st.one_of(st.none(), st.sampled_from(["0", "5", "39", "40", "1000", "-1", "x", "9" * 13]))
list_requests = st.fixed_dictionaries({
    "tags": st.lists(st.one_of(st.sampled_from(TAGS), text.filter(lambda t: t.strip() == t and t)), max_size=3),
    "match": st.sampled_from(["any", "all"]),
    "type": st.one_of(st.none(), st.sampled_from(TYPES + ["other"]), text.filter(lambda t: t.strip() == t and t)),
    "since": times, "until": times, "limit": limits, "cursor": cursors,
})


doors_now = None


def same(outcomes: dict) -> None:
    """Every door's outcome equals the in-process one; MCP (no exit codes) the same ok-or-error."""
    expected = outcomes["in-process"]
    for door, got in outcomes.items():
        if door == "mcp":
            assert got[0] == expected[0] and (got[0] == "error" or got == expected), (door, got, expected)
        else:
            assert got == expected, (door, got, expected, getattr(doors_now, "last_cli", None))


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=list_requests)
def test_list_is_the_same_through_every_door(doors, request):
    global doors_now
    doors_now = doors
    same({"in-process": doors.list_ops(doors.local, request), "socket": doors.list_ops(doors.remote, request),
          "http": doors.list_http(request), "cli": doors.list_cli(request), "mcp": doors.list_mcp(request)})


def test_the_cases_reach_both_sides_of_every_bound(doors):
    """The generated cases are not all refusals (nor all successes): at the limit ok, past it refused."""
    base = {"tags": [], "match": "any", "type": None, "since": None, "until": None, "cursor": None}
    for limit, ok in ((inputs.MAX_PAGE, "ok"), (inputs.MAX_PAGE + 1, "error"), (1, "ok"), (0, "error")):
        r = {**base, "limit": limit}
        outcomes = {"in-process": doors.list_ops(doors.local, r), "http": doors.list_http(r),
                    "cli": doors.list_cli(r), "mcp": doors.list_mcp(r)}
        assert {o[0] for o in outcomes.values()} == {ok}, outcomes
    page = doors.list_ops(doors.local, {**base, "limit": 5, "since": "7d"})
    assert page[0] == "ok" and 0 < len(page[1][0]) <= 3


ids = st.one_of(st.sampled_from([f"mem-{i:02d}" for i in range(40)] + ["mem-99", "nope", "../etc/passwd", "a/b",
                                  "x" * 300, "y" * (inputs.MAX_ID_CHARS + 1), "mem-01 ", "%2e%2e"]),
                text.filter(lambda t: t.strip() == t and t and t not in (".", "..")))


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(mem_id=ids)
def test_get_is_the_same_through_every_door(doors, mem_id):
    global doors_now
    doors_now = doors
    same({"in-process": doors.get_ops(doors.local, mem_id), "socket": doors.get_ops(doors.remote, mem_id),
          "http": doors.get_http(mem_id), "cli": doors.get_cli(mem_id), "mcp": doors.get_mcp(mem_id)})


queries = st.one_of(st.sampled_from(["contract", "alpha", "memory number 7", "gamma beta", "", "   ", "zzz",
                                     "q" * (inputs.MAX_QUERY_CHARS + 1), "AND OR NOT", '"quoted', "-x", "*"]), text)
search_requests = st.fixed_dictionaries({"query": queries, "k": st.one_of(
    st.sampled_from([1, 5, inputs.MAX_K, inputs.MAX_K + 1, 0]), st.integers(-2, 50))})


@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck))
@given(request=search_requests)
def test_keyword_search_is_the_same_through_every_door(doors, request):
    global doors_now
    doors_now = doors
    same({"in-process": doors.search_ops(doors.local, request), "socket": doors.search_ops(doors.remote, request),
          "http": doors.search_http(request), "cli": doors.search_cli(request), "mcp": doors.search_mcp(request)})
