"""Compaction (`memfs sync compact DEST`, docs/sync.md): a replica replaces its own old objects on a
remote by one base object, then deletes them. No lock: only the replica that wrote them touches them,
and it deletes nothing before the base that covers it is on the remote and reads back verified.

The base is this replica's next object, written once like any batch (encrypted alike), named
`<seq:010d>-<h16>.base.mfs` with `"base": true` in its header: it covers the replica's seqs 1..seq-1.
It holds, per memory, the newest record this replica wrote in them (document, vector and stamp as they
were), whose `lineage` lists the [version, parent] of the older records of that memory it folds away;
whole, the last put before a delete and any older record that is no ancestor of the newest (a version
that lost a conflict), see `fold`; and every resolve record. A reader that held a folded version sees the newest as an edit made on top of it,
never as a concurrent one (memfs.sync.merge); a reader whose next object is gone reads on from the
base (memfs.sync.engine, `read_chain`).

Steps, each a fault-injection point (memfs.sync.steps, tests/test_sync_crash.py):

    compact-made         this replica's objects read back, verified and folded into a base (nothing written)
    compact-uploaded     the base written once under this replica's prefix
    compact-saved        the base read back and verified; this replica's next batch continues after it
    compact-deleted-one  the oldest covered object deleted
    compact-deleted      every covered object deleted

A crash before `compact-saved` leaves one extra valid object: the next sync reads it as an object of
its own it did not know, the next compact adopts it. A crash while deleting leaves a run of covered
objects just before the base, which readers read through or jump over; the next compact deletes them.
"""

from __future__ import annotations

import time

from ..errors import MemfsError
from .engine import SyncEngine
from .objects import Batch, batch_name, encode, is_base, parse_name
from .results import CompactResult
from .steps import crash_point
from .versions import ancestors, parents_of


class CompactionRefused(MemfsError):
    """This replica cannot compact on that remote now; the message says what to run first."""


def fold(records: list[dict], known: dict[tuple[str, str], set]) -> list[dict]:
    """A replica's records, oldest first, as a base holds them: per memory the newest put or delete,
    whose `lineage` carries the [version, parent] of the older ones it folds (and the lineage those
    carried); every distinct resolve record. `known`: the edges this replica has seen (its sync state;
    the records' own are added to it).

    Only a run of puts (or of deletes) on the way to the newest folds, into its last record, which is
    kept: a reader holding a concurrent version decides against the run's last as it would have against
    each of them in turn (stamps only grow along it), but a put beats a delete whatever the stamps, so
    a put followed by a delete must both reach it. An older record that is no ancestor of the newest
    (as far as `known`, the records and their lineage show), such as a version that lost a conflict
    before this replica edited the winner, is kept whole: a reader that never saw it would never find
    that conflict."""
    parents = known
    for key, ps in parents_of(records).items():
        parents.setdefault(key, set()).update(ps)
    history: dict[str, list[dict]] = {}
    out: dict[tuple, dict] = {}
    for r in records:
        if r["op"] == "resolve":
            out.setdefault(("resolve", r["id"], r.get("loser")), r)
        else:
            history.setdefault(r["id"], []).append(r)
    for mem_id, recs in history.items():
        newest = recs[-1]
        older = ancestors(parents, mem_id, newest["v"])
        for r in recs[:-1]:
            if r["v"] not in older and r["v"] != newest["v"]:
                out[(mem_id, r["v"])] = r
        chain = [r for r in recs[:-1] if r["v"] in older] + [newest]
        lineage: dict[str, str | None] = {}
        for r, after in zip(chain, chain[1:] + [None]):
            lineage.update(dict(r.get("lineage", ())))
            if after is not None and after["op"] == r["op"]:  # folds into the last of its run
                lineage[r["v"]] = r.get("parent")
                continue
            lineage.pop(r["v"], None)
            rec = {k: val for k, val in r.items() if k != "lineage"}
            out[(mem_id, r["v"])] = {**rec, "lineage": [[v, p] for v, p in lineage.items()]} if lineage else rec
            lineage = {}
    return list(out.values())


