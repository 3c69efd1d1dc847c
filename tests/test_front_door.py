"""Issue #19, one front door: each defect found at the doors (the extended-memory port, HTTP, MCP,
the CLI, manage_data.py, the owner client) has its regression test here, against real processes:
a real `memfs serve --extended-port` with a token, a real `memfs mcp` over stdio, the real CLI.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import run_memfs, stop_owners
from test_hostile import TOKEN, send
from test_server import Server, free_port

from memfs import inputs
from memfs.connect import Client
from memfs.remote import OwnerGoneError
from memfs.timeparse import InvalidTimeError, parse_when


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One `memfs serve` with a token and the extended-memory port, for the module."""
    ext = free_port()
    s = Server(tmp_path_factory.mktemp("door") / "store", env={"MEMFS_API_TOKEN": TOKEN},
               args=("--extended-port", str(ext)))
    s.ext = ext
    yield s
    if s.proc.poll() is None:
        assert s.stop() == 0


def raw_exchange(port: int, data: bytes, *, pause: float = 0.0, chunks: list[bytes] | None = None,
                 timeout: float = 60) -> tuple[int, dict, float]:
    """Send bytes as given (then `chunks`, `pause` seconds apart); (status, JSON body, seconds taken)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        try:
            for c in chunks or ():
                time.sleep(pause)
                s.sendall(c)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused and closed while we were still sending: the answer is waiting
        answer = b""
        while True:
            try:
                got = s.recv(65536)
            except ConnectionResetError:
                break
            if not got:
                break
            answer += got
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    assert b"application/json" in head.lower(), head
    return status, json.loads(body), time.monotonic() - started


def ext_send(served, method, path, body: bytes | None = None):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", served.ext, timeout=60)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "application/json",
                                                       "Authorization": f"Bearer {TOKEN}"})
        r = conn.getresponse()
        raw = r.read()
        assert r.getheader("content-type", "").startswith("application/json"), (r.status, raw[:200])
        return r.status, json.loads(raw)
    finally:
        conn.close()


# -- the extended-memory port ---------------------------------------------------------------------------

@pytest.mark.parametrize("body", [b'{"key": "t", "value": 1, "ttl": 1e300}', b'{"key": "t", "value": 1, "namespace": {}}',
                                  b'{"key": "t", "value": 1, "ttl": "soon"}', b'{"key": "t", "value": 1, "ttl": -1}',
                                  b'{"key": ["t"], "value": 1}'])
def test_extended_port_refuses_bad_fields_with_json_400(served, body):
    """#19: `{"ttl": 1e300}` and `{"namespace": {}}` were 500 text/plain."""
    status, answer = ext_send(served, "POST", "/store", body)
    assert status == 400 and answer["error"]["code"] in ("bad_request", "invalid"), answer
    assert answer["detail"] == answer["error"]["message"]  # the service's own shape, for its clients
    assert ext_send(served, "GET", "/retrieve/t")[1]["status"] == "not_found"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", str(2**70), '"\\ud800"'])
def test_extended_port_refuses_what_a_memory_file_cannot_hold(served, literal):
    """#19: NaN and Infinity were stored as null."""
    status, answer = ext_send(served, "POST", "/store", f'{{"key": "nan", "value": {{"x": {literal}}}}}'.encode())
    assert status == 400 and answer["error"]["code"] == "invalid", answer
    assert ext_send(served, "GET", "/retrieve/nan")[1]["status"] == "not_found"


def test_extended_port_answers_get_root(served):
    status, answer = ext_send(served, "GET", "/")
    assert status == 200 and answer["service"] == "extended-memory" and answer["links"]["store"] == "/store"


def test_extended_port_second_backup_keeps_the_first(served):
    """#19: the second POST /backup pruned the backup the first had made 12 s earlier."""
    first = ext_send(served, "POST", "/backup")[1]
    time.sleep(1.1)  # backup names have one-second resolution
    second = ext_send(served, "POST", "/backup")[1]
    assert first["status"] == second["status"] == "backup_created" and first["path"] != second["path"]
    assert Path(first["path"]).is_file() and Path(second["path"]).is_file()


