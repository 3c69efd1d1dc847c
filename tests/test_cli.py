"""Every command through click's CliRunner: exit codes (DESIGN.md §6) and messages."""

import orjson
import pytest
from click.testing import CliRunner

from memfs.cli import cli
from memfs.lock import StoreLock


@pytest.fixture
def memfs(root, monkeypatch):
    """The CLI in this process, owning the store itself (the owner's path is tests/test_owner.py's)."""
    monkeypatch.setenv("MEMFS_DAEMON", "0")
    monkeypatch.setenv("MEMFS_LOCK_WAIT", "0.5")
    runner = CliRunner()

    def run(*args, code=0, input=None):
        result = runner.invoke(cli, ["--root", str(root), *args], input=input)
        assert result.exit_code == code, (result.output, result.stderr if hasattr(result, "stderr") else "")
        return result

    run("init")
    return run


def as_json(result):
    return orjson.loads(result.stdout)


def test_round_trip(memfs, tmp_path):
    added = as_json(memfs("add", "User prefers dark theme", "--tag", "ui", "--tag", "prefs", "--json"))
    mem_id = added["id"]
    assert added["duplicate"] is False and added["tags"] == ["ui", "prefs"]
    notes = tmp_path / "notes.txt"
    notes.write_text("Decision: the catalog stays in SQLite")
    decision = as_json(memfs("add", "--file", str(notes), "--type", "decision", "--json"))
    assert decision["type"] == "decision"

    got = as_json(memfs("get", mem_id, "--json"))
    assert got["content"] == "User prefers dark theme" and got["path"].endswith(".json")
    assert "dark theme" in memfs("get", mem_id).stdout

    listed = as_json(memfs("list", "--tag", "ui", "--since", "2025-01-01", "--json"))
    assert [m["id"] for m in listed["memories"]] == [mem_id] and listed["next_cursor"] is None
    assert as_json(memfs("list", "--type", "decision", "--json"))["memories"][0]["id"] == decision["id"]

    hits = as_json(memfs("search", "what theme does the user like", "-k", "5", "--tag", "ui",
                         "--match", "all", "--mode", "semantic", "--json"))["hits"]
    assert hits[0]["id"] == mem_id and 0 < hits[0]["score"] <= 1

    memfs("update", mem_id, "--content", "User prefers light theme", "--add-tag", "x")
    got = as_json(memfs("get", mem_id, "--json"))
    assert got["content"] == "User prefers light theme" and got["tags"] == ["ui", "prefs", "x"]

    assert as_json(memfs("rm", mem_id, "--json")) == {"removed": [mem_id]}
    memfs("get", mem_id, code=3)


def test_duplicate_add_says_so(memfs):
    first = as_json(memfs("add", "same words", "--json"))
    again = memfs("add", "same words")
    assert first["id"] in again.stdout and "already stored" in again.stdout
    copy = as_json(memfs("add", "same words", "--allow-duplicate", "--json"))
    assert copy["id"] != first["id"] and copy["duplicate"] is False


def test_missing_memory_exits_3_with_hint(memfs):
    result = memfs("get", "nope", code=3)
    assert "no memory with id 'nope'" in result.output and "memfs list" in result.output


def test_usage_errors_exit_2(memfs):
    memfs("add", code=2)
    memfs("search", "x", "--mode", "fuzzy", code=2)
    result = memfs("list", "--since", "yesterday-ish", code=2)
    assert "ISO date" in result.output and "last week" in result.output


def test_reindex_reports_invalid_files_and_exits_1(memfs, root):
    (root / "data" / "memories" / "bad.json").write_text("{not json")
    (root / "data" / "memories" / "good.json").write_text('{"content": "a bare memory"}')
    result = memfs("reindex", code=1)
    assert "bad.json" in result.output and "invalid JSON" in result.output
    report = as_json(memfs("reindex", "--json", code=1))
    assert report["embedded"] == 0 and report["invalid"][0]["path"] == "bad.json"
    (root / "data" / "memories" / "bad.json").unlink()
    assert as_json(memfs("reindex", "--json"))["invalid"] == []


def test_busy_store_exits_4(memfs, root):
    lock = StoreLock(root / "data" / "memfs.lock", url="http://127.0.0.1:3000").acquire()
    try:
        result = memfs("list", code=4)
        assert "in use by pid" in result.output and "127.0.0.1:3000" in result.output
    finally:
        lock.release()
    memfs("list")


def test_uninitialised_root_exits_3(tmp_path):
    result = CliRunner().invoke(cli, ["--root", str(tmp_path / "none"), "list"])
    assert result.exit_code == 3 and "memfs init" in result.output


def test_root_from_environment(root, monkeypatch):
    monkeypatch.setenv("MEMFS_ROOT", str(root))
    runner = CliRunner()
    assert runner.invoke(cli, ["init"]).exit_code == 0
    assert (root / "data" / "memories").is_dir()


def test_stats(memfs):
    memfs("add", "one memory", "--tag", "a")
    s = as_json(memfs("stats", "--json"))
    assert s["memories"] == 1 and s["vectors"] == 1 and s["model"].endswith("all-MiniLM-L6-v2")
    assert s["last_reconcile"].endswith("Z")


def test_every_command_has_help():
    runner = CliRunner()
    for name, command in cli.commands.items():
        result = runner.invoke(cli, [name, "--help"])
        opening = " ".join(command.help.split()[:4])
        assert result.exit_code == 0 and opening in " ".join(result.output.split())
