"""Issue #24, items 3, 4 and 14: reaching the owner when its socket is deleted, from another user, and
the paths in its error messages. Real `memfs watch` processes, real signals, a real second uid."""

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from memfs.errors import relative_to_root
from memfs.lock import is_held
from test_owner import owner_record, run, start_watch
from test_watcher import wait_until

NOBODY = 65534


def as_nobody(root: Path, *args, env=None) -> subprocess.CompletedProcess:
    """A memfs command as uid 65534. It keeps CAP_DAC_READ_SEARCH only so it can run the interpreter
    (which lives under /root): that capability reads and traverses, it never grants the write
    permission connecting to a socket needs."""
    cmd = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=+dac_read_search",
           "--ambient-caps=+dac_read_search", sys.executable, "-m", "memfs", "--root", str(root), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HOME": "/tmp", **(env or {})})


def stop(watch) -> None:
    watch.send_signal(signal.SIGTERM)
    watch.wait(120)


# -- item 3: a deleted socket -------------------------------------------------------------------------


def test_a_deleted_socket_is_made_again_and_clients_say_alive_but_unreachable(root):
    assert run(root, "init").returncode == 0
    watch = start_watch(root)
    try:
        sock = Path(owner_record(root)["socket"])
        # While the owner cannot put it back (stopped), clients tell "alive but unreachable" from
        # "no owner", by the lock record, within seconds rather than after 60 s.
        os.kill(watch.pid, signal.SIGSTOP)
        try:
            sock.unlink()
            st = run(root, "status")
            assert st.returncode == 0 and f"pid {watch.pid}" in st.stdout and "unreachable" in st.stdout, st.stdout
            assert json.loads(run(root, "status", "--json").stdout)["unreachable"] is True
            started = time.monotonic()
            r = run(root, "list")
            assert r.returncode == 4 and "alive but unreachable" in r.stderr and str(sock) in r.stderr, r.stderr
            assert time.monotonic() - started < 30
        finally:
            os.kill(watch.pid, signal.SIGCONT)
        # The owner notices and listens again.
        wait_until(lambda: sock.exists() and stat.S_ISSOCK(sock.stat().st_mode), timeout=30, what="socket back")
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600
        r = run(root, "add", "after the socket came back", "--json")
        assert r.returncode == 0, r.stderr
        assert owner_record(root)["pid"] == watch.pid
        # Deleted again and never put back (the owner stopped): `memfs stop` still stops it, by its pid.
        os.kill(watch.pid, signal.SIGSTOP)
        sock.unlink()
        os.kill(watch.pid, signal.SIGCONT)
        r = run(root, "stop")
        assert r.returncode == 0 and f"stopped the owner (pid {watch.pid})" in r.stdout, r.stdout + r.stderr
        assert watch.wait(60) == 0 and not is_held(root / "data" / "memfs.lock")
    finally:
        if watch.poll() is None:
            os.kill(watch.pid, signal.SIGCONT)
            stop(watch)


# -- item 4: another user ---------------------------------------------------------------------------


@pytest.fixture
def shared_root():
    """A store under a directory every user may traverse (pytest's tmp_path is root's 0700)."""
    base = Path(tempfile.mkdtemp(prefix="memfs-doors-", dir="/tmp"))
    base.chmod(0o755)
    yield base / "store"
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv for a 2nd uid")
def test_another_user_is_told_permission_denied_and_the_owners_uid(shared_root):
    root = shared_root
    assert run(root, "init", env={"MEMFS_UMASK": "022"}).returncode == 0  # a store shared on purpose
    watch = start_watch(root)
    try:
        started = time.monotonic()
        for args in (["list"], ["search", "anything"], ["stop"]):
            r = as_nobody(root, *args)
            assert r.returncode == 3, (args, r.returncode, r.stderr)
            assert "permission denied: the store's owner runs as uid 0" in r.stderr, (args, r.stderr)
        assert time.monotonic() - started < 60  # no 11 s of retries per command
        assert is_held(root / "data" / "memfs.lock")  # nobody stopped it
    finally:
        stop(watch)


