"""`memfs serve`: a real uvicorn on 127.0.0.1 in a subprocess, the real model and Chroma behind it."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from memfs import MemoryStore
from memfs.lock import read_owner

from conftest import sized

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call(url, method="GET", body=None, token=None, timeout=120, headers=None):
    req = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body is not None else None)
    req.add_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        req.add_header(name, value)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def wait_until(predicate, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def oversized_post(port: int) -> int:
    """Announce a 2 MiB body; the server must refuse it from the header, before reading it."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/memories")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(2 << 20))
    conn.endheaders()
    status = conn.getresponse().status
    conn.close()
    return status


class Server:
    def __init__(self, root: Path, env: dict | None = None, args=()):
        self.root, self.port = root, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "MEMFS_ROOT": str(root), **(env or {})}
        self.proc = subprocess.Popen([sys.executable, "-m", "memfs", "serve", "--port", str(self.port), *args],
                                     env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=open(root.parent / f"server-{self.port}.log", "wb"))
        wait_until(lambda: call(self.url + "/health")[0] == 200, what="healthy server")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture
def server(root):
    s = Server(root)
    yield s
    if s.proc.poll() is None:
        assert s.stop() == 0


@pytest.fixture(scope="module")
def running_server(tmp_path_factory):
    """One server for the tests that only need one running (none counts or restores the store's whole
    content): a server start, and its model load, each of them no longer pays."""
    s = Server(tmp_path_factory.mktemp("running") / "store")
    yield s
    if s.proc.poll() is None:
        assert s.stop() == 0


def memfs_cli(*args, env):
    return subprocess.run([sys.executable, "-m", "memfs", *args], env=env, capture_output=True, text=True, timeout=300)


def test_crud_search_and_openapi(server):
    u = server.url
    code, info = call(u + "/")
    assert code == 200 and info["links"]["health"] == "/health"
    # Chroma is opened and checked just after the startup file reconcile; /health shows it then.
    wait_until(lambda: call(u + "/health")[1]["index"]["chroma_ok"] is True, what="Chroma checked")
    code, health = call(u + "/health")
    assert health["persistence"]["writable"] and health["index"]["vectors"] == 0
    code, added = call(u + "/memories", "POST", {"content": "User prefers dark theme", "tags": ["ui"]})
    assert code == 201 and not added["duplicate"]
    code, again = call(u + "/memories", "POST", {"content": "User prefers dark theme"})
    assert code == 200 and again["duplicate"] and again["id"] == added["id"]
    mid = added["id"]
    assert call(u + f"/memories/{mid}")[1]["content"] == "User prefers dark theme"
    code, patched = call(u + f"/memories/{mid}", "PATCH", {"add_tags": ["prefs"], "content": "User prefers light theme"})
    assert code == 200 and patched["tags"] == ["ui", "prefs"]
    code, hits = call(u + "/search", "POST", {"query": "what colour scheme does the user like", "mode": "semantic"})
    assert hits["hits"][0]["id"] == mid
    code, page = call(u + "/memories?tag=prefs&limit=1")
    assert [m["id"] for m in page["memories"]] == [mid] and page["next_cursor"] is None
    code, removed = call(u + f"/memories/{mid}", "DELETE")
    assert code == 200 and removed["removed"] == mid and removed["memory"]["content"] == "User prefers light theme"
    code, err = call(u + f"/memories/{mid}")
    assert code == 404 and err["error"]["code"] == "not_found"
    code, err = call(u + "/memories", "POST", {"content": ""})
    assert code == 422 and err["error"]["code"] == "invalid"
    assert oversized_post(server.port) == 413
    code, spec = call(u + "/openapi.json")
    assert code == 200 and "/search" in spec["paths"]


