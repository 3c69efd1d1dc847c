"""A replica's own sync state, in `data/sync/` (backed up with the data; never on a remote).

- `replica.json`: the replica id, made at `init` (or on first use for an older store).
- `sync.sqlite`: the hybrid logical clock; per memory the version this replica holds as shared
  (`heads`), every version id it has seen (`seen`) and which version each was made from (`edges`); per remote the next sequence number and the
  prefix it writes under, and per peer how far it has read; resolved conflicts.

The hybrid logical clock (Kulkarni et al., "Logical Physical Clocks", 2014) is wall-clock milliseconds
and a counter; receiving a change moves it past the change's stamp, so an edit made after seeing
another always sorts after it, whatever the two machines' wall clocks say. Ties break by replica id,
so every replica picks the same winner.
"""

from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import orjson

from ..errors import MemfsError
from ..filestore import Layout, atomic_write
from .steps import crash_point

Clock = Callable[[], float]  # seconds since the epoch; injectable (tests skew it)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
CREATE TABLE IF NOT EXISTS heads (id TEXT PRIMARY KEY, v TEXT NOT NULL, hlc TEXT NOT NULL, replica TEXT NOT NULL,
                                  deleted INTEGER NOT NULL DEFAULT 0, parent TEXT);
CREATE TABLE IF NOT EXISTS seen (id TEXT NOT NULL, v TEXT NOT NULL, PRIMARY KEY (id, v));
CREATE TABLE IF NOT EXISTS edges (id TEXT NOT NULL, v TEXT NOT NULL, parent TEXT NOT NULL, PRIMARY KEY (id, v, parent));
CREATE TABLE IF NOT EXISTS remotes (remote TEXT PRIMARY KEY, prefix TEXT NOT NULL, next_seq INTEGER NOT NULL,
                                    last_name TEXT, last_push REAL, last_pull REAL, last_error TEXT,
                                    snapshot INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS peers (remote TEXT NOT NULL, prefix TEXT NOT NULL, replica TEXT, seq INTEGER NOT NULL,
                                  last_name TEXT, last_seen REAL, hlc TEXT, PRIMARY KEY (remote, prefix));
CREATE TABLE IF NOT EXISTS resolved (id TEXT NOT NULL, loser TEXT NOT NULL, PRIMARY KEY (id, loser));
CREATE TABLE IF NOT EXISTS outbox (remote TEXT NOT NULL, seq INTEGER NOT NULL, name TEXT NOT NULL, data BLOB NOT NULL,
                                   PRIMARY KEY (remote, seq));
CREATE TABLE IF NOT EXISTS unsent (id TEXT NOT NULL, loser TEXT NOT NULL, PRIMARY KEY (id, loser));
CREATE TABLE IF NOT EXISTS unpushed (id TEXT PRIMARY KEY, v TEXT NOT NULL, parent TEXT);
CREATE TABLE IF NOT EXISTS vcache (path TEXT PRIMARY KEY, state TEXT NOT NULL, id TEXT NOT NULL, v TEXT NOT NULL);
"""


def sync_dir(layout: Layout) -> Path:
    return layout.data / "sync"


def replica_id(layout: Layout) -> str:
    """This store's replica id: made on first call (`init` calls it), then read from data/sync/replica.json."""
    path = sync_dir(layout) / "replica.json"
    try:
        return orjson.loads(path.read_bytes())["replica"]
    except FileNotFoundError:
        pass
    rid = secrets.token_hex(8)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, orjson.dumps({"format": "memfs.replica/1", "replica": rid}) + b"\n")
    return orjson.loads(path.read_bytes())["replica"]


@dataclass(frozen=True, order=True)
class Stamp:
    """A hybrid logical clock reading; with the replica id it totally orders every change."""

    ms: int
    count: int
    replica: str

    def text(self) -> str:
        return f"{self.ms:013d}.{self.count:06d}.{self.replica}"

    @classmethod
    def parse(cls, text: str) -> "Stamp":
        ms, count, replica = text.split(".", 2)
        return cls(int(ms), int(count), replica)