class Compactor:
    def __init__(self, engine: SyncEngine):
        self.engine = engine
        self.state = engine.state
        self.remote = engine.remote
        self.key = engine.key

    def run(self, *, dry_run: bool = False) -> CompactResult:
        started = time.monotonic()
        e = self.engine
        report = CompactResult(self.remote.where, self.state.replica, dry_run)
        listing = self.sizes = self.remote.list("")
        e.check_marker(listing, dry_run)
        prefix, next_seq, last_name = self.state.remote(self.key, e.codec.encrypted)
        e.open_keys(listing, prefix, dry_run)
        if self.state.queued(self.key):
            raise CompactionRefused(f"a batch of this replica's changes waits to be uploaded to {self.remote.where}; "
                                    "run `memfs sync DEST` first, then compact")
        own = {p[1]: name for name in listing if (p := parse_name(name)) and p[0] == prefix}
        report.objects_before, report.bytes_before = len(own), sum(listing[n] for n in own.values())
        report.bytes_after = report.bytes_before
        latest = self._adopt(own, prefix, next_seq, last_name, report)
        start = max((s for s in own if s <= latest and is_base(own[s])), default=1)
        if start == latest:  # one object, or the newest is already a base: only the deletions may be left
            self._delete(own, latest, report)
        elif latest:
            self._compact(own, prefix, start, latest, report)
        report.seconds = time.monotonic() - started
        return report

    def _adopt(self, own: dict[int, str], prefix: str, next_seq: int, last_name: str | None, report) -> int:
        """The seq of this replica's newest object.

        Trigger: the remote holds one object more than this replica's state knows, a base. Why: a
        compaction stopped after uploading it and before saving that. Outcome: verified (it must follow
        the newest object the state knows), the state continues after it."""
        latest = next_seq - 1
        ahead = sorted(s for s in own if s > latest)
        if ahead == [next_seq] and is_base(own[next_seq]):
            self.engine.read_object(own[next_seq], prefix, next_seq, last_name, report, self.state.replica)
            if not report.dry_run:
                self.state.pushed(self.key, next_seq, own[next_seq])
            return next_seq
        if ahead:
            raise CompactionRefused(f"the remote {self.remote.where} holds objects of this replica newer than its "
                                    "state knows (a restored store?); run `memfs sync DEST` first, then compact")
        if latest and latest not in own:
            raise CompactionRefused(f"this replica's newest object {last_name} is not on the remote "
                                    f"{self.remote.where} any more (removed, or the remote was reset); see "
                                    "docs/sync.md, Recovery")
        return latest

    def _compact(self, own: dict[int, str], prefix: str, start: int, latest: int, report) -> None:
        """Fold objects start..latest (start: 1, or the newest base, which covers everything before it)."""
        e = self.engine
        chain = e.read_chain(prefix, {s: n for s, n in own.items() if start <= s <= latest}, 0, None,
                             self.state.replica, report)
        seq = latest + 1
        records = [r for inc in chain for r in inc.batch.records]
        known = self.state.edges(sorted({r["id"] for r in records}))
        base = Batch(self.state.replica, seq, own[latest], fold(records, known), base=True)
        data = e.codec.seal(encode(base))
        name = batch_name(prefix, seq, data, base=True)
        report.base = name
        crash_point("compact-made")
        report.bytes_after += len(data)
        if not report.dry_run:
            self.remote.write_once(name, data)
            crash_point("compact-uploaded")
            e.read_object(name, prefix, seq, own[latest], report, self.state.replica)  # as a reader will read it
            self.state.pushed(self.key, seq, name)
            crash_point("compact-saved")
        own[seq] = name
        self._delete(own, seq, report)

    def _delete(self, own: dict[int, str], base: int, report) -> None:
        """Every object of this replica's before its base, oldest first (what is left is always a run
        just before the base, which a reader reads through or jumps over)."""
        for i, seq in enumerate(sorted(s for s in own if s < base)):
            report.objects_removed += 1
            report.bytes_after -= self.sizes.get(own[seq], 0)
            if not report.dry_run:
                self.remote.delete(own[seq])
                if i == 0:
                    crash_point("compact-deleted-one")
        if not report.dry_run:
            crash_point("compact-deleted")
