"""The steps of the sync transaction (memfs.sync.engine) and of a compaction (memfs.sync.compact), each a
fault-injection point: tests/test_sync_crash.py sets `crash_at` in a child process and it exits there
at once, as a kill -9 would."""

from __future__ import annotations

import os

crash_at: str | None = None  # set by tests/test_sync_crash.py in a child process
CRASH_EXIT = 86
STEPS = ("fetched", "applied-one", "applied", "cursors", "batch-written", "collected", "uploaded", "unqueued",
         "pushed")
COMPACT_STEPS = ("compact-made", "compact-uploaded", "compact-saved", "compact-deleted-one", "compact-deleted")


def crash_point(name: str) -> None:
    # Trigger: a test names a step. Why: prove a kill -9 there loses nothing. Outcome: exit at once.
    if crash_at == name:
        os._exit(CRASH_EXIT)