def test_the_stores_files_are_private_under_umask_022(shared_root):
    root = shared_root
    old = os.umask(0o022)
    try:
        assert run(root, "init").returncode == 0
        r = run(root, "--no-daemon", "add", "a private thought about the harbour")
        assert r.returncode == 0, r.stderr
    finally:
        os.umask(old)
    data = root / "data"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "backups").stat().st_mode) == 0o700
    files = [p for p in data.rglob("*") if p.is_file()]
    assert any(p.suffix == ".json" for p in files) and any(p.name == "catalog.sqlite" for p in files)
    loose = {str(p.relative_to(root)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
             if stat.S_IMODE(p.stat().st_mode) & 0o077}
    assert loose == {}
    dirs = {str(p.relative_to(root)) for p in data.rglob("*") if p.is_dir() and stat.S_IMODE(p.stat().st_mode) & 0o077}
    assert dirs == set()


# -- item 14: paths in the owner's messages ---------------------------------------------------------


def test_owner_messages_take_the_root_off_paths_only(tmp_path):
    """With `--root ow`, "shows" came back as "sh.s" through the owner."""
    assert subprocess.run([sys.executable, "-m", "memfs", "--root", "ow", "init"], cwd=tmp_path).returncode == 0
    watch = subprocess.Popen([sys.executable, "-m", "memfs", "--root", "ow", "watch"], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        root = tmp_path / "ow"
        wait_until(lambda: owner_record(root).get("started_by") == "watch", timeout=120, what="watch")
        r = subprocess.run([sys.executable, "-m", "memfs", "--root", "ow", "get", "nosuchid"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 3, r.stderr
        assert "`memfs list` shows the ids" in r.stderr and "sh.s" not in r.stderr, r.stderr
        assert owner_record(root)["pid"] == watch.pid  # it went through the owner
    finally:
        stop(watch)


def test_relative_to_root_touches_whole_paths_only():
    roots = ["ow", "/srv/ow"]
    assert relative_to_root("`memfs list` shows the ids; ow wow owl", roots) == "`memfs list` shows the ids; ow wow owl"
    assert relative_to_root("ow/data/memories/a.json: invalid", roots) == "data/memories/a.json: invalid"
    assert relative_to_root("/srv/ow/data/x.json is gone; the store at /srv/ow", roots) == \
        "data/x.json is gone; the store at ."
    assert relative_to_root("'/srv/owl/x' and /srv/ow2", roots) == "'/srv/owl/x' and /srv/ow2"


def test_a_stop_while_watch_still_waits_for_the_store_ends_it_cleanly(root):
    """The torture test's watch died by SIGTERM (-15) when the stop came before it owned the store:
    the handlers were installed only once it served. A process holds the lock; watch waits for it;
    SIGTERM ends the wait with exit 0 and a message, and the holder's lock is untouched."""
    assert run(root, "init").returncode == 0
    code = ("import sys, time; from memfs.lock import StoreLock; from pathlib import Path;"
            "StoreLock(Path(sys.argv[1])).acquire(); print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(root / "data" / "memfs.lock")], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        watch = subprocess.Popen([sys.executable, "-m", "memfs", "--root", str(root), "watch"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(3)  # started, waiting for the lock
        assert watch.poll() is None
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(60) == 0
        assert "stopped before it owned the store" in watch.stderr.read()
        assert is_held(root / "data" / "memfs.lock")  # still the holder's
    finally:
        holder.kill()
        holder.wait()


def test_a_stop_during_watchs_startup_reconcile_releases_the_lock_and_logs_it(root):
    """A SIGTERM after watch took the lock but before it served (its startup reconcile) must end with
    the lock released and the release in owner.log, so the owners' intervals in the log never overlap
    (the torture test saw an owner that 'ran until inf')."""
    assert run(root, "init").returncode == 0
    memories = root / "data" / "memories"
    for i in range(400):  # enough for the startup reconcile to take a moment
        (memories / f"m{i}.json").write_text(json.dumps({"content": f"startup reconcile filler number {i}"}))
    watch = subprocess.Popen([sys.executable, "-m", "memfs", "--root", str(root), "watch"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = root / "data" / "logs" / "owner.log"
    wait_until(lambda: log.exists() and f"owner pid {watch.pid} took the lock" in log.read_text(), timeout=60,
               what="watch to take the lock")
    watch.send_signal(signal.SIGTERM)
    code, errors = watch.wait(120), watch.stderr.read()
    tracebacks = root / "data" / "logs" / "memfs.log"
    assert code == 0, (errors, tracebacks.read_text() if tracebacks.exists() else "no memfs.log")
    assert f"owner pid {watch.pid} released the lock" in log.read_text()
    assert not is_held(root / "data" / "memfs.lock")


# Each step of an owner's start, and a stop that lands right after it: `memfs watch` runs with the named
# function wrapped to send the process SIGTERM as it returns (the handler runs before the next line).
# Before the owner owns the store the stop ends the start; from then it is the orderly stop.
_STOP_AFTER = {
    "the lock taken": ("memfs.lock", "StoreLock", "acquire"),
    "an interrupted restore looked for": ("memfs.owner", None, "finish_interrupted_restore"),
    "the store opened": ("memfs.store", "MemoryStore", "open"),
    "the watcher started": ("memfs.watcher", "Watcher", "start"),
    "the owner started": ("memfs.owner", "Owner", "start"),
    "the app built": ("memfs.daemon", None, "_owner_app"),
    "the server about to run": ("memfs.daemon", None, "_start_alongside"),
    "the server listening, the model's warm-up started": ("memfs.daemon", "_WarmUp", "start"),
}
_STOPPING_WATCH = """
import functools, importlib, os, signal, sys
module, cls, name, root = sys.argv[1:5]
holder = importlib.import_module(module)
holder = getattr(holder, cls) if cls != "-" else holder
original = holder.__dict__.get(name) or getattr(holder, name)  # inherited: Thread.start
function = original.__func__ if isinstance(original, classmethod) else original

@functools.wraps(function)
def stopping(*args, **kwargs):
    result = function(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    return result

setattr(holder, name, classmethod(stopping) if isinstance(original, classmethod) else stopping)
from memfs.cli import main
sys.argv = ["memfs", "--root", root, "watch"]
main()
"""


@pytest.mark.parametrize("step", list(_STOP_AFTER))
def test_a_stop_right_after_each_step_of_an_owners_start_ends_it_cleanly(root, step):
    """Exit 0, the lock released and the release logged, no thread left keeping the process alive, and
    every memory there for the next owner."""
    assert run(root, "init").returncode == 0
    for i in range(50):
        (root / "data" / "memories" / f"m{i}.json").write_text(json.dumps({"content": f"memory number {i}"}))
    module, cls, name = _STOP_AFTER[step]
    watch = subprocess.run([sys.executable, "-c", _STOPPING_WATCH, module, cls or "-", name, str(root)],
                           capture_output=True, text=True, timeout=180)
    tracebacks = root / "data" / "logs" / "memfs.log"
    assert watch.returncode == 0, (watch.stderr, tracebacks.read_text() if tracebacks.exists() else "")
    assert "Traceback" not in watch.stderr, watch.stderr
    log = (root / "data" / "logs" / "owner.log").read_text()
    # Every lock taken is released in the log (a stop between the lock's return and the line that logs
    # it leaves the release to the process's exit, and neither is logged).
    assert log.count("took the lock") == log.count("released the lock") <= 1, log
    assert not is_held(root / "data" / "memfs.lock")
    listed = run(root, "list", "--json", "--limit", "100")
    assert listed.returncode == 0 and len(json.loads(listed.stdout)["memories"]) == 50, listed
