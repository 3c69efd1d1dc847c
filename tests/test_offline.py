"""Nothing may touch the network: the whole CLI flow runs with non-loopback sockets refused."""

import os
import subprocess
import sys

GUARD = r'''
import socket, sys, runpy, os
attempts = []
def _refuse(address):
    host = address[0] if isinstance(address, tuple) else str(address)
    if host in ("127.0.0.1", "::1", "localhost") or str(host).startswith("127.") or isinstance(address, (str, bytes)):
        return
    attempts.append(host)
    with open(os.environ["ATTEMPTS_FILE"], "a") as f:
        f.write(f"{host}\n")
    raise OSError(f"network blocked by test: {address!r}")
_connect = socket.socket.connect
def connect(self, address):
    _refuse(address)
    return _connect(self, address)
socket.socket.connect = connect
_connect_ex = socket.socket.connect_ex
def connect_ex(self, address):
    _refuse(address)
    return _connect_ex(self, address)
socket.socket.connect_ex = connect_ex
_getaddrinfo = socket.getaddrinfo
def getaddrinfo(host, *a, **k):
    if host not in (None, "localhost") and not str(host).startswith("127.") and host != "::1":
        _refuse((host, 0))
    return _getaddrinfo(host, *a, **k)
socket.getaddrinfo = getaddrinfo
sys.argv = ["memfs"] + sys.argv[1:]
from memfs.cli import main
main()
'''


def test_whole_flow_without_network(tmp_path):
    attempts = tmp_path / "attempts.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(ATTEMPTS_FILE=str(attempts), MEMFS_ROOT=str(tmp_path / "store"))

    def run(*args):
        r = subprocess.run([sys.executable, "-c", GUARD, *args], env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        return r.stdout

    run("init")
    run("add", "User prefers dark theme", "--tag", "ui")
    assert "dark theme" in run("search", "what colour scheme does the user like", "--mode", "hybrid")
    run("reindex")
    assert not attempts.exists(), attempts.read_text()
