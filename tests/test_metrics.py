"""GET /metrics (issue #23): Prometheus text behind the token, parsed with the reference parser, and
the figures move with what the server does. A real server, the real model and Chroma."""

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from memfs import metrics
from test_server import Server, call, wait_until

TOKEN = "metrics-token-0123456789abcdef"
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"}


def scrape(url: str, token: str | None = TOKEN) -> tuple[int, dict]:
    """{(name, frozenset(labels)): value} of one scrape, parsed by prometheus_client."""
    req = urllib.request.Request(url + "/metrics")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            text = r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, {}
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return 200, samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def server(root):
    s = Server(root, env={"MEMFS_API_TOKEN": TOKEN})
    yield s
    s.stop()


def test_metrics_need_the_token_and_move(server):
    assert scrape(server.url, token=None)[0] == 401
    assert scrape(server.url, token="wrong-token-0123456789")[0] == 401
    _, before = scrape(server.url)
    assert value(before, "memfs_owner_ready") == 1
    assert value(before, "memfs_owner_uptime_seconds") > 0
    assert value(before, "memfs_memories", type="note") == 0
    assert value(before, "memfs_backup_newest_verified_age_seconds") != value(before, "memfs_backup_newest_verified_age_seconds")  # NaN: none yet

    for i in range(3):
        assert call(server.url + "/memories", "POST", {"content": f"metrics note {i}", "type": "note"}, token=TOKEN)[0] == 201
    assert call(server.url + "/memories", "POST", {"content": "a decision", "type": "decision"}, token=TOKEN)[0] == 201
    assert call(server.url + "/search", "POST", {"query": "metrics"}, token=TOKEN)[0] == 200
    assert call(server.url + "/backups", "POST", {}, token=TOKEN)[0] == 201
    mcp = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}  # /mcp is not a FastAPI route; it is counted by name
    assert call(server.url + "/mcp", "POST", mcp, token=TOKEN, headers=MCP_HEADERS)[0] == 200

    _, after = scrape(server.url)
    assert value(after, "memfs_memories", type="note") == 3 and value(after, "memfs_memories", type="decision") == 1
    assert value(after, "memfs_vectors") == 4 and value(after, "memfs_model_loaded") == 1
    assert value(after, "memfs_http_requests_total", route="/memories", method="POST", status="201") == 4
    assert value(after, "memfs_http_requests_total", route="/search", method="POST", status="200") == 1
    assert value(after, "memfs_http_requests_total", route="/mcp", method="POST", status="200") == 1
    assert value(after, "memfs_http_request_duration_seconds_count", route="/search", method="POST") == 1
    assert value(after, "memfs_http_request_duration_seconds_sum", route="/search", method="POST") > 0
    # The refused scrapes count too, under no route (they never reached one).
    assert value(after, "memfs_http_requests_total", route="unmatched", method="GET", status="401") == 2
    assert 0 <= value(after, "memfs_backup_newest_verified_age_seconds") < 120
    assert value(after, "memfs_backups") == 1
    assert value(after, "memfs_invalid_files") == 0
    # The watcher sees the API's own writes too and drops them after a debounce: the queue drains.
    wait_until(lambda: value(scrape(server.url)[1], "memfs_index_queue_depth") == 0, what="an empty index queue")
    assert value(after, "memfs_owner_uptime_seconds") > value(before, "memfs_owner_uptime_seconds")


def test_invalid_file_and_bad_backup_show(server, root):
    (root / "data" / "memories" / "broken.json").write_text("{not json")
    call(server.url + "/reindex", "POST", token=TOKEN)
    assert call(server.url + "/backups", "POST", {}, token=TOKEN)[0] == 201
    mcp = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}  # /mcp is not a FastAPI route; it is counted by name
    assert call(server.url + "/mcp", "POST", mcp, token=TOKEN, headers=MCP_HEADERS)[0] == 200
    _, s = scrape(server.url)
    assert value(s, "memfs_invalid_files") == 1
    assert value(s, "memfs_backup_newest_verified_age_seconds") < 120
    # A backup whose checksum no longer matches is not "verified": with it the only one, the age is NaN.
    backup = next((root / "backups").glob("memory_backup_*.tar.gz"))
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0xFF
    backup.write_bytes(bytes(data + b"x"))  # size changes too: the listing is re-verified
    _, s = scrape(server.url)
    age = value(s, "memfs_backup_newest_verified_age_seconds")
    assert age != age


def test_a_registered_collector_is_scraped_and_a_failing_one_is_counted(root):
    """The hook sync uses for its lag and open conflicts: collectors run on every scrape, in the owner."""
    from memfs.filestore import Layout
    from memfs.local import LocalOperations

    def sync(ops):
        return [metrics.Family("memfs_sync_open_conflicts", "gauge", "open conflicts").add(2)]

    def broken(ops):
        raise RuntimeError("boom")

    ops = LocalOperations.open(Layout.of(root).require(create=True))
    metrics.register(sync)
    metrics.register(broken)
    try:
        m = metrics.Metrics(ops)
        m.render()
        samples = {s.name: s.value for f in text_string_to_metric_families(m.render()) for s in f.samples}
    finally:
        metrics.unregister(sync)
        metrics.unregister(broken)
        ops.close()
    assert samples["memfs_sync_open_conflicts"] == 2
    assert samples["memfs_collector_errors_total"] == 2  # once per scrape, and the scrape still answered
    assert samples["memfs_owner_ready"] == 1
