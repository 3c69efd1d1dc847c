#!/usr/bin/env python3
"""The web page (issue #21) at N memories (default 20,000), each figure beside its anchor.

    .venv/bin/python bench/bench_web.py [N] [--runs 30]

- server time for the browse page and a search page (the page's HTML + the API call it makes; its
  script and stylesheet are versioned and cached by the browser) ÷ the same API call alone, p50/p95
  (goal ≤ 1.3); and a first visit (HTML, script, stylesheet + the call)
- in headless Chromium: first browse page and a search rendered (ms from navigation start), time
  to interactive (DOMContentLoaded with the script run), and how long a hand-dropped file takes to
  show in an open page
- page weight: every asset, gzip-compressed

The store is built once (files from shared/bench/gen_corpus.py, embedded by `memfs --no-daemon
reindex`) under /tmp/memfs-bench-web-N and reused.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench_serve import free_port  # noqa: E402

GEN = HERE.parent.parent / "shared" / "bench" / "gen_corpus.py"
QUERIES = ["how do I read a file line by line", "parse command line options", "compare two floating point numbers",
           "thread safe queue", "format a date as text", "compress data with gzip"]


def build(n: int) -> Path:
    root = Path(f"/tmp/memfs-bench-web-{n}")
    if (root / ".built").exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "memfs", "--root", str(root), "init"], check=True, capture_output=True)
    subprocess.run([sys.executable, str(GEN), str(root / "data" / "memories" / "corpus"), str(n)], check=True,
                   capture_output=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "memfs", "--root", str(root), "--no-daemon", "reindex"], check=False,
                   capture_output=True)
    print(f"built a {n}-memory store in {time.perf_counter() - t:.0f} s")
    (root / ".built").touch()
    return root


def timed(fn, runs: int) -> np.ndarray:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return np.array(out)


def get(url: str, accept: str = "application/json") -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Accept": accept}), timeout=120) as r:
        return r.read()


def post(url: str, body: dict) -> bytes:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return r.read()


def assets(url: str) -> None:
    """A first visit: the HTML and the two files it names (a browser keeps those: they are versioned)."""
    get(url + "/", "text/html")
    get(url + "/ui/app.js", "*/*")
    get(url + "/ui/app.css", "text/css")


def html(url: str) -> None:
    """A later visit: the HTML alone (app.js and app.css come from the browser's cache)."""
    get(url + "/", "text/html")


def row(name: str, page: np.ndarray, api: np.ndarray) -> None:
    p50, p95 = np.percentile(page, 50), np.percentile(page, 95)
    a50, a95 = np.percentile(api, 50), np.percentile(api, 95)
    print(f"{name:<22} page p50 {p50:7.1f} ms p95 {p95:7.1f} | API p50 {a50:7.1f} p95 {a95:7.1f} | "
          f"ratio p50 {p50 / a50:.2f} p95 {p95 / a95:.2f}")


def browser_figures(url: str, root: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    d = webdriver.Chrome(service=webdriver.ChromeService(shutil.which("chromedriver")), options=options)
    rendered = """const [selector, done] = [arguments[0], arguments[arguments.length - 1]];
      (function check() { document.querySelector(selector) ? done(performance.now()) : requestAnimationFrame(check); })();"""
    try:
        d.set_script_timeout(60)
        for label, path, selector in (("browse, first page", "/?view=browse", "#browse-list tr"),
                                      ("search, hits shown", "/?view=search&q=read+a+file+line+by+line", "#hits li")):
            times, tti = [], []
            for _ in range(5):
                d.get(url + path)
                times.append(d.execute_async_script(rendered, selector))
                tti.append(d.execute_script("const t = performance.getEntriesByType('navigation')[0];"
                                            " return t.domContentLoadedEventEnd;"))
            print(f"browser: {label:<20} rendered p50 {np.median(times):6.0f} ms (max {max(times):.0f}); "
                  f"interactive p50 {np.median(tti):5.0f} ms")
        d.get(url + "/?view=browse")
        d.execute_async_script(rendered, "#browse-list tr")
        for _ in range(200):
            if "on" in d.find_element(By.ID, "live").get_attribute("class"):
                break
            time.sleep(0.05)
        lags = []
        for i in range(5):
            text = f"bench hand drop {i} {time.time()}"
            t = time.perf_counter()
            (root / "data" / "memories" / f"bench-drop-{i}.json").write_text(json.dumps({"content": text}))
            while text not in d.find_element(By.ID, "browse-list").text:
                time.sleep(0.02)
            lags.append(time.perf_counter() - t)
        print(f"browser: hand-dropped file shown in the open page: p50 {np.median(lags):.2f} s, max {max(lags):.2f} s "
              f"(goal within 2 s)")
    finally:
        d.quit()
        for f in (root / "data" / "memories").glob("bench-drop-*.json"):
            f.unlink()


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 20000
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 30
    root = build(n)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "memfs", "--root", str(root), "serve", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if json.loads(get(url + "/health"))["status"] == "ok":
                    break
            except OSError:
                pass
            time.sleep(0.2)
        post(url + "/search", {"query": "warm up", "k": 5})
        count = json.loads(get(url + "/stats"))["memories"]
        print(f"memfs web page at {count} memories, {runs} runs each")
        browse_api = lambda: get(url + "/memories?limit=50")  # noqa: E731
        qs = iter(QUERIES * runs * 2)
        search_api = lambda: post(url + "/search", {"query": next(qs), "k": 20})  # noqa: E731
        row("browse page", timed(lambda: (html(url), browse_api()), runs), timed(browse_api, runs))
        row("search page", timed(lambda: (html(url), search_api()), runs), timed(search_api, runs))
        row("browse, first visit", timed(lambda: (assets(url), browse_api()), runs), timed(browse_api, runs))
        weights = {name: len(gzip.compress(get(url + path, accept), 9)) for name, path, accept in
                   (("index.html", "/", "text/html"), ("app.js", "/ui/app.js", "*/*"), ("app.css", "/ui/app.css", "text/css"))}
        print(f"page weight, gzip: {sum(weights.values()) / 1024:.1f} KiB ({', '.join(f'{k} {v / 1024:.1f}' for k, v in weights.items())})")
        if shutil.which("chromium") and shutil.which("chromedriver"):
            browser_figures(url, root)
        else:
            print("browser figures skipped: chromium / chromedriver not installed")
    finally:
        proc.terminate()
        proc.wait(60)


if __name__ == "__main__":
    main()
