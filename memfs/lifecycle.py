"""The owner's lifecycle as a command sees it, without click: whether an owner runs for a store and
how it is doing, stopping it cleanly, an on-demand owner making way for an explicit one, waiting for
the lock to be free, and running an owner in this process with its logs. `memfs.cli_owner` parses the
commands (`status`, `stop`, `watch`, `serve`, `owner`) and prints; `memfs.daemon` runs the owner.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import time

from .errors import StoreBusyError
from .filestore import Layout
from .lock import describe, is_held, read_owner
from .remote import OwnerGoneError, RemoteOperations
from .results import OwnerStatus


def owner_status(layout: Layout) -> tuple[OwnerStatus, bool]:
    """The store's owner as it reports itself, or as its lock record says when its socket does not
    answer; and whether it is unreachable (alive, holding the lock, its socket gone: issue #24, 3)."""
    record = read_owner(layout.lock_file) if is_held(layout.lock_file) else {}
    st = OwnerStatus(False)
    unreachable = False
    if record.get("socket"):
        try:
            with RemoteOperations(socket=record["socket"], ready_wait=0) as remote:
                st = remote.status()
        except OwnerGoneError:
            unreachable = is_held(layout.lock_file)
    if unreachable or (record and not record.get("socket")):
        st = OwnerStatus(True, pid=record.get("pid"), started_by=record.get("started_by"), since=record.get("since"),
                         socket=record.get("socket"))
    return st, unreachable


def stop_owner(layout: Layout, timeout: float) -> dict | None:
    """Ask the owner to finish its work and release the store; wait until it has. Its lock record,
    or None when no owner serves the store."""
    record = read_owner(layout.lock_file)
    if not is_held(layout.lock_file) or not record.get("socket"):
        return None
    try:
        with RemoteOperations(socket=record["socket"], ready_wait=0) as remote:
            remote.stop()
    except OwnerGoneError:
        signal_owner(record)  # its socket is gone (issue #24, item 3): SIGTERM stops it the same way
    deadline = time.monotonic() + timeout
    while is_held(layout.lock_file):
        if time.monotonic() > deadline:
            raise StoreBusyError(f"the owner (pid {record.get('pid')}) has not stopped after {timeout:.0f}s")
        time.sleep(0.05)
    return record


def signal_owner(record: dict) -> None:
    """SIGTERM to the owner named by the lock record, when it runs on this host (a clean stop)."""
    if record.get("pid") and record.get("host") == socket.gethostname():
        try:
            os.kill(int(record["pid"]), signal.SIGTERM)
        except ProcessLookupError:
            pass
        except PermissionError:
            raise StoreBusyError(f"permission denied: the owner (pid {record['pid']}) runs as another user; "
                                 "stop it as that user") from None


def take_over(layout: Layout, started_by: str) -> dict | None:
    """Before an explicit owner starts: an owner started on demand makes way (its lock record is
    returned); another explicit one means this one is a second owner (exit 4)."""
    record = read_owner(layout.lock_file)
    if not is_held(layout.lock_file):
        return None
    if record.get("started_by") not in ("on-demand",) or not record.get("socket"):
        if record.get("socket"):
            raise StoreBusyError(f"the store at {layout.root} is already owned by {describe(record)}; "
                                 f"it serves every command, so `memfs {started_by}` is not needed")
        return None  # a command holding the lock for its own run: wait for it (the lock timeout)
    try:
        with RemoteOperations(socket=record["socket"], ready_wait=0) as remote:
            remote.stop()
    except OwnerGoneError:
        pass
    return record


def lock_free_for_on_demand(layout: Layout, wait: float = 60.0) -> bool:
    """Wait for a command holding the lock for its own run to finish; False when another owner
    serves the store (a racing client started it) or the wait ran out."""
    deadline = time.monotonic() + wait
    while is_held(layout.lock_file):
        if read_owner(layout.lock_file).get("socket") or time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def run_with_logs(layout: Layout, started_by: str, *, console: bool, on_ready, **options) -> str:
    """Run the owner in this process until it stops, logging to data/logs/owner.log (and to stderr
    with `console`); what it left behind, as daemon.run_owner says it."""
    from .daemon import log_to_owner_file, run_owner

    memfs_log = logging.getLogger("memfs")
    stream = None
    if console:
        stream = logging.StreamHandler()
        stream.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        memfs_log.addHandler(stream)
    handler = log_to_owner_file(layout)
    try:
        return run_owner(layout, started_by=started_by, on_ready=on_ready, **options)
    finally:
        memfs_log.removeHandler(handler)
        if stream is not None:
            memfs_log.removeHandler(stream)
