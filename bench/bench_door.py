#!/usr/bin/env python3
"""The front door's cost (issue #19): a request through the guard + schema, per interface, ÷ the
in-process call, on this tree's code and on another tree's (main's) in the same run.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_door.py [--baseline /work/main] [--n 400]

For each tree, a real `memfs serve --port N` (token set) on its own copy of a small store; measured
sequentially on one keep-alive connection: `GET /memories?limit=5&since=7d` (route + schema +
timeparse + a catalog page) over TCP and over the owner's Unix socket. Anchor: the same call
in-process (`LocalOperations.list` with `parse_when("7d")`), in this process, same run. Reported: p50
and p90 in ms and the ratio to the anchor; the goal is this tree's HTTP ratio ≤ 1.1 × the baseline's.
Both servers run at once and are measured in turns of 20 requests (so both see the same load), after
each has gone quiet: a server that answers /health may still be embedding its 50 hand-dropped files in
the background (#24 made vectors trail the catalog), and timing it then measures the model.

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


def wait_quiet(pid: int, limit: float = 300.0) -> float:
    """Seconds until the process used under 2% of a core for a whole second (its startup work done)."""
    start = time.monotonic()

    def cpu() -> int:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime, clock ticks

    hz = os.sysconf("SC_CLK_TCK")
    before = cpu()
    while time.monotonic() - start < limit:
        time.sleep(1.0)
        now = cpu()
        if (now - before) / hz < 0.02:
            return time.monotonic() - start
        before = now
    raise SystemExit(f"server {pid} still busy after {limit:.0f} s")


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
    servers, conns = {}, {}
    try:
        for name, tree in trees.items():
            root = work / name
            shutil.copytree(seed, root)
            servers[name] = proc, port = start(tree, root)
            tcp = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            sock = next((root / "data").glob("memfs.sock"), None)
            conns[name] = (tcp, UnixConnection(str(sock)) if sock is not None else None)
        for name, (proc, _) in servers.items():
            quiet = wait_quiet(proc.pid)
            print(f"{name:8s} server quiet after {quiet:.1f} s")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        h = {name: [] for name in trees}
        s = {name: [] for name in trees}
        for name, (tcp, uc) in conns.items():  # warm
            timed(tcp, 20, auth)
            if uc is not None:
                timed(uc, 20, {})
        for _ in range(max(1, args.n // 20)):
            for name, (tcp, uc) in conns.items():
                h[name] += timed(tcp, 20, auth)
                if uc is not None:
                    s[name] += timed(uc, 20, {})
        results = {}
        for name, (proc, port) in servers.items():
            header = raw(port, b"GET /stats HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                         + b"\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
            badlen = raw(port, b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Length: 12abc\r\n\r\n{}")
            results[name] = (h[name], s[name], header, badlen)
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(60)
    for name, (h, s, header, badlen) in results.items():
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
