"""One sync of a replica with a remote (docs/sync.md): push what changed here, pull what the others
pushed, merge per memory, keep every losing version.

The transaction, each step a fault-injection point (`memfs.sync.steps.crash_at`, used by tests/test_sync_crash.py):

    fetched     every new peer object read and verified (nothing written anywhere yet)
    applied-one the first chunk of changes merged (files, then heads and the conflict inbox)
    applied     every chunk merged
    cursors     the per-peer read positions saved
    batch-written  the next batch's bytes flushed to data/sync/outbox/ (its row not yet committed)
    collected   local changes stamped, the batch queued in sync.sqlite (one transaction)
    uploaded    the queued batch written once to the remote under this replica's prefix
    unqueued    its row removed from the queue (its file not yet)
    pushed      the queue emptied

A crash anywhere leaves the remote readable (objects appear whole or not at all) and the next sync
finishes the job: a queued batch is uploaded again (same name, same bytes), and an apply repeated
after a crash is a no-op for versions already seen.
"""

from __future__ import annotations

import base64
import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
import orjson

from .objects import (KEY_OBJECT, MARKER, REPLICAS, Batch, Codec, RemoteObjectError, SyncKeyError, batch_name,
                      decode, encode, is_base, parse_name)
from ..errors import NotFoundError
from . import conflicts
from .remotes import TEMP_PREFIX, Remote
from .state import Stamp, SyncState
from .steps import crash_point
from .versions import parents_of, version_of_doc

COVERED = object()  # read_object's `prev` for a base read in place of the objects it covers


def _lineage_ok(lineage) -> bool:
    """A base record's `lineage`: [[version, its parent or null], ...] (memfs.sync.compact)."""
    return isinstance(lineage, list) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and (p[1] is None or isinstance(p[1], str))
        for p in lineage)


@dataclass
class SyncReport:
    remote: str
    replica: str
    dry_run: bool = False
    pushed: int = 0  # change records sent
    pulled: int = 0  # change records received from peers
    applied: int = 0  # memories written or deleted here
    conflicts: int = 0  # new conflicts found in this sync
    embedded: int = 0  # memories that had to be embedded here (vectors that did not travel)
    vectors_reused: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    peers: list[str] = field(default_factory=list)
    would_push: list[str] = field(default_factory=list)  # dry run: ids that would be pushed
    would_pull: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Incoming:
    name: str  # the object it came in
    prefix: str
    batch: Batch


