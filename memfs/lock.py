"""One process at a time owns a data directory (DESIGN.md §4): an exclusive lock on data/memfs.lock.

The lock is an `flock` on the file, so the kernel releases it when the owner dies, however it dies; the
file's content (pid, host, url, since) only says who holds it, for messages. A lock file left behind by a
dead owner is therefore never an obstacle: we take it and say whose it was.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
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
