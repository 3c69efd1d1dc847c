#!/usr/bin/env python3
"""`memfs serve` benchmarks (issue 5), each beside its in-process anchor from the same run.

    .venv/bin/python bench/bench_serve.py

- HTTP add throughput, 1 and 8 clients ÷ in-process MemoryStore.add (one at a time) of the same texts
- HTTP search p50/p99 ÷ in-process MemoryStore.search of the same queries (goal p50 ≤ 1.3)
- cold start to a healthy /health (goal < 2 s) and idle CPU of the server over 60 s (goal < 1 %)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from memfs import MemoryStore  # noqa: E402

GEN = HERE.parent.parent / "shared" / "bench" / "gen_corpus.py"


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(root: Path) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "memfs", "serve", "--port", str(port)],
                         env={**os.environ, "MEMFS_ROOT": str(root)}, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=1) as r:
                if r.status == 200:
                    return p, url, time.perf_counter() - t
        except OSError:
            time.sleep(0.02)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="memfs-serve-bench-"))
    subprocess.run([sys.executable, str(GEN), str(tmp / "corpus" / "mem"), "1400"], check=True, capture_output=True)
    texts = [json.loads(line)["content"] for line in open(tmp / "corpus" / "corpus.jsonl")]
    one, eight, anchor_texts = texts[:200], texts[200:1000], texts[1000:1200]
    queries = [" ".join(t.split()[:8]) for t in texts[1200:1400]]

    with MemoryStore.open(tmp / "inproc", create=True) as s:
        s.embedder.embed(["warm up"])
        t = time.perf_counter()
        for text in anchor_texts:
            s.add(text)
        inproc_add = len(anchor_texts) / (time.perf_counter() - t)

    # Cold start: a fresh store, empty; then a second start on the filled store below.
    p, url, cold_empty = start_server(tmp / "served")
    post(url + "/search", {"query": "warm up the model", "k": 1})
    t = time.perf_counter()
    for text in one:
        post(url + "/memories", {"content": text})
    http_add_1 = len(one) / (time.perf_counter() - t)

    chunks = [eight[i::8] for i in range(8)]
    t = time.perf_counter()
    threads = [threading.Thread(target=lambda c=c: [post(url + "/memories", {"content": x}) for x in c]) for c in chunks]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    http_add_8 = len(eight) / (time.perf_counter() - t)

    p.send_signal(signal.SIGTERM)
    p.wait(60)

    # Search, in-process and over HTTP, on the same store in the same state (Chroma's write log and
    # index as the 1,000 HTTP adds left them): the in-process run first, then the server again.
    with MemoryStore.open(tmp / "served") as s:
        s.search("warm up", k=5)
        inproc_lat = []
        for q in queries:
            t = time.perf_counter()
            s.search(q, k=5, mode="hybrid")
            inproc_lat.append(time.perf_counter() - t)
    p, url, cold_full = start_server(tmp / "served")

    def settled() -> bool:
        with urllib.request.urlopen(url + "/health", timeout=5) as r:
            index = json.loads(r.read())["index"]
        return index["queue_depth"] == 0 and index["chroma_ok"] is True

    while not settled():
        time.sleep(0.2)
    post(url + "/search", {"query": "warm up", "k": 5})
    http_lat = []
    for q in queries:
        t = time.perf_counter()
        post(url + "/search", {"query": q, "k": 5, "mode": "hybrid"})
        http_lat.append(time.perf_counter() - t)

    time.sleep(2)
    cpu0, t0 = cpu_seconds(p.pid), time.perf_counter()
    time.sleep(60)
    idle = (cpu_seconds(p.pid) - cpu0) / (time.perf_counter() - t0) * 100
    p.send_signal(signal.SIGTERM)
    p.wait(60)

    ip50, ip99 = np.percentile(inproc_lat, 50) * 1e3, np.percentile(inproc_lat, 99) * 1e3
    h50, h99 = np.percentile(http_lat, 50) * 1e3, np.percentile(http_lat, 99) * 1e3
    print("| measure | HTTP | in-process anchor | ratio | goal |")
    print("|---|---|---|---|---|")
    print(f"| add, 1 client (docs/s) | {http_add_1:.1f} | {inproc_add:.1f} | **{http_add_1 / inproc_add:.2f}** | – |")
    print(f"| add, 8 clients (docs/s) | {http_add_8:.1f} | {inproc_add:.1f} | **{http_add_8 / inproc_add:.2f}** | – |")
    print(f"| hybrid search p50 / p99 (ms) | {h50:.1f} / {h99:.1f} | {ip50:.1f} / {ip99:.1f} | **{h50 / ip50:.2f}** / "
          f"{h99 / ip99:.2f} | p50 ≤ 1.3 |")
    print(f"| cold start to healthy /health (s) | empty store {cold_empty:.2f}; 1,000 memories {cold_full:.2f} | – | – | < 2 s |")
    print(f"| idle CPU over 60 s | {idle:.2f} % of one core | – | – | < 1 % |")


if __name__ == "__main__":
    main()