class SyncEngine:
    def __init__(self, store, remote: Remote, codec: Codec, state: SyncState, *, progress=None):
        self.store = store
        self.remote = remote
        self.codec = codec
        self.state = state
        self.key = remote.where  # the remote's identity in sync.sqlite
        self.progress = progress
        self.model = store.embedder.model_id

    # -- the whole transaction ------------------------------------------------------------------------

    def run(self, *, dry_run: bool = False) -> SyncReport:
        started = time.monotonic()
        report = SyncReport(self.remote.where, self.state.replica, dry_run)
        listing = self.remote.list("")
        self.check_marker(listing, dry_run)
        prefix, _seq, _last = self.state.remote(self.key, self.codec.encrypted)
        self.open_keys(listing, prefix, dry_run)
        self.store.reconcile(verify_vectors=False)  # hand edits since the last look count as changes
        if dry_run:
            report.would_push = sorted(self.local_changes()[0])
            report.would_pull = sum(len(i.batch.records) for i in self._fetch(listing, prefix, report))
            report.seconds = time.monotonic() - started
            return report
        # Read and verify everything first: a wrong key or a damaged object stops the sync before this
        # replica writes anything, here or on the remote.
        incoming = self._fetch(listing, prefix, report)
        crash_point("fetched")
        self._apply(incoming, report)
        crash_point("applied")
        for inc in incoming:
            if inc.prefix == prefix:  # this replica's own objects it did not know (see _fetch)
                self.state.pushed(self.key, inc.batch.seq, inc.name)
                continue
            stamps = [r.get("hlc") for r in inc.batch.records if r.get("hlc")]
            self.state.set_peer(self.key, inc.prefix, inc.batch.replica, inc.batch.seq, inc.name,
                                max(stamps) if stamps else None)
        crash_point("cursors")
        self._push(prefix, report)
        self.state.note(self.key, error=None)
        report.seconds = time.monotonic() - started
        return report

    # -- the remote's marker and (passphrase mode) this replica's key -----------------------------------

    def check_marker(self, listing: dict[str, int], dry_run: bool) -> None:
        """The remote's format and encryption must be this sync's (else refused); a new remote gets its marker."""
        want = self.codec.marker()
        if MARKER in listing:
            try:
                have = orjson.loads(self.remote.read(MARKER))
            except orjson.JSONDecodeError:
                raise RemoteObjectError(MARKER, "it is not JSON") from None
            fmt = have.get("format") if isinstance(have, dict) else None
            if fmt != want["format"]:
                raise RemoteObjectError(MARKER, f"the remote is in format {str(fmt)[:40]!r}; this memfs reads "
                                        f"{want['format']} (upgrade memfs if it is newer)")
            if bool(have.get("encrypted")) != want["encrypted"]:
                raise SyncKeyError(
                    f"the remote {self.remote.where} is {'encrypted' if have.get('encrypted') else 'not encrypted'}"
                    f" and this sync {'is' if want['encrypted'] else 'is not'}: "
                    + ("give --encrypt/--identity or --passphrase-file" if have.get("encrypted") else
                       "sync without --encrypt, or use a new remote for encrypted replicas") + "; nothing was changed")
        elif not dry_run:
            self.remote.write_once(MARKER, orjson.dumps(want, option=orjson.OPT_INDENT_2) + b"\n")

    def open_keys(self, listing: dict[str, int], prefix: str, dry_run: bool) -> None:
        """Passphrase mode: open every replica's key object (so theirs decrypt), making ours if new."""
        if self.codec.passphrase is None:
            return
        import pyrage

        keys = sorted(n for n in listing if n.startswith(REPLICAS) and n.endswith("/" + KEY_OBJECT))
        own = f"{REPLICAS}{prefix}/{KEY_OBJECT}"
        for name in keys:
            identity = self.codec.unwrap_identity(name, self.remote.read(name))
            self.codec.identities.append(identity)
            if name == own:
                self.codec.own_identity = identity
        if self.codec.own_identity is None and not dry_run:
            identity = pyrage.x25519.Identity.generate()
            self.remote.write_once(own, self.codec.wrap_identity(identity))
            self.codec.own_identity = identity
            self.codec.identities.append(identity)

    # -- push -----------------------------------------------------------------------------------------

    def _current(self, read: dict | None = None) -> dict[str, tuple[str, str]]:
        """id -> (version id, path) of every memory the catalog holds, hashing only files that changed.
        The catalog entries it had to read are added to `read` (the push reuses them: a first push reads
        every memory, and reading 27,589 twice was a quarter of its time)."""
        catalog = self.store.catalog
        with self.store.mutex:
            index = catalog.file_index()
        cached = self.state.cached_versions()
        out, fresh, todo = {}, [], []
        for path, (mem_id, st) in index.items():
            key = f"{st.size}.{st.mtime_ns}.{st.ino}.{st.ctime_ns}"
            c = cached.get(path)
            if c and c[0] == key and c[1] == mem_id:
                out[mem_id] = (c[2], path)
            else:
                todo.append((path, mem_id, key))
        if todo:
            with self.store.mutex:
                entries = catalog.get_many([t[1] for t in todo])
            if read is not None:
                read.update(entries)
            for path, mem_id, key in todo:
                e = entries.get(mem_id)
                if e is None:
                    continue
                v = version_of_doc(e.doc)
                out[mem_id] = (v, path)
                fresh.append((path, key, mem_id, v))
        self.state.cache_versions(fresh, [p for p in cached if p not in index])
        return out

    def local_changes(self, read: dict | None = None) -> tuple[dict[str, tuple[str | None, str | None]],
                                                               dict[str, tuple[str, str]]]:
        """({id: (new version or None for deleted, parent)}, current) since this replica's heads; the
        catalog entries read on the way are added to `read` (see _current)."""
        current = self._current(read)
        heads = self.state.heads()
        changes: dict[str, tuple[str | None, str | None]] = {}
        for mem_id, (v, _path) in current.items():
            h = heads.get(mem_id)
            if h is None or h[0] != v or h[3]:
                changes[mem_id] = (v, h[0] if h else None)
        for mem_id, h in heads.items():
            if not h[3] and mem_id not in current:
                changes[mem_id] = (None, h[0])
        for mem_id, (v, parent) in self.state.unpushed().items():
            if mem_id in changes:
                continue
            if mem_id in current and current[mem_id][0] == v:
                changes[mem_id] = (v, parent)
            elif mem_id not in current and heads.get(mem_id, (None,))[0] == v:
                # a delete made here that a sync stamped while applying (another replica's delete of the
                # memory came in too): it is still this replica's head, so it goes out like any change
                changes[mem_id] = (None, parent)
        return changes, current

    def _push(self, prefix: str, report: SyncReport) -> None:
        self.state.prune_outbox()
        batches = self.state.outbox(self.key)  # left over from an interrupted sync: sent first, as they were
        if not batches:
            report.pushed, batches = self._collect(prefix)
        crash_point("collected")
        for seq, name, data in batches:
            self.remote.write_once(name, data)  # False: already there from before a crash (same bytes)
            crash_point("uploaded")
            report.bytes_sent += len(data)
            self.state.unqueue(self.key, seq)
            crash_point("pushed")

    def _collect(self, prefix: str) -> tuple[int, list[tuple[int, str, bytes]]]:
        """Stamp local changes and queue them as the next batch; returns how many records it holds and
        the batch as queued ([(seq, name, bytes)], or [] when there is nothing to send).

        The first batch to a remote also carries every unchanged memory at its current version and
        stamp (a snapshot), so a new remote, or one rebuilt after a loss, gets this replica's whole store.
        """
        with self.store.mutex:  # held throughout: the entries read for the changes are still current below
            read: dict = {}
            changes, current = self.local_changes(read)
            unsent = self.state.unsent()
            _prefix, seq, last = self.state.remote(self.key, self.codec.encrypted)
            snapshot = [i for i in current if i not in changes] if self.state.needs_snapshot(self.key) else []
            lost = self._lost_here(changes, current)
            if not changes and not unsent and not snapshot and not lost:
                return 0, []
            records, heads = self._records(changes, snapshot, read)
            records += lost
            self.state.add_edges(parents_of(records))  # its own versions' ancestry, as for the ones received
            for mem_id, loser in unsent:
                records.append({"op": "resolve", "id": mem_id, "loser": loser, "hlc": self.state.tick().text()})
            data = self.codec.seal(encode(Batch(self.state.replica, seq, last, records)))
            name = batch_name(prefix, seq, data)
            with self.state.tx():
                self.state.queue(self.key, seq, name, data)
                self.state.set_heads(heads)
                self.state.pushed(self.key, seq, name)
                self.state.sent()
                self.state.clear_unpushed()
        return len(records), [(seq, name, data)]

    def _lost_here(self, changes: dict, current: dict) -> list[dict]:
        """Records for local changes that lost a conflict in this sync's apply before they were ever
        sent (made here, then beaten by a concurrent change that arrived first). They go out like any
        change: every other replica then finds the same conflict and keeps the same loser in its inbox
        (the merge decides alike everywhere); unsent, only this replica's inbox would hold it."""
        lost = []
        for mem_id, (v, parent) in self.state.unpushed().items():
            if mem_id in changes or current.get(mem_id, (None,))[0] == v:
                continue  # it is this replica's version after all: sent as a change above
            try:
                loser = conflicts.get(self.store.layout, conflicts.conflict_id(mem_id, v))["loser"]
            except NotFoundError:  # resolved already, or superseded by a later version of its side
                continue
            rec = {"op": "del" if loser.get("deleted") else "put", "id": mem_id, "v": v, "parent": parent,
                   "hlc": loser["hlc"]}
            if not loser.get("deleted"):
                rec["doc"] = loser["doc"]
            lost.append(rec)
        return lost

    def _records(self, changes: dict, snapshot: list[str], read: dict) -> tuple[list[dict], list]:
        ids = [i for i, (v, _) in changes.items() if v is not None] + snapshot
        entries = {i: read[i] for i in ids if i in read}
        entries.update(self.store.catalog.get_many([i for i in ids if i not in read]))
        vectors = self.store.vectors_for(e.hash for e in entries.values())
        records, heads = [], []
        for mem_id, (v, parent) in sorted(changes.items()):
            stamp = self.state.tick()
            rec = {"id": mem_id, "parent": parent, "hlc": stamp.text()}
            if v is None:
                rec.update(op="del", v=f"del-{stamp.text()}")
            else:
                rec.update(self._put(entries[mem_id], v, vectors))
            records.append(rec)
            heads.append((mem_id, rec["v"], stamp, v is None, parent))
        known = self.state.heads() if snapshot else {}  # 27,589 rows: read only for a snapshot
        for mem_id in sorted(snapshot):
            h = known.get(mem_id)
            if h is None or mem_id not in entries:
                continue
            records.append({"id": mem_id, "parent": h[4], "hlc": h[1], "snapshot": True,
                            **self._put(entries[mem_id], h[0], vectors)})
        return records, heads

    def _put(self, e, v: str, vectors: dict) -> dict:
        rec = {"op": "put", "v": v, "doc": e.doc}
        vec = vectors.get(e.hash)
        if vec is not None:
            rec.update(model=self.model, h=e.hash,
                       vec=base64.b64encode(np.asarray(vec, dtype=np.float32).tobytes()).decode())
        return rec

    # -- fetch and verify -------------------------------------------------------------------------------

    def _fetch(self, listing: dict[str, int], own: str, report: SyncReport) -> list[Incoming]:
        """Every peer object not read yet, verified; RemoteObjectError (naming it) before anything applies."""
        by_prefix: dict[str, dict[int, str]] = {}
        for name in listing:
            if name == MARKER or name.startswith(TEMP_PREFIX) or name.rsplit("/", 1)[-1].startswith("."):
                continue
            if name.startswith(REPLICAS) and name.endswith("/" + KEY_OBJECT) and name.count("/") == 2:
                continue
            parsed = parse_name(name)
            if parsed is None:
                raise RemoteObjectError(name, "it is not an object memfs writes (a foreign file)")
            prefix, seq, _h = parsed
            if seq in by_prefix.setdefault(prefix, {}):
                raise RemoteObjectError(name, f"sequence number {seq} appears twice under {prefix} (a replayed object)")
            by_prefix[prefix][seq] = name
        out: list[Incoming] = []
        for prefix, objects in sorted(by_prefix.items()):
            if prefix == own:
                # Trigger: objects under this replica's own prefix beyond what its state says it wrote.
                # Why: the same remote reached under another name, or this store restored from a
                # backup; writing "the next" number again would put two objects at one number.
                # Outcome: they are read like a peer's (their versions mostly seen already), and the
                # next batch continues after them.
                _p, next_seq, last_name = self.state.remote(self.key, self.codec.encrypted)
                seen_seq, replica = next_seq - 1, self.state.replica
            else:
                report.peers.append(prefix)
                seen_seq, last_name, replica = self.state.peer(self.key, prefix)
            if prefix != own and seen_seq and objects.get(seen_seq) != last_name and max(objects) < seen_seq + 1:
                raise RemoteObjectError(f"{REPLICAS}{prefix}/", f"it holds an older state than this replica has "
                                        f"already read (up to sequence {seen_seq}): a replay or a rolled-back remote")
            if prefix != own and seen_seq and seen_seq in objects and objects[seen_seq] != last_name:
                raise RemoteObjectError(objects[seen_seq], "it differs from the object this replica read at that "
                                        "sequence number (a replaced object)")
            out += self.read_chain(prefix, objects, seen_seq, last_name, replica, report)
        return out

    def read_chain(self, prefix: str, objects: dict[int, str], seen_seq: int, last_name: str | None,
                   replica: str | None, report: SyncReport) -> list[Incoming]:
        """One replica's objects after `seen_seq`, each verified against the one before it.

        Trigger: the next object is gone but later ones are there. Why: that replica compacted (its base
        object folds its seqs 1..base-1 into one, and it deleted them). Outcome: read on from its newest
        base; a gap that no base of that replica covers is a removed object, refused."""
        out, prev, seq = [], last_name, seen_seq + 1
        while True:
            if seq not in objects:
                later = [s for s in objects if s > seq]
                if not later:
                    return out
                bases = [s for s in later if is_base(objects[s])]
                if not bases:
                    raise RemoteObjectError(f"{REPLICAS}{prefix}/{seq:010d}-*.mfs", "it is missing while later "
                                            "objects of its replica are there, and no base object of that replica "
                                            "covers it (a removed object)")
                seq, prev = max(bases), COVERED
            out.append(self.read_object(objects[seq], prefix, seq, prev, report, replica))
            replica = out[-1].batch.replica  # the rest of the chain must come from the same replica
            prev, seq = objects[seq], seq + 1

    def read_object(self, name: str, prefix: str, seq: int, prev: str | None, report: SyncReport,
                    replica: str | None = None) -> Incoming:
        """Read and verify one object: `prev` is the name it must follow (COVERED: a base read in place of
        the objects it folds, whose chain is not this reader's to check); `replica` the one its prefix
        is known to belong to, if any."""
        stored = self.remote.read(name)
        report.bytes_received += len(stored)
        if hashlib.sha256(stored).hexdigest()[:16] != parse_name(name)[2]:
            raise RemoteObjectError(name, "its bytes do not match the hash in its name (truncated or damaged)")
        batch = decode(name, self.codec.open(name, stored))
        if batch.seq != seq:
            raise RemoteObjectError(name, f"its header says sequence {batch.seq}, its name {seq} (a replayed object)")
        if batch.base != is_base(name):
            raise RemoteObjectError(name, "its name and its header disagree on whether it is a base object")
        if prev is not COVERED and batch.prev != prev:
            raise RemoteObjectError(name, "it does not follow the previous object of its replica (a replayed or "
                                    "out-of-place object)")
        if batch.replica == self.state.replica and prefix != self.state.remote(self.key, self.codec.encrypted)[0]:
            raise RemoteObjectError(name, "it claims to come from this replica but lies under another prefix")
        if not self.codec.encrypted and batch.replica != prefix:
            raise RemoteObjectError(name, f"it claims replica {batch.replica[:40]!r} but lies under {prefix!r}")
        if replica is not None and batch.replica != replica:
            raise RemoteObjectError(name, f"it claims replica {batch.replica[:40]!r}, but the objects under its "
                                    f"prefix come from {replica!r} (a forged or misplaced object)")
        for r in batch.records:
            if r.get("op") not in ("put", "del", "resolve") or not isinstance(r.get("id"), str) \
                    or not isinstance(r.get("hlc"), str) or not _lineage_ok(r.get("lineage", [])):
                raise RemoteObjectError(name, "a change record in it is not one memfs writes")
            try:
                Stamp.parse(r["hlc"])
            except ValueError:
                raise RemoteObjectError(name, "a change record in it has an unreadable clock stamp") from None
        return Incoming(name, prefix, batch)

    # -- merge ----------------------------------------------------------------------------------------

    def _apply(self, incoming: list[Incoming], report: SyncReport) -> None:
        from .merge import Merger

        records = [r for inc in incoming for r in inc.batch.records]
        report.pulled = len(records)
        if not records:
            return
        with self.store.mutex:
            Merger(self, report).apply(sorted(records, key=lambda r: Stamp.parse(r["hlc"])))