class SyncState:
    def __init__(self, layout: Layout, *, clock: Clock = time.time):
        self.layout = layout
        self.replica = replica_id(layout)
        self.clock = clock
        sync_dir(layout).mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(sync_dir(layout) / "sync.sqlite", isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)
        self._hlc = self._load_clock()

    def close(self) -> None:
        self.db.close()

    def tx(self):
        return _Tx(self.db)

    # -- the clock ----------------------------------------------------------------------------------

    def _load_clock(self) -> tuple[int, int]:
        row = self.db.execute("SELECT v FROM meta WHERE k = 'hlc'").fetchone()
        if not row:
            return 0, 0
        ms, count = row[0].split(".")
        return int(ms), int(count)

    def _save_clock(self) -> None:
        """Saved with every head it stamped (set_heads), in the same transaction."""
        self.db.execute("INSERT OR REPLACE INTO meta VALUES ('hlc', ?)", ("%d.%d" % self._hlc,))

    def tick(self) -> Stamp:
        """A stamp for a local change, later than every stamp this replica has made or seen."""
        ms, count = self._hlc
        now = int(self.clock() * 1000)
        self._hlc = (now, 0) if now > ms else (ms, count + 1)
        return Stamp(*self._hlc, self.replica)

    def receive(self, stamp: Stamp) -> None:
        if (stamp.ms, stamp.count) > self._hlc:
            self._hlc = (stamp.ms, stamp.count)

    # -- heads and seen versions ---------------------------------------------------------------------

    def heads(self) -> dict[str, tuple[str, str, str, int]]:
        return {r[0]: r[1:] for r in self.db.execute("SELECT id, v, hlc, replica, deleted, parent FROM heads")}

    def head(self, mem_id: str) -> tuple[str, str, str, int] | None:
        row = self.db.execute("SELECT v, hlc, replica, deleted, parent FROM heads WHERE id = ?", (mem_id,)).fetchone()
        return tuple(row) if row else None

    def set_heads(self, heads: list[tuple[str, str, Stamp, bool, str | None]]) -> None:
        """(id, version, stamp, deleted, parent) for each memory: its head, a seen version, and the clock."""
        self.db.executemany("INSERT OR REPLACE INTO heads VALUES (?, ?, ?, ?, ?, ?)",
                            [(i, v, s.text(), s.replica, int(d), p) for i, v, s, d, p in heads])
        self.db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", [(h[0], h[1]) for h in heads])
        self._save_clock()

    def was_seen(self, mem_id: str, v: str) -> bool:
        return self.db.execute("SELECT 1 FROM seen WHERE id = ? AND v = ?", (mem_id, v)).fetchone() is not None

    def mark_seen(self, mem_id: str, v: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (mem_id, v))

    def add_edges(self, parents: dict[tuple[str, str], set]) -> None:
        """Remember which version each received version was made from (compaction asks: memfs.sync.compact)."""
        with self.tx():
            self.db.executemany("INSERT OR IGNORE INTO edges VALUES (?, ?, ?)",
                                [(i, v, p) for (i, v), ps in parents.items() for p in ps if isinstance(p, str)])

    def edges(self, mem_ids: list[str]) -> dict[tuple[str, str], set]:
        """(id, version) -> the versions it was made from, for the memories asked about."""
        out: dict[tuple[str, str], set] = {}
        for i in range(0, len(mem_ids), 500):
            chunk = mem_ids[i:i + 500]
            for mem_id, v, parent in self.db.execute(
                    f"SELECT id, v, parent FROM edges WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                out.setdefault((mem_id, v), set()).add(parent)
        return out

    # -- per remote -----------------------------------------------------------------------------------

    def remote(self, remote: str, encrypted: bool) -> tuple[str, int, str | None]:
        """(prefix, next seq, name of the last object pushed) for a remote; made on first use."""
        row = self.db.execute("SELECT prefix, next_seq, last_name FROM remotes WHERE remote = ?", (remote,)).fetchone()
        if row:
            return row
        # Encrypted, the prefix must not reveal the replica id: a random one, kept here.
        prefix = secrets.token_hex(12) if encrypted else self.replica
        # A store that already shared versions elsewhere sends them all in its first batch here.
        snapshot = self.db.execute("SELECT 1 FROM heads LIMIT 1").fetchone() is not None
        self.db.execute("INSERT INTO remotes (remote, prefix, next_seq, snapshot) VALUES (?, ?, 1, ?)",
                        (remote, prefix, int(snapshot)))
        return prefix, 1, None

    def needs_snapshot(self, remote: str) -> bool:
        row = self.db.execute("SELECT snapshot FROM remotes WHERE remote = ?", (remote,)).fetchone()
        return bool(row and row[0])

    def pushed(self, remote: str, seq: int, name: str) -> None:
        self.db.execute("UPDATE remotes SET next_seq = ?, last_name = ?, last_push = ?, snapshot = 0 WHERE remote = ?",
                        (seq + 1, name, time.time(), remote))

    def note(self, remote: str, *, error: str | None) -> None:
        self.db.execute("UPDATE remotes SET last_error = ?, last_pull = CASE WHEN ? IS NULL THEN ? ELSE last_pull END "
                        "WHERE remote = ?", (error, error, time.time(), remote))

    def peer(self, remote: str, prefix: str) -> tuple[int, str | None, str | None]:
        """(seq read up to, that object's name, the replica whose prefix it is) for a peer prefix."""
        row = self.db.execute("SELECT seq, last_name, replica FROM peers WHERE remote = ? AND prefix = ?",
                              (remote, prefix)).fetchone()
        return tuple(row) if row else (0, None, None)

    def set_peer(self, remote: str, prefix: str, replica: str, seq: int, name: str, hlc: str | None) -> None:
        self.db.execute("INSERT OR REPLACE INTO peers VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (remote, prefix, replica, seq, name, time.time(), hlc))

    def peers(self, remote: str | None = None) -> list[dict]:
        rows = self.db.execute("SELECT remote, prefix, replica, seq, last_seen, hlc FROM peers"
                               + (" WHERE remote = ?" if remote else ""), (remote,) if remote else ()).fetchall()
        return [dict(zip(("remote", "prefix", "replica", "seq", "last_seen", "hlc"), r)) for r in rows]

    def remotes(self) -> list[dict]:
        rows = self.db.execute("SELECT remote, prefix, next_seq, last_push, last_pull, last_error FROM remotes")
        return [dict(zip(("remote", "prefix", "next_seq", "last_push", "last_pull", "last_error"), r)) for r in rows]

    # -- the outbox: a batch made but maybe not yet on the remote --------------------------------------
    # A queued batch's bytes are a file in data/sync/outbox/ (written and flushed before its row
    # commits); the row names it. Rows from before that held the bytes themselves, and still work.

    def _outbox_file(self, remote: str, seq: int) -> Path:
        return sync_dir(self.layout) / "outbox" / f"{hashlib.sha256(remote.encode()).hexdigest()[:16]}-{seq:010d}.mfs"

    def queued(self, remote: str) -> list[tuple[int, str]]:
        """(seq, object name) of each batch queued for a remote, oldest first, without reading them."""
        return self.db.execute("SELECT seq, name FROM outbox WHERE remote = ? ORDER BY seq", (remote,)).fetchall()

    def outbox(self, remote: str) -> list[tuple[int, str, bytes]]:
        out = []
        for seq, name, data in self.db.execute("SELECT seq, name, data FROM outbox WHERE remote = ? ORDER BY seq",
                                               (remote,)).fetchall():
            if not data:
                file = self._outbox_file(remote, seq)
                try:
                    data = file.read_bytes()
                except FileNotFoundError:
                    raise MemfsError(
                        f"the batch of changes queued for {remote} (sequence {seq}) is missing: {file} was removed; "
                        "restore data/sync/ from a backup of this store") from None
            out.append((seq, name, data))
        return out

    def queue(self, remote: str, seq: int, name: str, data: bytes) -> None:
        """Write the batch's file (flushed), then its row: call inside the transaction that stamps its heads."""
        file = self._outbox_file(remote, seq)
        atomic_write(file, data)
        crash_point("batch-written")
        self.db.execute("INSERT INTO outbox VALUES (?, ?, ?, ?)", (remote, seq, name, b""))

    def unqueue(self, remote: str, seq: int) -> None:
        self.db.execute("DELETE FROM outbox WHERE remote = ? AND seq = ?", (remote, seq))
        crash_point("unqueued")
        self._outbox_file(remote, seq).unlink(missing_ok=True)

    def prune_outbox(self) -> None:
        """Files no row names: left by a crash between writing a batch and committing (or unqueueing) it."""
        folder = sync_dir(self.layout) / "outbox"
        if not folder.is_dir():
            return
        keep = {self._outbox_file(r, seq).name for r, seq in self.db.execute("SELECT remote, seq FROM outbox")}
        for f in folder.iterdir():
            if f.name not in keep:
                f.unlink(missing_ok=True)

    # -- resolutions -----------------------------------------------------------------------------------

    def resolve(self, mem_id: str, loser: str) -> None:
        self.db.execute("INSERT OR IGNORE INTO resolved VALUES (?, ?)", (mem_id, loser))

    def is_resolved(self, mem_id: str, loser: str) -> bool:
        return self.db.execute("SELECT 1 FROM resolved WHERE id = ? AND loser = ?", (mem_id, loser)).fetchone() is not None

    def resolve_locally(self, mem_id: str, loser: str) -> None:
        """Resolved here: remembered, and sent with the next batch so every replica resolves it."""
        self.resolve(mem_id, loser)
        self.db.execute("INSERT OR IGNORE INTO unsent VALUES (?, ?)", (mem_id, loser))

    def unsent(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self.db.execute("SELECT id, loser FROM unsent")]

    def sent(self) -> None:
        self.db.execute("DELETE FROM unsent")

    # -- local changes stamped during an apply (made between collecting and applying) ------------------

    def unpushed(self) -> dict[str, tuple[str, str | None]]:
        return {r[0]: (r[1], r[2]) for r in self.db.execute("SELECT id, v, parent FROM unpushed")}

    def save_unpushed(self, rows: list[tuple[str, str, str | None]]) -> None:
        self.db.executemany("INSERT OR REPLACE INTO unpushed VALUES (?, ?, ?)", rows)

    def clear_unpushed(self) -> None:
        self.db.execute("DELETE FROM unpushed")

    # -- version-id cache: a file whose state has not changed keeps its version id ---------------------

    def cached_versions(self) -> dict[str, tuple[str, str, str]]:
        return {r[0]: (r[1], r[2], r[3]) for r in self.db.execute("SELECT path, state, id, v FROM vcache")}

    def cache_versions(self, rows: list[tuple[str, str, str, str]], gone: list[str]) -> None:
        with self.tx():
            self.db.executemany("INSERT OR REPLACE INTO vcache VALUES (?, ?, ?, ?)", rows)
            self.db.executemany("DELETE FROM vcache WHERE path = ?", [(p,) for p in gone])


class _Tx:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb):
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")

