"""`manage_data.py validate` changes nothing without --fix, and --fix repairs what it can around a folder
it cannot read (issue #24 items 12 and 13): real stores, real Chroma, the real command in a subprocess.

A folder that may be listed but not entered is only unreadable without root's DAC override: as root the
command runs under `setpriv` with it dropped (as tests/test_handedits.py does)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from memfs import MemoryStore
from memfs.documents import Memory

from conftest import filler_texts

ROOT_USER = os.geteuid() == 0


def manage(root: Path, *args: str) -> subprocess.CompletedProcess:
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"] if ROOT_USER else []
    return subprocess.run([*prefix, sys.executable, "manage_data.py", "--root", str(root), *args], capture_output=True,
                          text=True, timeout=300, cwd=Path(__file__).resolve().parent.parent,
                          env={**os.environ, "MEMFS_DAEMON": "0"})


def tree(root: Path) -> dict[str, str]:
    """Every path under data/ but logs/ and the lock, with its content's hash (None for a directory).
    Chroma's own files are left out: chromadb rewrites its bookkeeping whenever it is opened."""
    data = root / "data"
    out = {}
    for p in sorted(data.rglob("*")):
        rel = p.relative_to(data).as_posix()
        if rel.startswith(("logs", "memfs.lock", "embeddings/")):
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
    return out


@pytest.fixture
def populated(root):
    with MemoryStore.open(root, create=True) as s:
        s.add_many({"content": t} for t in filler_texts(12))
        s.vectors.upsert([Memory(id="orphan-vector", content="x")], np.full((1, 384), 384 ** -0.5, dtype=np.float32))
    return root


def test_validate_with_the_index_directory_missing_says_so_and_creates_nothing(populated):
    indexes = populated / "data" / "indexes"
    for p in indexes.iterdir():
        p.unlink()
    indexes.rmdir()
    before = tree(populated)
    r = manage(populated, "validate")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "the index directory is missing" in r.stdout
    assert len(r.stdout.splitlines()) <= 3, r.stdout  # not a drift line per memory
    assert not indexes.exists() and tree(populated) == before
    fixed = manage(populated, "validate", "--fix")
    assert fixed.returncode == 0 and "no problems" in fixed.stdout, fixed.stdout + fixed.stderr
    assert (indexes / "catalog.sqlite").is_file()


def test_validate_with_chroma_or_the_catalog_missing_creates_neither(populated):
    (populated / "data" / "indexes" / "catalog.sqlite").unlink()
    (populated / "data" / "embeddings" / "chroma.sqlite3").unlink()
    before = tree(populated)
    r = manage(populated, "validate")
    assert r.returncode == 1 and "catalog missing" in r.stdout and "Chroma's database is missing" in r.stdout, r.stdout
    assert tree(populated) == before
    assert not (populated / "data" / "indexes" / "catalog.sqlite").exists()
    assert not (populated / "data" / "embeddings" / "chroma.sqlite3").exists()
    assert manage(populated, "validate", "--fix").returncode == 0


def test_fix_reports_a_folder_it_cannot_enter_repairs_the_rest_and_exits_1(populated):
    locked = populated / "data" / "memories" / "locked"
    locked.mkdir()
    (locked / "a.json").write_text('{"content": "behind a folder that can be listed but not entered"}')
    locked.chmod(0o644)  # r--: its names are listed, but nothing in it can be opened or stat'ed
    try:
        checked = manage(populated, "validate")
        assert checked.returncode == 1, checked.stdout + checked.stderr
        assert "locked/*.json: unreadable" in checked.stdout and "belong to no memory" in checked.stdout
        r = manage(populated, "validate", "--fix")
        assert r.returncode == 1, r.stdout + r.stderr
        assert "locked/*.json: unreadable" in r.stdout and "fixed 1 problem" in r.stdout
        assert "belong to no memory" not in r.stdout  # the orphan vector was removed all the same
    finally:
        locked.chmod(0o755)
    with MemoryStore.open(populated) as s:
        assert "orphan-vector" not in s.vectors.ids()
