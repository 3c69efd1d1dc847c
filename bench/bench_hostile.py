#!/usr/bin/env python3
"""Refusing hostile bodies (issue #15): what a 100 MB chunked upload costs the server.

    flock /tmp/memfs-bench.lock .venv/bin/python bench/bench_hostile.py [--runs 5] [--mb 100]

For each run, against a real `memfs serve --port N` (token set), a client streams a chunked body of
`--mb` MB as fast as the socket takes it and stops at the server's answer. Measured:
- time from the first byte sent to the refusal received (goal < 50 ms)
- the server's peak RSS growth during the request (VmHWM, reset before each run via
  /proc/PID/clear_refs; goal < 5 MB)
- MB the client managed to send before the server answered
for an authenticated request (413 after 1 MiB read) and an unauthenticated one (401, body never read).
Anchor: a small valid POST /memories on the same server, so the ratio says what refusing costs
against ordinary work.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
TOKEN = "bench-hostile-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def stream(port: int, total: int, token: str | None, finish: bool = False) -> tuple[int, float, int]:
    """Send a chunked POST of `total` bytes until the server answers (with `finish`, then end the body
    as valid JSON). (status, seconds, bytes sent)."""
    s = socket.create_connection(("127.0.0.1", port))
    head = (f"POST /memories HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Transfer-Encoding: chunked\r\n" + (f"Authorization: Bearer {token}\r\n" if token else "") + "\r\n")
    piece = b"x" * (256 * 1024)
    frame = b"%x\r\n%s\r\n" % (len(piece), piece)
    sent, body_sent, answer, finished = 0, 0, b"", False
    s.setblocking(False)
    t0 = time.perf_counter()
    prefix = b'{"content": "'
    pending = head.encode() + b"%x\r\n%s\r\n" % (len(prefix), prefix)
    try:
        while True:
            more = bool(pending) or body_sent < total or (finish and not finished)
            readable, writable, _ = select.select([s], [s] if more else [], [], 30)
            if readable:
                chunk = s.recv(65536)
                answer += chunk
                if b"\r\n\r\n" in answer or not chunk:
                    break
            if writable:
                if not pending and body_sent < total:
                    pending, body_sent = frame, body_sent + len(piece)
                elif not pending and finish and not finished:
                    pending, finished = b'2\r\n"}\r\n0\r\n\r\n', True
                n = s.send(pending)
                sent += n
                pending = pending[n:]
            if not readable and not writable:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    elapsed = time.perf_counter() - t0
    s.close()
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0
    return status, elapsed, sent


def small_post(url: str, n: int) -> float:
    body = json.dumps({"content": f"an ordinary small memory number {n} for the anchor"}).encode()
    req = urllib.request.Request(url + "/memories", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=120) as r:
        r.read()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mb", type=int, default=100)
    args = ap.parse_args()
    total = args.mb * 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen([sys.executable, "-m", "memfs", "serve", "--port", str(port)],
                                env={**os.environ, "MEMFS_ROOT": str(Path(tmp) / "store"), "MEMFS_API_TOKEN": TOKEN},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=HERE.parent)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(url + "/health", timeout=1) as r:
                        if json.loads(r.read()).get("model_loaded"):
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit("server did not become healthy")
                time.sleep(0.2)
            anchor = [small_post(url, n) for n in range(args.runs + 2)][2:]  # two warm-up posts
            rows = {}
            cases = (("authenticated (413)", TOKEN, total, False), ("no token (401)", None, total, False),
                     ("check: a whole 0.7 MB body, parsed, content over its limit (422)", TOKEN, 700_000, True))
            for label, token, size, finish in cases:
                times, growth, sent, statuses = [], [], [], set()
                stream(port, 4 << 20, token)  # warm-up
                for _ in range(args.runs):
                    time.sleep(0.3)
                    can_reset = reset_peak(proc.pid)
                    before = proc_kb(proc.pid, "VmRSS")
                    status, seconds, n = stream(port, size, token, finish)
                    time.sleep(0.1)
                    peak = proc_kb(proc.pid, "VmHWM") if can_reset else proc_kb(proc.pid, "VmRSS")
                    statuses.add(status)
                    times.append(seconds)
                    growth.append((peak - before) / 1024)
                    sent.append(n / 1e6)
                rows[label] = (statuses, times, growth, sent)
        finally:
            proc.terminate()
            proc.wait(60)
    a = statistics.median(anchor)
    print(f"{args.mb} MB chunked body, {args.runs} runs, medians (max); peak reset: {can_reset}")
    print("| request | status | time to refusal (ms) | peak RSS growth (MB) | MB sent before the answer |"
          " time ÷ small valid POST |")
    print("|---|---|---|---|---|---|")
    for label, (statuses, times, growth, sent) in rows.items():
        print(f"| {label} | {','.join(map(str, sorted(statuses)))} | {statistics.median(times) * 1e3:.1f} "
              f"({max(times) * 1e3:.1f}) | {statistics.median(growth):.2f} ({max(growth):.2f}) | "
              f"{statistics.median(sent):.1f} | {statistics.median(times) / a:.2f} |")
    print(f"anchor: small valid POST /memories median {a * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
