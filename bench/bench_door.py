#!/usr/bin/env python3
"""The front door's cost (issue #19): a request through the guard + schema, per interface, ÷ the
in-process call, on this tree's code and on another tree's (main's) in the same run.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_door.py [--baseline /work/main] [--n 400]

For each tree, a real `memfs serve --port N` (token set) on its own copy of a small store; measured
sequentially on one keep-alive connection: `GET /memories?limit=5&since=7d` (route + schema +
timeparse + a catalog page) over TCP and over the owner's Unix socket. Anchor: the same call
in-process (`LocalOperations.list` with `parse_when("7d")`), in this process, same run. Reported: p50
and p90 in ms and the ratio to the anchor; the goal is this tree's HTTP ratio ≤ 1.1 × the baseline's.

Also the hostile-header refusals (#19), time to the JSON answer: 100 KB of headers in one write, a
malformed Content-Length; and the body-read timeout (a body trickled one byte a second).
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKEN = "bench-door-token-0123456789abcdef"
PATH = "/memories?limit=5&since=7d"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=60)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.unix_path)


def start(tree: Path, root: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tree), "MEMFS_API_TOKEN": TOKEN, "MEMFS_ROOT": str(root)}
    p = subprocess.Popen([sys.executable, "-m", "memfs", "serve", "--port", str(port)], cwd=str(tree), env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return p, port
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise SystemExit(f"server from {tree} did not start")


def timed(conn, n: int, headers: dict) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        conn.request("GET", PATH, headers=headers)
        r = conn.getresponse()
        r.read()
        out.append(time.perf_counter() - t)
        assert r.status == 200, r.status
    return out


def stats(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs) * 1000, xs[int(len(xs) * 0.9)] * 1000


def raw(port: int, data: bytes, trickle: bytes = b"", pause: float = 0.0) -> float:
    t = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(data)
        try:
            for b in trickle:
                time.sleep(pause)
                s.sendall(bytes([b]))
        except OSError:
            pass
        while s.recv(65536):
            pass
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", default=str(HERE.parent.parent / "main"))
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    here = HERE.parent
    trees = {"baseline": Path(args.baseline).resolve(), "this": here}
    work = Path(tempfile.mkdtemp(prefix="memfs-bench-door-"))
    seed = work / "seed"
    subprocess.run([sys.executable, "-m", "memfs", "--root", str(seed), "init"], check=True, cwd=str(here),
                   env={**os.environ, "PYTHONPATH": str(here)}, stdout=subprocess.DEVNULL)
    for i in range(50):  # hand-dropped files: no model needed to build the store
        (seed / "data" / "memories" / f"m{i}.json").write_text(f'{{"content": "bench memory {i}", "tags": ["b"]}}')

    sys.path.insert(0, str(here))
    from memfs.local import LocalOperations
    from memfs.query import Filters
    from memfs.timeparse import parse_when

    anchor_root = work / "anchor"
    shutil.copytree(seed, anchor_root)
    ops = LocalOperations.open(anchor_root)
    anchor = []
    for _ in range(args.n):
        t = time.perf_counter()
        ops.list(Filters(since=parse_when("7d")), limit=5)
        anchor.append(time.perf_counter() - t)
    ops.close()
    a50, a90 = stats(anchor)
    print(f"machine shared (load {os.getloadavg()[0]:.1f}); n={args.n}")
    print(f"anchor in-process list: p50 {a50:.3f} ms  p90 {a90:.3f} ms")
    results = {}
    for name, tree in trees.items():
        root = work / name
        shutil.copytree(seed, root)
        proc, port = start(tree, root)
        try:
            tcp = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            timed(tcp, 20, {"Authorization": f"Bearer {TOKEN}"})  # warm
            h = timed(tcp, args.n, {"Authorization": f"Bearer {TOKEN}"})
            sock = next((root / "data").glob("memfs.sock"), None)
            s = None
            if sock is not None:
                uc = UnixConnection(str(sock))
                timed(uc, 20, {})
                s = timed(uc, args.n, {})
            header = raw(port, b"GET /stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                         + b"\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
            badlen = raw(port, b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n{}")
            results[name] = (h, s, header, badlen)
        finally:
            proc.terminate()
            proc.wait(60)
        h50, h90 = stats(h)
        line = f"{name:8s} HTTP: p50 {h50:.3f} ms ({h50 / a50:.2f}x anchor)  p90 {h90:.3f} ms"
        if s:
            s50, s90 = stats(s)
            line += f" | socket: p50 {s50:.3f} ms ({s50 / a50:.2f}x)  p90 {s90:.3f} ms"
        print(line)
        print(f"{name:8s} 100 KB header answered in {header * 1000:.1f} ms; bad Content-Length in {badlen * 1000:.1f} ms")
    b50, t50 = stats(results["baseline"][0])[0], stats(results["this"][0])[0]
    print(f"HTTP p50, this ÷ baseline: {t50 / b50:.3f} (goal ≤ 1.1)")
    if results["this"][1] and results["baseline"][1]:
        print(f"socket p50, this ÷ baseline: {stats(results['this'][1])[0] / stats(results['baseline'][1])[0]:.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
