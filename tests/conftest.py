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
