"""The extended-memory service's HTTP API on memfs: its docs' curl examples, run unchanged (bar the
port) with the real curl against a real uvicorn on 127.0.0.1 serving a real MemoryStore.

The examples are those of sutazai/sutazaiapp docs/mcp/EXTENDED_MEMORY_PERSISTENCE_MIGRATION.md
("API Usage Examples", "Health Monitoring"); the response shapes those of its server.py.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import threading
import time

import pytest
import uvicorn

from memfs import kv
from memfs.http.extended import extended_memory_app
from memfs.local import LocalOperations

DOC_EXAMPLES = {
    "store": """curl -X POST http://localhost:3009/store \\
    -H "Content-Type: application/json" \\
    -d '{"key": "user_settings", "value": {"theme": "dark", "lang": "en"}}'""",
    "retrieve": "curl http://localhost:3009/retrieve/user_settings",
    "list": 'curl "http://localhost:3009/list?limit=50&offset=0"',
    "stats": "curl http://localhost:3009/stats",
    "backup": "curl -X POST http://localhost:3009/backup",
    "health": "curl http://localhost:3009/health",
    "persistence": "curl -s http://localhost:3009/health | jq '.persistence'",
}


@pytest.fixture
def ops(root):
    o = LocalOperations.open(root)
    yield o
    o.close()


@pytest.fixture
def store(ops):
    """The store the operations own, to look at what the routes wrote."""
    return ops.owner.store


@pytest.fixture
def server(ops, root):
    app = extended_memory_app(lambda: ops, str(root))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield port
    srv.should_exit = True
    thread.join(10)


def curl(command: str, port: int):
    """Run a documented curl command as a shell would, on our port; returns its parsed JSON output."""
    command = command.replace("localhost:3009", f"127.0.0.1:{port}").replace("curl ", "curl -sS ", 1)
    if "| jq" in command:  # jq may not be installed: do its one job here
        command, _, expr = command.partition("| jq")
        out = json.loads(subprocess.run(command, shell=True, capture_output=True, text=True, check=True).stdout)
        return out[shlex.split(expr)[0].lstrip(".")]
    done = subprocess.run(command, shell=True, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)


def test_documented_curl_examples_work_unchanged(server, store):
    stored = curl(DOC_EXAMPLES["store"], server)
    assert stored["status"] == "stored" and stored["key"] == "user_settings" and stored["persisted"] is True
    assert "timestamp" in stored

    got = curl(DOC_EXAMPLES["retrieve"], server)
    assert got == {"status": "found", "key": "user_settings", "value": {"theme": "dark", "lang": "en"},
                   "source": "database"}

    listed = curl(DOC_EXAMPLES["list"], server)
    assert listed["keys"] == ["user_settings"] and listed["total_count"] == 1
    assert (listed["limit"], listed["offset"], listed["has_more"]) == (50, 0, False)
    assert listed["metadata"][0]["type"] == "dict" and listed["metadata"][0]["access_count"] == 1

    stats = curl(DOC_EXAMPLES["stats"], server)
    assert stats["statistics"]["total_items"] == 1
    assert stats["most_accessed"] == [{"key": "user_settings", "count": 1}]
    assert stats["least_accessed"] == [{"key": "user_settings", "count": 1}]

    health = curl(DOC_EXAMPLES["health"], server)
    assert health["status"] == "healthy" and health["persistence"]["enabled"] is True
    assert health["statistics"]["memory_items"] == 1
    assert curl(DOC_EXAMPLES["persistence"], server)["enabled"] is True

    backup = curl(DOC_EXAMPLES["backup"], server)
    assert backup["status"] == "backup_created" and backup["path"].endswith(".tar.gz")

    # the value is an ordinary memfs memory: a file, searchable
    item = kv.kv_get(store, "user_settings", touch=False)
    assert store.path_of(item.id).is_file()


def test_values_of_any_json_type_missing_keys_and_clear_needs_confirmation(server, store):
    base = f"http://127.0.0.1:{server}"
    for key, value in (("n", 42), ("f", 1.5), ("b", False), ("nil", None), ("l", [1, 2]), ("s", "text")):
        body = json.dumps({"key": key, "value": value})
        assert curl(f"curl -X POST {base}/store -H 'Content-Type: application/json' -d '{body}'", server)["status"] == "stored"
        assert curl(f"curl {base}/retrieve/{key}", server)["value"] == value
    assert curl(f"curl {base}/retrieve/nope", server) == {"status": "not_found", "key": "nope"}
    missing = curl(f"curl -X POST {base}/store -H 'Content-Type: application/json' -d '{{\"value\": 1}}'", server)
    assert missing["detail"] == "Key is required" and missing["error"]["code"] == "bad_request"
    page = curl(f"curl '{base}/list?limit=2&offset=0'", server)
    assert len(page["keys"]) == 2 and page["total_count"] == 6 and page["has_more"] is True

    refused = curl(f"curl -X DELETE {base}/clear", server)
    assert "Confirmation required" in refused["detail"] and len(kv.kv_list(store)) == 6
    assert curl(f"curl -X DELETE '{base}/clear?confirm=true'", server)["status"] == "cleared"
    assert kv.kv_list(store) == []


def test_ttl_extension_on_store(server, store):
    base = f"http://127.0.0.1:{server}"
    body = json.dumps({"key": "otp", "value": "123456", "ttl": 1})
    curl(f"curl -X POST {base}/store -H 'Content-Type: application/json' -d '{body}'", server)
    assert curl(f"curl {base}/retrieve/otp", server)["status"] == "found"
    time.sleep(1.2)
    assert curl(f"curl {base}/retrieve/otp", server)["status"] == "not_found"


TOKEN = "extended-port-token-0123456789"


def _send(port, method, path, body: bytes | None = None, token: str | None = None):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)  # the first store waits for the model
    headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
    try:
        try:
            conn.request(method, path, body=body, headers=headers)
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused before the body was read (413, 401): the answer is waiting all the same
        r = conn.getresponse()
        return r.status, json.loads(r.read() or b"null")
    finally:
        conn.close()


def test_the_extended_port_takes_the_token_and_the_body_limit_of_the_main_port(tmp_path):
    """#19: `serve --extended-port` once answered every route without the token (POST /store, every
    key, DELETE /clear) and read a body of any size whole. A real `memfs serve` with a token set."""
    from test_server import Server, free_port

    from memfs.inputs import MAX_REQUEST_BODY_BYTES

    ext = free_port()
    server = Server(tmp_path / "store", env={"MEMFS_API_TOKEN": TOKEN}, args=("--extended-port", str(ext)))
    try:
        stored = json.dumps({"key": "k", "value": {"secret": 1}}).encode()
        assert _send(ext, "POST", "/store", stored, token=TOKEN)[0] == 200
        for method, path, body in (("POST", "/store", json.dumps({"key": "k", "value": 2}).encode()),
                                   ("GET", "/retrieve/k", None), ("GET", "/list", None),
                                   ("DELETE", "/clear?confirm=true", None), ("GET", "/stats", None),
                                   ("POST", "/backup", None), ("GET", "/health", None)):
            status, answer = _send(ext, method, path, body)
            assert status == 401 and answer["error"]["code"] == "unauthorized", (method, path, answer)
            status, _ = _send(ext, method, path, body, token="wrong-" + TOKEN)
            assert status == 401, (method, path)
        # Nothing the refused requests asked for happened.
        assert _send(ext, "GET", "/retrieve/k", token=TOKEN)[1]["value"] == {"secret": 1}
        assert not list((tmp_path / "store" / "backups").glob("memory_backup_*"))
        status, answer = _send(ext, "POST", "/store", b'{"key": "big", "value": "' + b"x" * MAX_REQUEST_BODY_BYTES + b'"}',
                               token=TOKEN)
        assert status == 413 and answer["error"]["code"] == "too_large"
        assert _send(ext, "GET", "/retrieve/big", token=TOKEN)[1]["status"] == "not_found"
    finally:
        assert server.stop() == 0
