"""`memfs serve --sync DEST --sync-every 30s` (and `watch`): sync inside the owner, continuously.

A daemon thread calls the same `sync` operation every interval. A failed sync is logged and kept as
the remote's last error (`memfs sync status`); the next interval tries again. Stopping waits for a
sync in progress to finish its current step only as far as the owner's shutdown allows: every step
is crash-safe (memfs.sync.engine), so an interrupted one is completed by the next.
"""

from __future__ import annotations

import logging
import re
import threading

log = logging.getLogger("memfs.sync")


def parse_interval(text: str) -> float:
    """'30s', '5m', '1h' or a number of seconds -> seconds (ValueError for anything else)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", str(text))
    if not m:
        raise ValueError(f"{text!r} is not an interval; write e.g. 30s, 5m or 1h")
    seconds = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if seconds < 1:
        raise ValueError("the sync interval must be at least 1 second")
    return seconds


class SyncLoop:
    def __init__(self, ops, dest: str, every: float, **keys):
        self.ops, self.dest, self.every, self.keys = ops, dest, every, keys
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memfs-sync", daemon=True)

    def start(self) -> "SyncLoop":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            if getattr(self.ops.owner, "ready", True):
                try:
                    out = self.ops.sync(self.dest, **self.keys)
                    if out.pulled or out.pushed or out.conflicts:
                        log.info("synced with %s: pushed %d, pulled %d, %d new conflict(s)", self.dest, out.pushed,
                                 out.pulled, out.conflicts)
                except Exception as e:  # kept in sync status; tried again next interval
                    log.warning("sync with %s failed: %s", self.dest, e)
            self._stop.wait(self.every)
