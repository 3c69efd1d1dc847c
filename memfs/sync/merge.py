"""Merging incoming changes into this replica, one memory at a time (docs/sync.md, "Merging").

Records arrive sorted by their hybrid-logical-clock stamps. For one memory, with this replica's head H
(the version it holds as shared) and an incoming change C made on top of version C.parent:

- C's version was seen here before: nothing to do (a repeat, or an ancestor of what we hold).
- no head, or H is an ancestor of C: C simply arrives (a new memory, an edit, a delete). Ancestry is
  C.parent, and further back through the parents of every record in this sync and the `lineage` a
  base record carries for the versions its replica folded away (memfs.sync.compact): a reader that
  held one of those sees the base's version as the edit on top of it, not as a concurrent one.
- otherwise the two are concurrent. A put beats a delete (an edit is never lost to a concurrent
  delete; the delete is what goes to the inbox); else the later stamp wins, ties by replica id. Every
  replica sees the same two versions and picks the same winner; the loser goes to the conflict inbox.

A file changed here after this sync collected its changes is stamped now, so it takes part as the
newer local version rather than being overwritten; it goes out with the next sync.
"""

from __future__ import annotations

import base64

import numpy as np

from ..errors import InvalidDocumentError
from . import conflicts
from ..documents import Memory
from ..filestore import atomic_write_many, new_relpath
from .steps import crash_point
from .versions import ancestors, delete_file, memory_from, parents_of, version_of
from .objects import RemoteObjectError
from .state import Stamp

DIM = 384
CHUNK = 500  # records decided, written and recorded together


