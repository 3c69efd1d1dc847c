"""The catalog's key/value side (issue #13): lookups by (namespace, key), expiry, and the access table
that counts reads without rewriting any memory file. A part of memfs.catalog.Catalog, which mixes it in
and provides `db` (its SQLite connection) and `_lock`.
"""

from __future__ import annotations

import time
from typing import Iterable

from .catalog_rows import chunks


class KeyValueIndex:
    """Key/value, expiry and access tracking: Catalog's methods over docs' namespace/key/expires_ts
    columns and the access table."""

    def ids_for_key(self, namespace: str, key: str) -> list[str]:
        """Ids holding (namespace, key), newest first (more than one only if files were written by hand)."""
        return [r[0] for r in self.db.execute(
            "SELECT id FROM docs WHERE namespace = ? AND key = ? ORDER BY updated_ts DESC, id", (namespace, key))]

    def keys_in(self, namespace: str | None, now: float) -> list[tuple[str, str, str]]:
        """(namespace, key, id) of every live keyed memory, in one namespace or all."""
        sql = "SELECT namespace, key, id FROM docs WHERE key IS NOT NULL AND (expires_ts IS NULL OR expires_ts > ?)"
        args: list = [now]
        if namespace is not None:
            sql += " AND namespace = ?"
            args.append(namespace)
        return [tuple(r) for r in self.db.execute(sql + " ORDER BY namespace, key", args)]  # type: ignore[misc]

    def expired(self, now: float) -> list[tuple[str, str]]:
        """(id, path) of every memory whose expires_at has passed."""
        return [tuple(r) for r in self.db.execute(  # type: ignore[misc]
            "SELECT id, path FROM docs WHERE expires_ts IS NOT NULL AND expires_ts <= ? ORDER BY expires_ts", (now,))]

    def is_expired(self, mem_id: str, now: float) -> bool:
        row = self.db.execute("SELECT expires_ts FROM docs WHERE id = ?", (mem_id,)).fetchone()
        return bool(row and row[0] is not None and row[0] <= now)

    def touch(self, ids: Iterable[str], now: float) -> None:
        """Count a read of each memory: accessed_at = now, access_count + 1."""
        with self._lock:
            self.db.executemany(
                "INSERT INTO access(id, accessed_ts, access_count) VALUES (?, ?, 1) ON CONFLICT(id) DO UPDATE"
                " SET accessed_ts = excluded.accessed_ts, access_count = access_count + 1", [(i, now) for i in ids])

    def set_access(self, items: Iterable[tuple[str, float, int]]) -> None:
        """Seed (id, accessed_ts, access_count) rows, e.g. carried over by an import."""
        with self._lock:
            self.db.executemany("INSERT OR REPLACE INTO access(id, accessed_ts, access_count) VALUES (?, ?, ?)",
                                list(items))

    def access_of(self, ids: Iterable[str]) -> dict[str, tuple[float, int]]:
        found: dict[str, tuple[float, int]] = {}
        for chunk in chunks(list(ids), 500):
            marks = ",".join("?" * len(chunk))
            for i, ts, n in self.db.execute(
                    f"SELECT id, accessed_ts, access_count FROM access WHERE id IN ({marks})", chunk):
                found[i] = (ts, n)
        return found

    def forget_access(self, ids: Iterable[str]) -> None:
        with self._lock:
            self.db.executemany("DELETE FROM access WHERE id = ?", [(i,) for i in ids])

    def key_hashes(self) -> dict[tuple[str, str], str]:
        """(namespace, key) -> content hash of the newest live (unexpired) memory holding it."""
        out: dict[tuple[str, str], str] = {}
        for ns, key, h in self.db.execute(
                "SELECT namespace, key, hash FROM docs WHERE key IS NOT NULL"
                " AND (expires_ts IS NULL OR expires_ts > ?) ORDER BY updated_ts", (time.time(),)):
            out[(ns, key)] = h
        return out
