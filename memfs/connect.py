"""How a command reaches a store (DESIGN.md §4): through its owner if one runs, through an owner it
starts on demand when the command needs the model, or by owning the store in its own process.

What comes back is an Operations object; the command never asks which kind. If the owner goes away
in the middle (killed, stopped, exited idle), the next call finds or starts a new one and is retried.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .errors import StoreBusyError
from .filestore import Layout
from .lock import describe, is_held, read_owner
from .remote import OwnerGoneError, RemoteOperations

SOCKET_GRACE = 3.0  # seconds a missing socket may take to come back before a command says so
DEFAULT_IDLE_EXIT = 900.0  # seconds an owner started on demand stays without requests (MEMFS_IDLE_EXIT)

# Repeated when the connection dropped after the request was sent (it may have been applied): only
# calls whose repetition changes nothing. Everything else (backup, import, kv_set, restore, …) is
# not (#19: a retried backup made two archives); its caller sees the OwnerGoneError and decides.
REPEATABLE_AFTER_SEND = frozenset({"get", "list", "search", "stats", "health", "status", "list_backups", "find",
                                   "import_history", "import_verify", "kv_get", "kv_list", "reindex"})


def repeatable(name: str, kwargs: dict) -> bool:
    """May `name(**kwargs)` be sent again though the owner may have applied it once?"""
    # An add of content already stored finds the first memory, unless a duplicate was asked for.
    return name in REPEATABLE_AFTER_SEND or (name == "add" and not kwargs.get("allow_duplicate"))


def connect(where: Layout | Path | str, *, url: str | None = None, token: str | None = None, daemon: bool = True,
            needs_model: bool = False, idle_exit: float = DEFAULT_IDLE_EXIT, wait: float = 60.0,
            create: bool = False, level: bool = True, open_store: bool = True,
            on_local: Callable[[Any], None] | None = None):
    """Operations on the store at `where` (see the module docstring). `on_local(ops)` is called when
    this process ends up owning the store (the CLI sends its log to data/logs/ then). `level=False`:
    if this process owns the store, it does not pick up hand edits on opening (validate reports them);
    `open_store=False`: nor does it open the store before the operation needs it (restore)."""
    if url is not None:
        return RemoteOperations(url=url, token=token)
    layout = Layout.of(where).require(create=create)

    def find():
        return _find_or_start(layout, daemon=daemon and needs_model, idle_exit=idle_exit, wait=wait,
                              level=level, open_store=open_store, on_local=on_local)

    return Client(find, wait)


def _find_or_start(layout: Layout, *, daemon: bool, idle_exit: float, wait: float, level: bool, open_store: bool,
                   on_local):
    from .local import LocalOperations  # imported only when this process may own the store

    deadline = time.monotonic() + wait
    spawned_at: float | None = None
    missing_since: float | None = None
    while True:
        record = read_owner(layout.lock_file)
        if is_held(layout.lock_file):
            sock = _reachable_socket(layout, record.get("socket"))
            if sock:
                return RemoteOperations(socket=sock)
            if record.get("socket"):
                # Trigger: the lock's holder names a socket that is not there (deleted by hand, or a
                # tmp cleaner). Why: the owner is alive; waiting `wait` seconds and blaming "in use"
                # hid that (issue #24, item 3). Outcome: the owner puts it back within a second or
                # two; past SOCKET_GRACE, say exactly what is wrong.
                missing_since = missing_since or time.monotonic()
                if time.monotonic() - missing_since > SOCKET_GRACE:
                    raise unreachable(layout, record)
            # A holder that does not serve (a --no-daemon command, an owner still binding): wait for it.
        elif daemon:
            if spawned_at is None or time.monotonic() - spawned_at > 15:
                spawn_owner(layout, idle_exit)
                spawned_at = time.monotonic()
        else:
            try:
                ops = LocalOperations.open(layout, lock_timeout=0.2, level_on_open=level, open_store=open_store)
            except StoreBusyError:
                pass  # another process took it between the look and the grab: look again
            else:
                if on_local is not None:
                    on_local(ops)
                return ops
        if time.monotonic() >= deadline:
            raise StoreBusyError(f"the store at {layout.root} is in use by {describe(record)}, which does not "
                                 "take requests; wait for it to finish, or stop it, then try again")
        time.sleep(0.05)


def unreachable(layout: Layout, record: dict) -> StoreBusyError:
    """The owner holds the lock but its socket is missing: alive, not absent."""
    return StoreBusyError(
        f"the owner of {layout.root} ({describe(record)}) is alive but unreachable: its socket "
        f"{record.get('socket')} is missing. A running owner makes it again within seconds; if it does "
        f"not, `memfs stop` stops the owner (by its pid), and the next command starts a new one")


def _reachable_socket(layout: Layout, recorded: str | None) -> str | None:
    """The owner's socket as this process sees it. Trigger: the owner runs in a container and the store
    is a volume (docs/deployment.md). Why: the lock file records the container's path
    (/opt/memory-system/data/memfs.sock), not the host's. Outcome: the socket beside the lock file."""
    if not recorded:
        return None
    if os.path.exists(recorded):
        return recorded
    here = layout.data / Path(recorded).name
    return str(here) if Path(recorded).parent.name == "data" and here.exists() else None


def spawn_owner(layout: Layout, idle_exit: float) -> None:
    """Start `memfs owner` detached from this process, logging to data/logs/owner.log."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    with open(layout.logs / "owner.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "memfs", "--root", str(layout.root.resolve()), "owner",
                          "--idle-exit", str(idle_exit)],
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                         close_fds=True, cwd="/")


class Client:
    """Operations through whoever owns the store now; finds (or starts) a new owner if it goes away.

    A request the owner never received (connection refused: an owner handing over, exiting idle, or
    killed) is sent again to whoever owns the store next, for up to `wait` seconds. One whose
    connection dropped after it was sent is repeated only where repeating is harmless (a read; an add
    of the same content finds the first one; see repeatable()).
    """

    def __init__(self, find: Callable[[], Any], wait: float = 60.0):
        self._find = find
        self._wait = wait
        self._ops = find()

    def __getattr__(self, name: str):
        attr = getattr(self._ops, name)
        if not callable(attr) or name == "close":
            return attr

        def call(*args, **kwargs):
            deadline = time.monotonic() + self._wait
            pause = 0.02
            while True:
                try:
                    return getattr(self._ops, name)(*args, **kwargs)
                except OwnerGoneError as e:
                    if (e.sent and not repeatable(name, kwargs)) or time.monotonic() >= deadline:
                        raise
                    self._ops.close()
                    time.sleep(pause)
                    pause = min(0.25, pause * 2)
                    self._ops = self._find()
        return call

    def close(self) -> None:
        self._ops.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
