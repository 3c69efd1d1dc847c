"""Issue #20: sync through every door. The `memfs sync`/`conflicts` commands go through a real
`memfs serve` owner (its Unix socket); exit codes are cron-safe (0 synced, 1 conflicts waiting,
3 refused); conflict counts show in stats, validate, /health (and so MCP memory_health, which returns
/health's index). Replica a is in this process with the real model; the owner receives a's vectors
and embeds nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from conftest import run_memfs
from memfs.lock import read_owner
from sync_helpers import replica
from test_server import Server, call


def test_sync_and_conflicts_through_the_owner_with_cron_safe_exit_codes(tmp_path):
    remote = tmp_path / "remote"
    a = replica(tmp_path, "a")
    b_root = tmp_path / "b"
    run_memfs("--root", str(b_root), "init")
    assert (b_root / "data" / "sync" / "replica.json").exists(), "init makes the replica id"
    server = Server(b_root)
    try:
        env = {"MEMFS_ROOT": str(b_root)}
        mem_id = a.add("The release checklist is pinned in the #ops channel").memory.id
        a.sync(str(remote))
        r = run_memfs("sync", str(remote), "--dry-run", "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert orjson.loads(r.stdout)["would_pull"] == 1 and not list((b_root / "data" / "memories").rglob("*.json"))
        r = run_memfs("sync", str(remote), "--json", env=env)
        assert r.returncode == 0, r.stderr
        out = orjson.loads(r.stdout)
        assert out["applied"] == 1 and out["embedded"] == 0 and out["vectors_reused"] == 1
        assert read_owner(b_root / "data" / "memfs.lock")["pid"] == server.proc.pid  # the owner did it
        # A concurrent edit: exit 1 while the conflict waits; it shows in every report.
        a.update(mem_id, content="The release checklist moved to the wiki")
        r = run_memfs("update", mem_id, "--add-tag", "release", env=env)  # a tags-only edit: no model needed
        assert r.returncode == 0, r.stderr
        a.sync(str(remote))
        r = run_memfs("sync", str(remote), env=env)
        assert r.returncode == 1 and "conflicts list" in r.stderr, (r.returncode, r.stderr)
        r = run_memfs("conflicts", "list", "--json", env=env)
        [conflict] = orjson.loads(r.stdout)
        assert orjson.loads(run_memfs("stats", "--json", env=env).stdout)["conflicts"] == 1
        r = subprocess.run([sys.executable, str(Path(__file__).parent.parent / "manage_data.py"), "validate", "--json"],
                           env={**os.environ, **env}, capture_output=True, text=True)
        assert r.returncode == 1 and any(p["check"] == "conflict" for p in orjson.loads(r.stdout)["problems"])
        status, health = call(server.url + "/health")
        assert status == 200
        r = run_memfs("sync", "status", "--json", env=env)
        st = orjson.loads(r.stdout)
        assert st["conflicts"] == 1 and st["remotes"][0]["peers"][0]["replica"] == a.sync_status().replica
        r = run_memfs("conflicts", "show", conflict["conflict"], env=env)
        assert "--- winner" in r.stdout and "--- loser" in r.stdout
        r = run_memfs("conflicts", "resolve", conflict["conflict"], "--keep", "winner", env=env)
        assert r.returncode == 0, r.stderr
        r = run_memfs("sync", str(remote), env=env)
        assert r.returncode == 0, r.stderr
        a.sync(str(remote))
        assert a.conflicts() == [] and a.stats().conflicts == 0
        # A refused remote: exit 3, and the message names the object.
        (remote / "replicas" / "stray.bin").write_bytes(b"junk")
        r = run_memfs("sync", str(remote), env=env)
        assert r.returncode == 3 and "replicas/stray.bin" in r.stderr
    finally:
        a.close()
        server.stop()


def test_conflict_counts_show_in_stats_validate_and_health(tmp_path):
    from sync_helpers import fake_replica

    remote = str(tmp_path / "remote")
    a, b = fake_replica(tmp_path, "a"), fake_replica(tmp_path, "b")
    try:
        mem_id = a.add("shared").memory.id
        a.sync(remote), b.sync(remote)
        a.update(mem_id, content="edited on a"), b.update(mem_id, content="edited on b")
        a.sync(remote), b.sync(remote), a.sync(remote)
        for o in (a, b):
            assert o.stats().conflicts == 1
            assert o.health().index["sync_conflicts"] == 1
            v = o.validate()
            assert not v.ok and [p.check for p in v.problems] == ["conflict"]
    finally:
        a.close(), b.close()


def test_serve_syncs_continuously_inside_the_owner(tmp_path):
    from test_server import wait_until

    remote = tmp_path / "remote"
    a = replica(tmp_path, "a")
    b_root = tmp_path / "b"
    run_memfs("--root", str(b_root), "init")
    server = Server(b_root, args=("--sync", str(remote), "--sync-every", "1s"))
    try:
        env = {"MEMFS_ROOT": str(b_root)}
        mem_id = a.add("The on-call rota is in the shared calendar").memory.id
        a.sync(str(remote))

        def b_has_it() -> bool:
            r = run_memfs("get", mem_id, "--json", env=env)
            return r.returncode == 0

        wait_until(b_has_it, timeout=60, what="the owner's sync loop to pull the memory")
        r = run_memfs("rm", mem_id, env=env)
        assert r.returncode == 0, r.stderr

        def a_lost_it() -> bool:
            a.sync(str(remote))
            return mem_id not in {m.memory.id for m in a.list(limit=10).memories}

        wait_until(a_lost_it, timeout=60, what="the owner's sync loop to push the delete")
        st = orjson.loads(run_memfs("sync", "status", "--json", env=env).stdout)
        assert st["remotes"][0]["last_error"] is None and st["remotes"][0]["last_push"]
    finally:
        a.close()
        server.stop()


def test_compact_goes_through_the_owner_like_sync(tmp_path):
    """`memfs sync compact` is one operation: the command reaches a running owner's POST /sync/compact."""
    from sync_helpers import fake_replica

    remote = tmp_path / "remote"
    b_root = tmp_path / "b"
    run_memfs("--root", str(b_root), "init")
    server = Server(b_root)
    try:
        env = {"MEMFS_ROOT": str(b_root)}
        for text in ("The spare key is with the neighbour at number 12", "The boiler is serviced in October"):
            assert run_memfs("add", text, env=env).returncode == 0
            r = run_memfs("sync", str(remote), env=env)
            assert r.returncode == 0, r.stderr
        r = run_memfs("sync", "compact", str(remote), "--json", env=env)
        assert r.returncode == 0, r.stderr
        out = orjson.loads(r.stdout)
        assert out["objects_removed"] == 2 and out["base"].endswith(".base.mfs")
        assert read_owner(b_root / "data" / "memfs.lock")["pid"] == server.proc.pid  # the owner did it
        assert [p.name for p in remote.rglob("*.mfs")] == [out["base"].rsplit("/", 1)[1]]
        fresh = fake_replica(tmp_path, "fresh")
        try:
            fresh.sync(str(remote))
            assert len(fresh.list(limit=10).memories) == 2
        finally:
            fresh.close()
    finally:
        server.stop()
