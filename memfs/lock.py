"""The store's two locks.

StoreLock: one process at a time owns a data directory (DESIGN.md §4): an exclusive lock on
data/memfs.lock. The lock is an `flock` on the file, so the kernel releases it when the owner dies,
however it dies; the file's content (pid, host, url, since) only says who holds it, for messages. A
lock file left behind by a dead owner is therefore never an obstacle: we take it and say whose it was.

StoreMutex: inside that process, the state lock every catalog or Chroma change takes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path

from .errors import StoreBusyError

log = logging.getLogger("memfs.lock")


def read_owner(path: Path) -> dict:
    """What the lock file says about its holder ({} if nothing readable)."""
    try:
        data = json.loads(path.read_text() or "{}")
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def describe(owner: dict) -> str:
    if not owner:
        return "another process"
    how = f" (memfs {owner['started_by']})" if owner.get("started_by") else ""
    where = f" serving {owner['url']}" if owner.get("url") else ""
    return f"pid {owner.get('pid')} on {owner.get('host')}{how}{where} since {owner.get('since')}"


def is_held(path: Path) -> bool:
    """Does a live process hold the lock? (Asked without taking it for longer than the question.)"""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except PermissionError:
        from .errors import permission_denied

        raise permission_denied(path.parent, f"the store at {path.parent.parent} belongs to {{uid}} "
                                             "(its data/ is private)") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


class StoreLock:
    def __init__(self, path: Path, url: str | None = None, **record):
        self.path = path
        self.url = url
        self.record = record  # more for the lock file: how the owner was started, its socket
        self._fd: int | None = None
        self.recovered_from: dict | None = None  # set when a dead owner's lock file was taken over

    def acquire(self, timeout: float = 0.0) -> "StoreLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise StoreBusyError(
                        f"the store at {self.path.parent.parent} is in use by {describe(read_owner(self.path))}; "
                        "wait for it to finish, or stop it, then try again") from None
                time.sleep(0.05)
        previous = read_owner(self.path)
        if previous.get("pid") and previous.get("pid") != os.getpid():
            # Trigger: a lock file names an owner, yet we got the flock. Why: the owner died without
            # cleaning up (kill -9, power loss). Outcome: take over, and say so.
            self.recovered_from = previous
            log.warning("took over the lock left by %s, which is no longer running", describe(previous))
        record = {"pid": os.getpid(), "host": socket.gethostname(), "url": self.url,
                  "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **self.record}
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(record).encode(), 0)
        except OSError as e:
            # Trigger: a full disk. Why: the record only names the owner; the flock is the lock.
            # Outcome: hold the lock anyway, so reads still work and writes fail with a clear message.
            log.warning("could not record the lock owner in %s: %s", self.path, e.strerror)
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)  # an empty file says nobody holds it
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


class StoreMutex:
    """The store's state lock: a re-entrant lock that knows how deep its owner holds it.

    Searches, lists and every catalog or Chroma change take it; backup and validate hold it to keep
    writes out. The model's slow encoding never runs under it (issue #14, finding 4: a 5.5 MB file
    made every search wait 7 s): a writer steps out with `released()` while it waits for vectors, but
    only when it is the outermost holder. A caller that holds the lock around a write (a backup's
    reconcile) keeps it, so what it wanted excluded stays excluded.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not self._lock.acquire(blocking, timeout):
            return False
        self._owner = threading.get_ident()
        self._depth += 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._owner = None
        self._lock.release()

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()

    def held(self) -> bool:
        return self._owner == threading.get_ident()

    @contextlib.contextmanager
    def released(self):
        """Let others in for the duration, if this thread holds the lock exactly once."""
        if not (self.held() and self._depth == 1):
            yield
            return
        self.release()
        try:
            yield
        finally:
            self.acquire()
