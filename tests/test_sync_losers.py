"""Issue #20: a local change that loses a conflict before it was ever sent still reaches every replica's
inbox. A delete made here loses in the sync that brings a concurrent edit (an edit beats a delete), and
was never pushed: only this replica's inbox held it (found by test_sync_compact's random histories).
An edit cannot lose that way: it is stamped after every stamp the sync brought. Plumbing: the FAKE
embedder."""

from __future__ import annotations

import pytest

from sync_helpers import conflict_ids, contents, fake_replica, random_world


def _three(tmp_path):
    return [fake_replica(tmp_path, n) for n in ("a", "b", "c")]


def _settle(replicas, remote):
    for _ in range(2):
        for o in replicas:
            o.sync(remote)


def test_a_delete_that_loses_where_it_was_made_is_in_every_inbox(tmp_path):
    a, b, c = reps = _three(tmp_path)
    remote = str(tmp_path / "remote")
    try:
        mem_id = a.add("The office plants are watered on Fridays").memory.id
        a.sync(remote), c.sync(remote)
        c.update(mem_id, content="The office plants are watered on Fridays and Tuesdays")
        c.sync(remote)
        a.remove(mem_id)  # concurrent with c's edit, and a has not seen it yet
        a.sync(remote)  # the edit arrives and wins here: a's delete loses before it was ever sent
        assert len(conflict_ids(a)) == 1
        _settle(reps, remote)
        inboxes = [conflict_ids(o) for o in reps]
        assert inboxes[0] == inboxes[1] == inboxes[2] and len(inboxes[0]) == 1
        assert all(o.conflict(next(iter(inboxes[0])))["loser"]["deleted"] for o in reps)
        assert contents(a) == contents(b) == contents(c)
    finally:
        for o in reps:
            o.close()


def test_that_delete_resolved_on_another_replica_is_resolved_everywhere(tmp_path):
    a, b, c = reps = _three(tmp_path)
    remote = str(tmp_path / "remote")
    try:
        mem_id = a.add("Visitors sign in at the front desk").memory.id
        a.sync(remote), c.sync(remote)
        c.update(mem_id, content="Visitors sign in at the front desk and wear a badge")
        c.sync(remote)
        a.remove(mem_id)
        a.sync(remote)  # a's delete loses here, before it was sent
        _settle(reps, remote)
        [cid] = conflict_ids(b)
        b.resolve_conflict(cid, keep="loser")  # b never held the delete: it knows it from a's batch
        _settle(reps, remote)
        assert [o.conflicts() for o in reps] == [[], [], []]
        assert all(mem_id not in contents(o) for o in reps)
    finally:
        for o in reps:
            o.close()


@pytest.mark.parametrize("seed,steps", [(7, 12), (7, 20), (41, 60), (115, 90), (119, 90)])
def test_random_histories_leave_the_same_inbox_on_every_replica(tmp_path, seed, steps):
    """Random adds, edits, deletes and syncs on three replicas, then syncs to a fixed point: every
    replica, and a fresh one, holds the same memories and the same losers. These seeds each made
    inboxes differ before (a delete that lost before it was sent; a delete stamped during a sync and
    never sent; two deletes of one memory, one of which an edit had beaten elsewhere)."""
    import random

    rng = random.Random(seed)
    kinds = ["add"] * 3 + ["edit"] * 5 + ["delete"] + ["sync"] * 5
    plan = [(rng.choice(kinds), rng.choice("abc"), rng.randrange(1000)) for _ in range(steps)]
    ends = random_world(tmp_path, plan, compact=False)
    assert len({(tuple(memories), tuple(losers)) for memories, losers in ends.values()}) == 1, ends