class Merger:
    def __init__(self, engine, report):
        self.engine = engine
        self.store = engine.store
        self.state = engine.state
        self.layout = engine.store.layout
        self.report = report
        self.touched: list[str] = []
        self.unpushed: list[tuple[str, str, str | None]] = []

    def apply(self, records: list[dict]) -> None:
        """Merge in chunks: decide each record, write the chunk's files (flushed together), then record
        the new heads in one transaction. Files go first: a head that names a version the file does not
        hold would be taken for a local change and sent back out."""

        self._cache_vectors(records)
        self.parents = parents_of(records)
        self.state.add_edges(self.parents)  # kept: a later compaction here tells ancestors from losers by them
        progress = self.engine.progress
        for start in range(0, len(records), CHUNK):
            chunk = records[start:start + CHUNK]
            self.writes: dict[str, tuple[str | None, Memory | None]] = {}  # id -> (path, memory or None)
            self.heads: list[tuple] = []
            self.seen: list[tuple[str, str]] = []
            for r in chunk:
                self.state.receive(Stamp.parse(r["hlc"]))
                self._resolved(r) if r["op"] == "resolve" else self._one(r)
            self._flush()
            if start == 0:
                crash_point("applied-one")
            if progress:
                progress("apply", start + len(chunk), len(records))
        if self.touched:
            before = self.store.embedder.embedded
            self.store.reconcile(paths=self.touched, verify_vectors=False)
            self.report.embedded += self.store.embedder.embedded - before

    def _flush(self) -> None:
        puts = []
        for mem_id, (path, m) in self.writes.items():
            if m is None:
                if path is not None:
                    delete_file(self.store, path)
                    self.touched.append(path)
            else:
                rel = path or self._new_rel(m, {p for p, _ in puts})
                puts.append((self.layout.memories / rel, m.to_bytes()))
                self.touched.append(rel)
        atomic_write_many(puts)
        with self.state.tx():
            self.state.set_heads(self.heads)
            for mem_id, v in self.seen:
                self.state.mark_seen(mem_id, v)
            self.state.save_unpushed(self.unpushed)
        self.unpushed = []

    # -- vectors travel --------------------------------------------------------------------------------

    def _cache_vectors(self, records: list[dict]) -> None:
        """Vectors made by our model for exactly this content go into the embedding cache, so writing the
        memory embeds nothing. Checked per record: the model id, the content hash, the shape."""
        model = self.engine.model
        good = {}
        for r in records:
            if r.get("op") != "put" or r.get("model") != model or not r.get("vec"):
                continue
            content = (r.get("doc") or {}).get("content")
            if not isinstance(content, str):
                continue
            from ..documents import content_hash

            h = content_hash(content)
            if r.get("h") != h:
                continue  # made for other content: not trusted
            try:
                vec = np.frombuffer(base64.b64decode(r["vec"], validate=True), dtype=np.float32)
            except (ValueError, TypeError):
                continue
            if vec.shape == (DIM,) and np.isfinite(vec).all():
                good[h] = vec
        if good:
            with self.store.catalog.transaction():
                self.store.catalog.cache_vectors(model, good)
            self.report.vectors_reused += len(good)

    # -- one change -------------------------------------------------------------------------------------

    def _resolved(self, r: dict) -> None:
        loser = r.get("loser")
        if isinstance(loser, str):
            self.state.resolve(r["id"], loser)
            conflicts.drop(self.layout, conflicts.conflict_id(r["id"], loser))

    def _local(self, mem_id: str):
        """(the memory as this replica holds it now, its version id, its path): from this chunk's pending
        writes, else its file, else (unreadable or invalid) its last indexed version."""
        path = self.store.catalog.path_for_id(mem_id)
        if mem_id in self.writes:
            path, m = self.writes[mem_id]
            return m, (version_of(m) if m is not None else None), path
        if path is None:
            return None, None, None
        try:
            m = self.store.read_file(path)
        except Exception:  # unreadable or invalid: the last good version stands for it, never "deleted"
            entry = self.store.catalog.get(mem_id)
            m = entry.memory if entry else None
        if m is None or m.id != mem_id:
            return None, None, path
        return m, version_of(m), path

    def _head(self, mem_id: str):
        for h in reversed(self.heads):
            if h[0] == mem_id:
                return (h[1], h[2].text(), h[2].replica, int(h[3]), h[4])
        return self.state.head(mem_id)

    def _one(self, r: dict) -> None:
        mem_id, v, parent = r["id"], r.get("v"), r.get("parent")
        if not isinstance(v, str) or self.state.was_seen(mem_id, v) or (mem_id, v) in self.seen:
            return
        self.seen += [(mem_id, old) for old, _parent in r.get("lineage", ())]  # folded away: ancestors of v
        stamp = Stamp.parse(r["hlc"])
        deleted = r["op"] == "del"
        incoming = None if deleted else self._incoming(r, mem_id, v)
        local, local_v, path = self._local(mem_id)
        if local_v is not None and local_v == v:  # written before a crash, its head not yet recorded
            self.heads.append((mem_id, v, stamp, False, parent))
            return
        head = self._head(mem_id)
        if local_v != (None if head is None or head[3] else head[0]):
            head = self._stamp_local(mem_id, local_v, head)  # changed here since this sync collected
        if head is None and incoming is not None and self._dedup(mem_id, v, stamp, incoming, parent):
            return
        if head is None or head[0] in ancestors(self.parents, mem_id, v):
            self._take(mem_id, v, stamp, deleted, incoming, path, parent)
            return
        self._concurrent(r, mem_id, v, stamp, deleted, incoming, head, local, path)

    def _incoming(self, r: dict, mem_id: str, v: str) -> Memory:
        try:
            m = memory_from(r.get("doc") or {}, mem_id)
        except InvalidDocumentError as e:
            raise RemoteObjectError(f"(a record for memory {mem_id})", f"its document is invalid: {e}") from None
        if m.id != mem_id or version_of(m) != v:
            raise RemoteObjectError(f"(a record for memory {mem_id})", "its document does not match its version id")
        return m

    def _dedup(self, mem_id: str, v: str, stamp: Stamp, incoming: Memory, parent) -> bool:
        """The same content added on two replicas becomes one memory, on every replica alike: the
        smaller id survives with both ids in its `origins`; the other is deleted. Both changes go out
        with this replica's next batch like any local change (and both replicas make identical ones)."""
        other = self.store.catalog.id_for_hash(incoming.content_hash)
        if other is None or other == mem_id or other in self.writes:
            return False
        local, _local_v, path = self._local(other)
        if local is None:
            return False
        origins = sorted({mem_id, other, *local.extra.get("origins", ()), *incoming.extra.get("origins", ())})
        if mem_id < other:  # the incoming one survives; ours goes
            self.writes[mem_id] = (None, incoming.replace(extra={**incoming.extra, "origins": origins}))
            self.writes[other] = (path, None)
        else:  # ours survives; the incoming one is recorded as arrived, and its deletion goes out
            self.writes[other] = (path, local.replace(extra={**local.extra, "origins": origins}))
        self.heads.append((mem_id, v, stamp, False, parent))
        self.report.applied += 1
        return True

    def _stamp_local(self, mem_id: str, local_v: str | None, head):
        """A change made here after this sync collected (or never collected): stamp it now, send it next."""
        stamp = self.state.tick()
        v = local_v if local_v is not None else f"del-{stamp.text()}"
        parent = head[0] if head else None
        self.heads.append((mem_id, v, stamp, local_v is None, parent))
        self.unpushed.append((mem_id, v, parent))
        return (v, stamp.text(), stamp.replica, int(local_v is None), parent)

    def _take(self, mem_id, v, stamp, deleted, incoming, path, parent) -> None:
        if deleted:
            if path is not None or mem_id in self.writes:
                self.writes[mem_id] = (path, None)
                self.report.applied += 1
        else:
            self.writes[mem_id] = (path, incoming)
            self.report.applied += 1
        self.heads.append((mem_id, v, stamp, deleted, parent))

    def _concurrent(self, r, mem_id, v, stamp, deleted, incoming, head, local, path) -> None:
        head_v, head_stamp, head_deleted = head[0], Stamp.parse(head[1]), bool(head[3])
        self.seen += [(mem_id, v), (mem_id, head_v)]
        for old in ancestors(self.parents, mem_id, v):  # a later version of a losing side replaces its inbox entry
            conflicts.drop_superseded(self.layout, mem_id, old)
        if deleted and head_deleted:
            earlier = self._deleted_earlier(mem_id, r.get("parent"), head[4])
            if earlier is None:
                return  # both deleted the same version: they agree
            incoming_wins = earlier == "ours"
        elif deleted != head_deleted:
            incoming_wins = not deleted  # an edit beats a concurrent delete, whatever the clocks say
        else:
            incoming_wins = stamp > head_stamp
        theirs = {"v": v, "hlc": stamp.text(), "replica": stamp.replica, "deleted": deleted,
                  **({"doc": incoming.to_dict()} if incoming else {})}
        ours = {"v": head_v, "hlc": head_stamp.text(), "replica": head_stamp.replica, "deleted": head_deleted,
                **({"doc": local.to_dict()} if local is not None and not head_deleted else {})}
        winner, loser = (theirs, ours) if incoming_wins else (ours, theirs)
        parent = r.get("parent")
        if not self.state.is_resolved(mem_id, loser["v"]):
            conflicts.record(self.layout, mem_id, winner, loser)
            self.report.conflicts += 1
        if incoming_wins and head_deleted and not deleted:
            self._deletes_beside_the_head_lose(mem_id, v, head_v, winner)
        if incoming_wins:
            self._take(mem_id, v, stamp, deleted, incoming, path, parent)

    def _deletes_beside_the_head_lose(self, mem_id: str, v: str, head_v: str, winner: dict) -> None:
        """An edit beat the head's delete: every other delete of a version it descends from loses to it
        too. Such a delete came in agreeing with the head (the same version deleted on two replicas),
        so no conflict was recorded for it then; a replica that met this edit first recorded one."""
        known = self.state.edges([mem_id])
        for key, parents in self.parents.items():
            known.setdefault(key, set()).update(parents)
        before = ancestors(known, mem_id, v)
        for (i, d), parents in known.items():
            if i != mem_id or d == head_v or not d.startswith("del-") or not parents & before:
                continue
            if not self.state.is_resolved(mem_id, d) and not conflicts.holds(self.layout, mem_id, d):
                stamp = Stamp.parse(d.removeprefix("del-"))
                conflicts.record(self.layout, mem_id, winner,
                                 {"v": d, "hlc": stamp.text(), "replica": stamp.replica, "deleted": True})
                self.report.conflicts += 1

    def _deleted_earlier(self, mem_id: str, theirs: str | None, ours: str | None) -> str | None:
        """Two concurrent deletes, of versions `theirs` and `ours`: the one that lost to an edit it did
        not see ("theirs" or "ours"), or None when both deleted the same version (they agree). A delete
        loses to every edit made without seeing it (an edit beats a delete), and a replica that met
        that edit before the other delete recorded it so; recording it here too keeps every inbox alike.
        Ours can only have missed `theirs` when that version descends from ours (had it come here
        first, it would have beaten our delete then); otherwise the incoming delete missed `ours`."""
        if theirs is None or ours is None or theirs == ours:
            return None
        known = self.state.edges([mem_id])
        for key, parents in self.parents.items():
            known.setdefault(key, set()).update(parents)
        return "ours" if ours in ancestors(known, mem_id, theirs) else "theirs"

    def _new_rel(self, m: Memory, pending: set) -> str:
        """A new file's path, unused on disk and by the other files of this chunk."""
        rel = new_relpath(self.layout.memories, m.id, m.content, m.created_at)
        n = 2
        while self.layout.memories / rel in pending:
            rel = rel.removesuffix(".json") + f"-{n}.json"
            n += 1
        return rel
