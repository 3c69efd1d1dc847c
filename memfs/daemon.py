"""Run an owner that serves (DESIGN.md §4): `memfs serve`, `memfs watch`, and the owner a client starts
on demand are this one function with different options.

It takes the lock, listens on the Unix socket in data/ (mode 0600) and on TCP only when asked, runs the
watcher, loads the model in the background once it is ready for requests (so the first semantic query
does not pay for it), and, when started on demand, exits after `idle_exit` seconds with no requests
and no pending work.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import socket
import threading
import time
from pathlib import Path

from .errors import BadRequestError
from .filestore import Layout, apply_store_umask
from .inputs import HEADER_TIMEOUT_SECONDS, MAX_HEADER_BYTES, MIN_TOKEN_CHARS
from .owner import Owner, socket_path

log = logging.getLogger("memfs.daemon")


def bind_unix(path: Path) -> socket.socket:
    """A listening socket at `path` that only this user can connect to (0600 before anyone can)."""
    path.unlink(missing_ok=True)  # a dead owner's; we hold the lock, so no live owner listens there
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(128)
    return sock


def bind_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    return sock


def log_to_owner_file(layout: Layout) -> logging.Handler:
    """The owner's records go to data/logs/owner.log (rotated), whoever started it."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    handler = logging.handlers.RotatingFileHandler(layout.logs / "owner.log", maxBytes=5 << 20, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("memfs").addHandler(handler)
    logging.getLogger("memfs").setLevel(logging.INFO)
    return handler


def run_owner(layout: Layout, *, started_by: str, host: str | None = None, port: int | None = None,
              token: str | None = None, idle_exit: float | None = None, polling: bool = False,
              reconcile_every: float = 300.0, on_ready=None, lock_timeout: float = 2.0,
              extended_port: int | None = None, sync: dict | None = None) -> str:
    """Own and serve the store until SIGTERM/SIGINT, POST /owner/stop, or the idle time runs out.
    `sync`: {"dest", "every", and key options}: sync with that remote continuously (memfs.sync.loop).
    Returns what became of the pending work (Owner.close)."""
    from .local import LocalOperations

    check_exposure(host, token)
    apply_store_umask()
    sock_path = socket_path(layout)
    owner = Owner(layout, started_by=started_by, polling=polling, reconcile_every=reconcile_every,
                  url=f"http://{host}:{port}" if host is not None else None, socket=sock_path, idle_exit=idle_exit)
    # Bind TCP before taking the lock: a port in use must not leave a lock record pointing at nothing.
    tcp = bind_tcp(host, port) if host is not None else None
    extended = bind_tcp(host or "127.0.0.1", extended_port) if extended_port is not None else None
    stop = StopRequest(owner)
    try:
        owner.start(lock_timeout)
    except BaseException:
        for s in (tcp, extended):
            if s is not None:
                s.close()
        raise
    sockets, loop = [s for s in (tcp, extended) if s is not None], None
    warm = _WarmUp(owner.store)  # started once the server listens
    try:
        sockets.insert(0, bind_unix(sock_path))
        ops = LocalOperations(owner)
        app = _owner_app(ops, token, stop, extended)
        server = stop.server = socket_keeping_server(_uvicorn_config(app, on_tcp=len(sockets) > 1), sock_path, sockets)
        server.on_started = warm.start
        loop = _start_alongside(owner, ops, idle_exit=idle_exit, stop=stop, on_ready=on_ready, sync=sync)
        if not stop.asked.is_set():
            server.run(sockets=sockets)
    finally:
        if loop is not None:
            loop.stop()
        for s in sockets:
            s.close()
        sock_path.unlink(missing_ok=True)  # still ours: the lock is released only below
        left = owner.close()
        # Never let the interpreter end under a model still loading: torch's threads then abort the
        # process ("terminate called without an active exception", exit -6 on a stop soon after start).
        if warm.is_alive():  # started (the server listened), and still loading
            warm.join(120)
    return left


