"""What the sync tests share: replicas as stores in this process (the real model, real Chroma, real
files), hand edits, and what "the same set" means."""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson

from memfs.local import LocalOperations


def replica(base: Path, name: str, clock=None) -> LocalOperations:
    """A store at base/name owned by this process, without a watcher (a sync looks at the files itself)."""
    ops = LocalOperations.open(base / name, watch=False)
    if clock is not None:
        ops.sync_clock = clock
    return ops


def contents(ops) -> dict[str, str]:
    """id -> content hash of every memory in the store."""
    return {r.memory.id: r.memory.content_hash for r in every_memory(ops)}


def every_memory(ops) -> list:
    """Every memory, page by page (a page holds at most inputs.MAX_PAGE)."""
    out, cursor = [], None
    while True:
        page = ops.list(limit=1000, cursor=cursor)
        out += page.memories
        cursor = page.next_cursor
        if cursor is None:
            return out


def path_of(ops, mem_id: str) -> Path:
    with ops.owner.using() as store:
        return store.path_of(mem_id)


def hand_edit(ops, mem_id: str, content: str) -> None:
    """Change a memory's file as a person with an editor would: not through the API."""
    p = path_of(ops, mem_id)
    doc = orjson.loads(p.read_bytes())
    doc["content"] = content
    p.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))


def hand_delete(ops, mem_id: str) -> None:
    path_of(ops, mem_id).unlink()


def tree_digest(directory: Path) -> dict[str, str]:
    """relative path -> SHA-256 of every file under a directory (what "untouched" is checked against)."""
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def three_batches(a, remote: str, *, first_readers=()) -> list[str]:
    """Replica a pushes three batches (five adds; an edit, a delete and an add; two edits, one of the
    memory edited before), `first_readers` syncing after the first only: a history to compact."""
    ids = [a.add(f"shared memory number {i}").memory.id for i in range(5)]
    a.sync(remote)
    for o in first_readers:
        o.sync(remote)
    a.update(ids[0], content="edited once on a"), a.remove(ids[1]), a.add("added in the second batch")
    a.sync(remote)
    a.update(ids[0], content="edited twice on a"), a.update(ids[2], content="edited in the third batch")
    a.sync(remote)
    return ids


def remote_bytes(remote: Path) -> bytes:
    """Every name and byte on a folder remote, in one blob (what "no plaintext on the remote" is checked against)."""
    return b"".join(p.relative_to(remote).as_posix().encode() + b"\0" + p.read_bytes()
                    for p in sorted(remote.rglob("*")) if p.is_file())


def conflict_ids(ops) -> set[str]:
    return {c["conflict"] for c in ops.conflicts()}


class OneHotFakeEmbedder:
    """FAKE, for plumbing tests that do not depend on meaning (hostile remotes, crashes, encryption,
    bootstrap counts): a content hash to a one-hot vector. No model is loaded."""

    model_id, dim = "fake-one-hot", 384

    def __init__(self):
        self.embedded = 0
        self.loaded = True

    def embed(self, texts):
        import numpy as np

        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            out[i, hashlib.sha256(t.encode()).digest()[0] % self.dim] = 1
        self.embedded += len(texts)
        return out


def fake_replica(base: Path, name: str) -> LocalOperations:
    """A replica whose embedder is the FAKE one (plumbing tests only)."""
    return LocalOperations.open(base / name, watch=False, embedder=OneHotFakeEmbedder())


# -- random histories on three replicas (test_sync_compact, test_sync_losers) ----------------------


class StepClock:
    """A deterministic clock for the hybrid logical clocks of one world: every reading is 1 ms later."""

    def __init__(self):
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


def random_world(base: Path, plan: list[tuple], compact: bool) -> dict:
    """Play `plan` on three replicas (compacting where it says so, if `compact`); then sync to a fixed
    point and bootstrap a fresh replica. What each ends with: contents, and the losers in its inbox."""
    import itertools
    from unittest import mock

    from memfs import documents

    remote, clock, ids = str(base / "remote"), StepClock(), itertools.count(1)
    names = ("a", "b", "c", "fresh")
    reps = {n: fake_replica(base, n) for n in names}
    for o in reps.values():
        o.sync_clock = clock
    # The same memory ids in both worlds, so a batch stamps its changes in the same order.
    with mock.patch.object(documents, "new_id", lambda: f"{next(ids):016x}"):
        return play(reps, remote, plan, compact)


def play(reps: dict, remote: str, plan: list[tuple], compact: bool) -> dict:
    import random

    names = tuple(reps)
    try:
        for step, who, pick in plan:
            o = reps[who]
            texts = sorted(r.memory.content for r in o.list(limit=1000).memories)
            mem = {r.memory.content: r.memory.id for r in o.list(limit=1000).memories}
            if step == "add" or (step in ("edit", "delete") and not texts):
                o.add(f"added by {who}, {pick}")
            elif step == "edit":
                o.update(mem[texts[pick % len(texts)]], content=f"edited by {who}, {pick}")
            elif step == "delete":
                o.remove(mem[texts[pick % len(texts)]])
            elif step == "sync":
                o.sync(remote)
            elif step == "compact" and compact:
                o.sync_compact(remote)
        for _ in range(3):
            for n in random.Random(0).sample(names, 4):
                reps[n].sync(remote)
        return {n: (sorted(r.memory.content for r in o.list(limit=1000).memories),
                    sorted("<deleted>" if c["loser"].get("deleted") else c["loser"]["doc"]["content"]
                           for c in o.conflicts()))
                for n, o in reps.items()}
    finally:
        for o in reps.values():
            o.close()
