import os
import sys
from pathlib import Path

import pytest

from memfs import MemoryStore


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test may touch a real store: MEMFS_ROOT points into the test's own temp dir."""
    monkeypatch.setenv("MEMFS_ROOT", str(tmp_path / "env-root"))
    monkeypatch.delenv("MEMFS_URL", raising=False)


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root):
    s = MemoryStore.open(root, create=True)
    yield s
    s.close()


def filler_texts(n: int) -> list[str]:
    """n unrelated, realistic paragraphs: CPython's own help topics (deterministic, offline)."""
    import pydoc_data.topics as topics

    out, seen = [], set()
    for name in sorted(topics.topics):
        for para in topics.topics[name].split("\n\n"):
            para = " ".join(para.split())
            if 120 <= len(para) <= 400 and para not in seen:
                seen.add(para)
                out.append(para)
                if len(out) == n:
                    return out
    raise AssertionError("not enough filler text")


def run_memfs(*args, env=None, **kwargs):
    """The real `memfs` entry point in a child process."""
    import subprocess

    return subprocess.run([sys.executable, "-m", "memfs", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, **kwargs)


@pytest.fixture(autouse=True)
def no_owner_left_behind(tmp_path, monkeypatch):
    """Owners that commands start on demand exit soon in tests, and none outlives its test."""
    monkeypatch.setenv("MEMFS_IDLE_EXIT", "30")
    yield
    stop_owners(tmp_path)


def stop_owners(under: Path) -> None:
    import signal
    import time

    from memfs.lock import is_held, read_owner

    for lock in under.rglob("memfs.lock"):
        if not is_held(lock):
            continue
        pid = read_owner(lock).get("pid")
        if pid and pid != os.getpid():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 30
            while is_held(lock) and time.monotonic() < deadline:
                time.sleep(0.05)