class StopRequest:
    """How an owner is asked to stop: SIGTERM, Ctrl-C, POST /owner/stop, the idle time out.

    While the owner waits for the lock, a signal goes to the handler that was there before:
    cli_owner._stop_before_owning ends the wait (Owner.start releases what it took). From the moment
    the lock is ours (Owner.owned) a stop is the orderly one, wherever it lands: recorded, and acted on
    once the store is open and the app has started or not: pending work finished, the lock released.
    Raised in the middle of opening, it closed the store under a watcher that had started but was not
    yet recorded (test_owner_doors, a stop after each step of the start). uvicorn puts this handler
    back after its own and re-raises the signal to it.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, owner: Owner):
        self.owner = owner
        self.server = None  # the uvicorn server to end, once there is one
        self.asked = threading.Event()
        self.before_owning = {sig: signal.getsignal(sig) for sig in self.SIGNALS}
        for sig in self.SIGNALS:
            signal.signal(sig, self)

    def __call__(self, signum: int | None = None, frame=None) -> None:
        if signum is not None and not self.owner.owned and callable(self.before_owning[signum]):
            self.before_owning[signum](signum, frame)
            return
        self.asked.set()
        if self.server is not None:
            self.server.should_exit = True


def _owner_app(ops, token: str | None, stop, extended: socket.socket | None):
    """The owner's API (memfs.http.app), and the extended-memory API on its own port when one is bound."""
    from .http.app import create_app, with_extended_memory_api

    app = create_app(ops, token=token, on_stop=stop)
    if extended is None:
        return app
    return with_extended_memory_api(app, ops, port=extended.getsockname()[1], token=token)


def _uvicorn_config(app, *, on_tcp: bool):
    """On TCP, h11 rather than httptools: httptools has no limit on header size (#15: a 20 MB header
    blocked the event loop ~0.5 s), and the protocol class adds the header-read timeout uvicorn 0.54
    lacks. The Unix socket alone (0600: only this user) keeps uvicorn's defaults."""
    import uvicorn

    hardening = dict(http=header_timeout_protocol(), timeout_keep_alive=HEADER_TIMEOUT_SECONDS,
                     h11_max_incomplete_event_size=MAX_HEADER_BYTES) if on_tcp else {}
    # lifespan "on": the app's lifespan runs /mcp's session manager (memfs.http.mcp).
    return uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=30, **hardening)


def _start_alongside(owner: Owner, ops, *, idle_exit: float | None, stop, on_ready, sync: dict | None):
    """What runs beside the server: the idle watch, `on_ready`, the sync loop (returned)."""
    if idle_exit is not None:
        threading.Thread(target=_idle_watch, args=(owner, idle_exit, stop), name="memfs-idle", daemon=True).start()
    if on_ready is not None:
        on_ready(owner)
    if not sync:
        return None
    from .sync.loop import SyncLoop

    return SyncLoop(ops, **sync).start()


def socket_keeping_server(config, path: Path, sockets: list[socket.socket]):
    """A uvicorn server that puts its Unix socket back when it is deleted or replaced (issue #24, item 3:
    with data/memfs.sock deleted, every client waited 60 s and `memfs stop` could not reach it).
    Checked once a second on uvicorn's tick; the new listener joins `sockets` (closed at exit)."""
    import asyncio

    import uvicorn

    def inode() -> int | None:
        try:
            return os.lstat(path).st_ino
        except OSError:
            return None

    class SocketKeepingServer(uvicorn.Server):
        listening = inode()
        on_started = None  # called once, when the server first listens (run_owner's model warm-up)

        async def startup(self, sockets=None) -> None:
            await super().startup(sockets=sockets)
            if self.started and self.on_started is not None:
                self.on_started()

        async def on_tick(self, counter: int) -> bool:
            if counter % 10 == 5 and self.started and inode() != self.listening:
                await self.listen_again()
            return await super().on_tick(counter)

        async def listen_again(self) -> None:
            try:
                sock = bind_unix(path)
            except OSError as e:
                log.error("the owner's socket %s is gone and could not be made again: %s", path, e)
                return
            cfg = self.config

            def protocol(_loop=None):
                return cfg.http_protocol_class(config=cfg, server_state=self.server_state,
                                               app_state=self.lifespan.state, _loop=_loop)

            self.servers.append(await asyncio.get_running_loop().create_server(protocol, sock=sock,
                                                                                backlog=cfg.backlog))
            sockets.append(sock)
            self.listening = inode()
            log.warning("the owner's socket %s was deleted or replaced; listening on a new one", path)

    return SocketKeepingServer(config)