def test_concurrent_writers(server):
    """8 writers x 80 POSTs at once (x 200 with MEMFS_FULL=1): none fails, none is lost."""
    errors, status = [], []
    writes = sized(200, 80)

    def writer(n):
        for i in range(writes):
            code, body = call(server.url + "/memories", "POST", {"content": f"client {n} write {i} token w{n}x{i}y"})
            status.append(code)
            if code >= 500:
                errors.append(body)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and set(status) == {201}
    stats = call(server.url + "/stats")[1]
    assert stats["memories"] == 8 * writes and stats["vectors"] == 8 * writes
    for n, i in [(0, 0), (3, writes // 2), (7, writes - 1)]:
        hits = call(server.url + "/search", "POST", {"query": f"w{n}x{i}y", "mode": "keyword", "k": 1})[1]["hits"]
        assert hits[0]["content"] == f"client {n} write {i} token w{n}x{i}y"


def test_hand_edit_is_searchable_through_the_server(running_server):
    path = running_server.root / "data" / "memories" / "hand.json"
    path.write_text('{"content": "edited by hand in vim about the platypus rota"}')
    search = {"query": "platypus", "mode": "keyword"}
    wait_until(lambda: call(running_server.url + "/search", "POST", search)[1]["hits"], timeout=10,
               what="hand edit searchable")


def test_cli_and_manage_data_go_through_the_server(running_server):
    env = running_server.env
    assert read_owner(running_server.root / "data" / "memfs.lock")["url"] == running_server.url
    # The server holds the store's exclusive lock: a command that opened Chroma itself would exit 4.
    r = memfs_cli("add", "added by the CLI through the server", "--json", env=env)
    assert r.returncode == 0, r.stderr
    mid = json.loads(r.stdout)["id"]
    assert call(running_server.url + f"/memories/{mid}")[0] == 200
    r = memfs_cli("search", "added by the CLI", "--mode", "keyword", "--json", env=env)
    assert json.loads(r.stdout)["hits"][0]["id"] == mid
    r = memfs_cli("rm", mid, "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout) == {"removed": [mid]}, r.stderr
    assert call(running_server.url + f"/memories/{mid}")[0] == 404
    mid = json.loads(memfs_cli("add", "added again through the server", "--json", env=env).stdout)["id"]
    r = subprocess.run([sys.executable, str(REPO / "manage_data.py"), "backup", "--json"], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (running_server.root / json.loads(r.stdout)["backup"]).exists()
    assert call(running_server.url + "/health")[0] == 200  # still serving


def test_backup_during_writes_restores_with_matching_embeddings(server, tmp_path):
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            call(server.url + "/memories", "POST", {"content": f"written during the backup, number {i}"})
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    try:
        time.sleep(1.0)  # let writes be under way when the backup starts
        code, made = call(server.url + "/backups", "POST", {"compression": "zst"})
        assert code == 201
    finally:
        stop.set()
        t.join()
    archive = server.root / made["backup"]
    other = tmp_path / "elsewhere"
    MemoryStore.init(other)
    for f in (archive, server.root / made["md5"]):
        (other / "backups" / f.name).write_bytes(f.read_bytes())
    r = subprocess.run([sys.executable, str(REPO / "manage_data.py"), "--root", str(other), "restore",
                        archive.name, "--yes", "--json"], capture_output=True, text=True, timeout=300,
                       env={k: v for k, v in os.environ.items() if k != "MEMFS_URL"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["embedded"] == 0
    with MemoryStore.open(other) as s:
        entries = s.list()
        assert len(entries) > 0
        got = s.vectors.collection.get(ids=[e.memory.id for e in entries], include=["embeddings"])
        stored = dict(zip(got["ids"], got["embeddings"]))
        fresh = s.embedder.embed([e.memory.content for e in entries])
        for e, v in zip(entries, fresh):
            assert float(np.dot(stored[e.memory.id], v)) > 0.999, e.memory.id


def test_auth(root):
    s = Server(root, env={"MEMFS_API_TOKEN": "s3cret-s3cret-s3cret"})
    try:
        assert call(s.url + "/health")[0] == 200
        code, err = call(s.url + "/stats")
        assert code == 401 and err["error"]["code"] == "unauthorized"
        assert call(s.url + "/stats", token="wrong")[0] == 401
        assert call(s.url + "/stats", token="s3cret-s3cret-s3cret")[0] == 200
        r = memfs_cli("list", "--json", env=s.env)  # the CLI passes the token from MEMFS_API_TOKEN
        assert r.returncode == 0, r.stderr
    finally:
        assert s.stop() == 0


def test_non_loopback_bind_without_token_is_refused(root):
    env = {k: v for k, v in os.environ.items() if k != "MEMFS_API_TOKEN"}
    r = subprocess.run([sys.executable, "-m", "memfs", "--root", str(root), "serve", "--host", "0.0.0.0"],
                       env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "MEMFS_API_TOKEN" in r.stderr


def test_second_serve_is_refused_and_says_where(running_server):
    r = subprocess.run([sys.executable, "-m", "memfs", "serve", "--port", str(free_port())], env=running_server.env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 4 and running_server.url in r.stderr


def test_sigterm_releases_lock_and_kill_9_is_taken_over(root):
    s = Server(root)
    assert s.stop() == 0
    assert read_owner(root / "data" / "memfs.lock") == {}
    s = Server(root)
    s.proc.send_signal(signal.SIGKILL)
    s.proc.wait()
    (root / "data" / "memories" / "while-dead.json").write_text('{"content": "written while the server was down"}')
    s = Server(root)
    try:
        hits = call(s.url + "/search", "POST", {"query": "server was down", "mode": "keyword"})[1]["hits"]
        assert hits[0]["id"] == "while-dead"
    finally:
        assert s.stop() == 0


def test_restore_through_the_server_reloads_without_restart(server):
    u = server.url
    keep = call(u + "/memories", "POST", {"content": "in the backup, about walruses"})[1]["id"]
    code, made = call(u + "/backups", "POST", {})
    assert code == 201
    later = call(u + "/memories", "POST", {"content": "after the backup, about narwhals"})[1]["id"]
    # manage_data.py restore goes through the running server too.
    r = subprocess.run([sys.executable, str(REPO / "manage_data.py"), "restore", made["name"], "--yes", "--json"],
                       env=server.env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["embedded"] == 0 and out["pre_restore"] and out["problems"] == []
    assert server.proc.poll() is None  # same process, still serving
    assert call(u + f"/memories/{later}")[0] == 404
    hits = call(u + "/search", "POST", {"query": "walruses", "mode": "keyword"})[1]["hits"]
    assert [h["id"] for h in hits] == [keep]
    # The watcher follows the restored files.
    (server.root / "data" / "memories" / "new.json").write_text('{"content": "after the restore, about seals"}')
    wait_until(lambda: call(u + "/search", "POST", {"query": "seals", "mode": "keyword"})[1]["hits"], timeout=10,
               what="watcher after restore")