def test_extended_port_round_trip_goes_through_the_operations(served):
    assert ext_send(served, "POST", "/store", b'{"key": "k1", "value": {"a": [1, 2]}, "ttl": 3600}')[1]["status"] == "stored"
    got = ext_send(served, "GET", "/retrieve/k1")[1]
    assert got["value"] == {"a": [1, 2]} and got["source"] == "database"
    # the same memory through the main port's key/value route: one store, one set of operations
    assert send(served.port, "GET", "/kv/default/k1")[1]["value"] == {"a": [1, 2]}


# -- HTTP edges, on both ports -------------------------------------------------------------------------

def _ports(served):
    return [served.port, served.ext]


def test_a_100kb_header_in_one_write_is_refused_with_json(served):
    """#19: 100 KB of headers sent in one write was accepted although 64 KiB is documented."""
    for port in _ports(served):
        big = b"X-Big: " + b"a" * 100_000 + b"\r\n"
        status, answer, _ = raw_exchange(port, b"GET /stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                                         + TOKEN.encode() + b"\r\n" + big + b"\r\n")
        assert status in (400, 431) and answer["error"]["code"] in ("too_large", "bad_request"), answer
        # just under the limit is still served
        ok = b"X-Ok: " + b"a" * (inputs.MAX_HEADER_BYTES - 1000) + b"\r\n"
        status, _, _ = raw_exchange(port, b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: "
                                    b"Bearer " + TOKEN.encode() + b"\r\n" + ok + b"\r\n")
        assert status == 200


def test_a_malformed_content_length_gets_json(served):
    """#19: h11's refusal was text/plain."""
    for port in _ports(served):
        status, answer, _ = raw_exchange(port, b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n{}")
        assert status == 400 and answer["error"]["code"] == "bad_request", answer


def test_a_body_sent_one_byte_every_3_seconds_is_timed_out(served):
    """#19: a trickled body held its connection (and a worker) forever; on both ports, at once."""
    from concurrent.futures import ThreadPoolExecutor

    def trickle(port: int, path: str, body: bytes):
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nAuthorization: Bearer "
                f"{TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        return raw_exchange(port, head + body[:1], pause=3.0, chunks=[body[i:i + 1] for i in range(1, 8)])

    with ThreadPoolExecutor(2) as pool:
        done = [pool.submit(trickle, served.port, "/memories", b'{"content": "slow"}'),
                pool.submit(trickle, served.ext, "/store", b'{"key": "slow", "value": "slow"}')]
        for future in done:
            status, answer, took = future.result()
            assert status == 408 and answer["error"]["code"] == "timeout", answer
            assert took < inputs.BODY_TIMEOUT_SECONDS + 12


# -- times: one parser ---------------------------------------------------------------------------------

def test_an_impossible_relative_time_is_a_usage_error_everywhere(served, tmp_path):
    """#19: `since=99999999999d` was a 500 over HTTP and a traceback in the CLI."""
    with pytest.raises(InvalidTimeError):
        parse_when("99999999999d")
    status, answer = send(served.port, "GET", "/memories?since=99999999999d")
    assert status == 422 and answer["error"]["code"] == "bad_request", answer
    for args in (("--root", str(served.root)), ("--root", str(tmp_path / "s"), "--no-daemon")):
        if "--no-daemon" in args:
            assert run_memfs("--root", str(tmp_path / "s"), "init").returncode == 0
        done = run_memfs(*args, "list", "--since", "99999999999d", env={"MEMFS_API_TOKEN": TOKEN}, timeout=120)
        assert done.returncode == 2 and "Traceback" not in done.stderr and "cannot read" in done.stderr, done.stderr


def test_the_same_times_and_units_through_timeparse():
    """MCP's compatibility tools read "last 3 months" with memfs.timeparse's units, as the CLI does."""
    from datetime import datetime, timedelta, timezone

    from memfs.mcp.compat_inputs import parse_timeframe

    now = datetime(2025, 6, 18, 15, 0, tzinfo=timezone.utc)
    assert parse_timeframe("notes from the last 3 months", now)[1] == parse_when("3 months", now=now) \
        == now - timedelta(days=90)
    assert parse_timeframe("what did we say 2 weeks ago", now)[1:] == (datetime(2025, 6, 4, tzinfo=timezone.utc),
                                                                       datetime(2025, 6, 5, tzinfo=timezone.utc))


# -- limits that differed by door ----------------------------------------------------------------------

def test_list_limit_over_the_page_limit_is_refused_in_process_and_through_the_owner(served, tmp_path):
    """#19: `memfs list --limit 5000` exited 0 in-process and 2 through an owner."""
    local = tmp_path / "local"
    assert run_memfs("--root", str(local), "init").returncode == 0
    through_owner = run_memfs("--root", str(served.root), "list", "--limit", "5000", timeout=120)
    in_process = run_memfs("--root", str(local), "--no-daemon", "list", "--limit", "5000", timeout=120)
    assert through_owner.returncode == in_process.returncode == 2, (through_owner.stderr, in_process.stderr)
    for limit in (str(inputs.MAX_PAGE), "1"):
        assert run_memfs("--root", str(local), "--no-daemon", "list", "--limit", limit, timeout=120).returncode == 0
    assert run_memfs("--root", str(local), "--no-daemon", "list", "--limit", "0", timeout=120).returncode == 2


def test_manage_data_on_a_missing_store_exits_3_like_memfs(tmp_path):
    """#19: `manage_data.py list` on a missing store exited 1 ("problems found"), `memfs list` 3."""
    missing = tmp_path / "nothing-here"
    manage = subprocess.run([sys.executable, str(Path(__file__).parent.parent / "manage_data.py"), "--root",
                             str(missing), "list"], capture_output=True, text=True, timeout=120)
    memfs = run_memfs("--root", str(missing), "list", timeout=120)
    assert manage.returncode == memfs.returncode == 3, (manage.stderr, memfs.stderr)
    assert "memfs init" in manage.stderr


# -- the owner client: no side effect twice -------------------------------------------------------------

class DropsAfterSend:
    """An Operations whose connection drops after every request is sent (the owner may have acted)."""

    def __init__(self, calls: list[str]):
        self.calls = calls

    def __getattr__(self, name):
        def call(*args, **kwargs):
            self.calls.append(name)
            if len(self.calls) == 1:
                raise OwnerGoneError("lost the connection (test)", sent=True)
            return name
        return call

    def close(self):
        pass


@pytest.mark.parametrize("name, kwargs", [("backup", {}), ("import_sources", {"sources": ["x"]}),
                                          ("kv_set", {"key": "k", "value": 1}), ("add", {"content": "c", "allow_duplicate": True}),
                                          ("restore", {"archive": "a"}), ("kv_rm", {"key": "k"})])
def test_a_call_with_a_side_effect_is_not_sent_again_once_sent(name, kwargs):
    """#19: `backup` was retried after the request was sent, so one call could make two archives.
    (A plumbing test of memfs.connect.Client: the operations are a stand-in that drops the connection.)"""
    calls: list[str] = []
    client = Client(lambda: DropsAfterSend(calls), wait=5)
    with pytest.raises(OwnerGoneError):
        getattr(client, name)(**kwargs)
    assert calls == [name]


@pytest.mark.parametrize("name, kwargs", [("search", {"query": "q"}), ("list", {}), ("add", {"content": "c"}),
                                          ("kv_get", {"key": "k"})])
def test_a_read_is_sent_again_after_a_drop(name, kwargs):
    calls: list[str] = []
    client = Client(lambda: DropsAfterSend(calls), wait=5)
    assert getattr(client, name)(**kwargs) == name and calls == [name, name]


# -- MCP: the same limits, the same times, and a reply to every line -----------------------------------

def mcp_process(root: Path, *options: str, client: str = "door") -> subprocess.Popen:
    """`memfs [options] mcp` on the store at root, through the MCP handshake: ready for tools/call."""
    proc = subprocess.Popen([sys.executable, "-m", "memfs", "--root", str(root), *options, "mcp"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ})
    try:
        init = rpc(proc, {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": client, "version": "1"}}})
        assert "result" in init, init
        rpc(proc, {"jsonrpc": "2.0", "method": "notifications/initialized"})
    except BaseException:  # nothing left running when the handshake fails
        proc.kill()
        proc.wait(60)
        raise
    proc.next_id = 0
    return proc


def rpc(proc, message: bytes | dict) -> dict | None:
    raw = message if isinstance(message, bytes) else json.dumps(message).encode()
    proc.stdin.write(raw + b"\n")
    proc.stdin.flush()
    if isinstance(message, dict) and "id" not in message:
        return None
    # A reply within the time, or a failure that says so (#19: some lines once got no reply at all).
    ready, _, _ = select.select([proc.stdout], [], [], 300)
    assert ready, f"no reply to {raw[:120]!r}"
    return json.loads(proc.stdout.readline())


@pytest.fixture(scope="module")
def mcp(tmp_path_factory):
    root = tmp_path_factory.mktemp("mcp") / "store"
    assert run_memfs("--root", str(root), "init").returncode == 0
    long_id = "L" * 300
    (root / "data" / "memories" / "long.json").write_text(json.dumps(
        {"id": long_id, "content": "A memory whose id is 300 characters long", "tags": ["long"]}))
    os.environ.setdefault("MEMFS_IDLE_EXIT", "30")  # the owner `memfs mcp` starts; stopped below all the same
    proc = mcp_process(root)
    proc.long_id = long_id
    proc.next_id = 100
    yield proc
    proc.stdin.close()
    assert proc.wait(60) == 0
    stop_owners(root)


def tool(proc, name: str, arguments: dict) -> dict:
    proc.next_id += 1
    reply = rpc(proc, {"jsonrpc": "2.0", "id": proc.next_id, "method": "tools/call",
                       "params": {"name": name, "arguments": arguments}})
    assert reply["id"] == proc.next_id and "result" in reply, reply
    return reply["result"]


HOSTILE_LINES = {
    "nan": b'{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"memory_store","arguments":'
           b'{"content":"nan","metadata":{"x":NaN}}}}',
    "infinity": b'{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"memory_store","arguments":'
                b'{"content":"inf","metadata":{"x":-Infinity}}}}',
    "lone-surrogate": b'{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"memory_store","arguments":'
                      b'{"content":"\\ud800 alone"}}}',
    "10000-deep": b'{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"memory_store","arguments":'
                  b'{"content":"deep","metadata":{"x":' + b"[" * 10_000 + b"]" * 10_000 + b'}}}}',
    "not-utf8": b'{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"memory_store","arguments":'
                b'{"content":"caf\xe9 latin-1"}}}',
    "2^70": b'{"jsonrpc":"2.0","id":ID,"method":"tools/call","params":{"name":"memory_store","arguments":'
            b'{"content":"big","metadata":{"n":1180591620717411303424}}}}',
}


@pytest.mark.parametrize("name", HOSTILE_LINES)
def test_mcp_answers_every_hostile_line_with_a_clear_error(mcp, name):
    """#19: NaN/Infinity were stored as null; a lone surrogate or 10,000-deep nesting got no reply at
    all; non-UTF-8 became U+FFFD; 2^70 gave a bare "Error executing tool"."""
    mcp.next_id += 1
    reply = rpc(mcp, HOSTILE_LINES[name].replace(b"ID", str(mcp.next_id).encode()))
    assert reply["id"] == mcp.next_id and reply["error"]["code"] == -32700, reply
    assert "memfs refused the request" in reply["error"]["message"]
    listed = tool(mcp, "memory_list", {"limit": 1000})["structuredContent"]
    assert all(m["content"] not in ("nan", "inf", "deep", "big") and "\ufffd" not in m["content"]
               for m in listed["memories"])


def test_mcp_takes_the_cores_limits_and_times(mcp):
    """#19: MCP capped k at 100 (the core: 1000), refused ids over 200 characters (those memories were
    unreachable), allowed tags of 200 characters (the core: 100), and took ISO times only."""
    got = tool(mcp, "memory_get", {"id": mcp.long_id})
    assert not got.get("isError") and got["structuredContent"]["id"] == mcp.long_id, got
    hits = tool(mcp, "memory_search", {"query": "a long id", "k": inputs.MAX_K})
    assert not hits.get("isError"), hits
    assert tool(mcp, "memory_search", {"query": "x", "k": inputs.MAX_K + 1})["isError"]
    page = tool(mcp, "memory_list", {"limit": inputs.MAX_PAGE, "since": "7d"})
    assert not page.get("isError") and any(m["id"] == mcp.long_id for m in page["structuredContent"]["memories"])
    assert tool(mcp, "memory_list", {"since": "last week", "until": "tomorrow-ish"})["isError"]
    long_tag = tool(mcp, "memory_store", {"content": "tagged", "tags": ["t" * (inputs.MAX_TAG_CHARS + 1)]})
    assert long_tag["isError"] and "100" in long_tag["content"][0]["text"], long_tag


def test_mcp_no_daemon_owns_the_store_in_its_own_process(tmp_path):
    """#19 item 4: `memfs --no-daemon mcp` was ignored (it started a background owner). Now the MCP
    process owns the store itself: its pid is in the lock, and no other owner is ever started."""
    from memfs.lock import read_owner

    root = tmp_path / "store"
    assert run_memfs("--root", str(root), "init").returncode == 0
    (root / "data" / "memories" / "by-hand.json").write_text(json.dumps({"content": "kept by the MCP process itself"}))
    proc = mcp_process(root, "--no-daemon")
    try:
        listed = tool(proc, "memory_list", {})
        assert not listed.get("isError"), listed
        assert [m["content"] for m in listed["structuredContent"]["memories"]] == ["kept by the MCP process itself"]
        owner = read_owner(root / "data" / "memfs.lock")
        assert owner.get("pid") == proc.pid, owner  # not a background owner's
    finally:
        proc.stdin.close()
        assert proc.wait(120) == 0


def test_every_memfs_variable_the_docs_name_is_read_somewhere():
    """#19 item 7: docs/DESIGN.md documented MEMFS_CHROMA_URL, which nothing read. Every MEMFS_
    variable named in README.md or docs/ is read by memfs/, docker/ or manage_data.py (or, for the
    test suite's own knobs, by tests/ or scripts/), or the docs say it is gone."""
    import re

    top = Path(__file__).resolve().parent.parent
    named: dict[str, str] = {}
    for doc in [top / "README.md", *sorted((top / "docs").glob("*.md"))]:
        for line in doc.read_text().splitlines():
            for name in re.findall(r"\bMEMFS_[A-Z0-9_]*[A-Z0-9]\b", line):
                named.setdefault(name, line)
    readers = [p for d in ("memfs", "docker", "tests", "scripts") for p in (top / d).rglob("*") if p.is_file()
               and p.suffix in (".py", ".sh", ".yml", "") and p.name != Path(__file__).name]
    code = "\n".join(p.read_text(errors="replace") for p in [*readers, top / "manage_data.py"])
    unread = {n: line for n, line in named.items() if n not in code and "not supported" not in line
              and "was documented" not in line}
    assert not unread, f"documented but read nowhere: {unread}"
    assert "MEMFS_API_TOKEN" in named and "MEMFS_ROOT" in named  # the scan finds what it looks for


def test_the_stdio_guard_copies_the_last_reply_and_ends_though_the_sdk_keeps_its_duplicate():
    """The MCP SDK serves the wire from its own duplicate of fd 1 and never closes it, so the guard's
    copying thread never saw end of file: every `memfs mcp` waited its 10 s join timeout to exit.
    Here a duplicate is kept open the same way; the last reply must still come out, and the thread end."""
    script = """
import os, sys
from memfs.stdio_guard import StdioGuard
guard = StdioGuard()
with guard:
    kept = os.dup(1)  # as the SDK keeps its own, never closed
    os.write(kept, b'{"jsonrpc": "2.0", "id": 1, "result": {}}\\n')
print("ended" if not guard._threads[1].is_alive() else "still copying", file=sys.stderr)
"""
    done = subprocess.run([sys.executable, "-c", script], input=b"", capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b'{"jsonrpc": "2.0", "id": 1, "result": {}}\n'
    assert done.stderr.decode().strip().endswith("ended"), done.stderr