class _WarmUp(threading.Thread):
    """Loads the model in the background once the server listens (issue #26: the first search from
    cold waited for the app's start and the model's load one after the other). Not earlier: the
    model's imports hold the interpreter while the app's own imports want it, and an owner then took
    3.0 s instead of 2.0 to answer /health (issue 5's goal: under 2 s)."""

    def __init__(self, store):
        super().__init__(name="memfs-warm-up", daemon=True)
        self.store = store

    def run(self) -> None:
        try:
            self.store.warm()
        except Exception:  # a broken model shows on the first real query, with its message; a store closed
            log.exception("could not load the model in the background")  # under it, on a stop, says so too


def _idle_watch(owner: Owner, idle_exit: float, stop) -> None:
    """Stop after `idle_exit` seconds with no request in flight, none received and no pending work."""
    tick = min(1.0, max(0.05, idle_exit / 4))
    while True:
        time.sleep(tick)
        last = getattr(owner, "last_activity", None)
        if last is None or getattr(owner, "in_flight", 0) > 0 or owner.busy():
            continue
        if time.monotonic() - last >= idle_exit:
            log.info("no requests for %.0f s: exiting (started on demand)", idle_exit)
            stop()
            return


def check_exposure(host: str | None, token: str | None) -> None:
    """Refuse a guessable token; warn when the API is open to the network without one (--insecure)."""
    if host is None:
        return  # the Unix socket only: its 0600 mode is the authentication
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise BadRequestError(f"MEMFS_API_TOKEN is {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
                              "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
    if token is None and not is_loopback(host):
        log.warning("serving %s without a token (--insecure): anyone who can reach this port can read, change "
                    "and delete every memory; set MEMFS_API_TOKEN", host)


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def header_timeout_protocol():
    """uvicorn's h11 protocol, closing a connection whose request headers are not all in within
    HEADER_TIMEOUT_SECONDS of connecting or of the previous response (#15: slow-header connections
    were never closed, 0 of 50 after 60 s). uvicorn arms its keep-alive timer only after a response and
    cancels it on any byte; here it is armed on connect too and cancelled only by complete headers."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class HeaderTimeoutH11(H11Protocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if not isinstance(transport.get_extra_info("sockname"), str):  # TCP; a Unix socket's is a path
                self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                                    self.timeout_keep_alive_handler)

        def data_received(self, data: bytes) -> None:
            # No _unset_keepalive_if_required() here: handle_events cancels the timer on a complete request.
            self.conn.receive_data(data)
            self.handle_events()

        def send_400_response(self, msg: str) -> None:
            # A request h11 cannot parse (a malformed Content-Length, headers past the limit while they
            # come) gets JSON like every other refusal (#19: it was text/plain).
            import h11
            import orjson

            body = orjson.dumps({"error": {"code": "bad_request", "message": "malformed HTTP request (a bad "
                                 "request line, header or Content-Length, or headers over "
                                 f"{MAX_HEADER_BYTES} bytes); send a well-formed HTTP/1.1 request"}})
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                       (b"connection", b"close")]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"), h11.Data(data=body),
                          h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return HeaderTimeoutH11
