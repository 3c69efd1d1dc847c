"""What `memfs` and `manage_data.py` share (memfs/cmdline.py): outcomes logged truthfully, an unexpected
exception as one line and exit 3 with its traceback in data/logs/, nothing raw from a file on the terminal."""

import orjson
import pytest
from click.testing import CliRunner

from memfs.cli import cli as memfs_cli
from memfs.local import LocalOperations
from memfs.manage import cli as manage_cli


@pytest.fixture
def runner(root, monkeypatch):
    monkeypatch.setenv("MEMFS_DAEMON", "0")
    assert CliRunner().invoke(memfs_cli, ["--root", str(root), "init"]).exit_code == 0
    return CliRunner()


def test_an_unexpected_exception_is_one_line_exit_3_and_logged(runner, root, monkeypatch):
    def broken(self, **kwargs):
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(LocalOperations, "backup", broken)
    result = runner.invoke(manage_cli, ["--root", str(root), "backup"])
    assert result.exit_code == 3
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "unexpected error (RuntimeError: something nobody planned for)" in lines[0]
    error_id = lines[0].split("error id ")[1].split()[0]
    log = (root / "data" / "logs" / "memfs.log").read_text()
    assert error_id in log and "Traceback" in log and "something nobody planned for" in log
    audit = (root / "data" / "logs" / "manage-data.log").read_text().splitlines()
    assert "backup failed (exit 3): unexpected RuntimeError" in audit[-1] and " ok" not in audit[-1]


def test_every_outcome_is_logged_as_it_was(runner, root):
    assert runner.invoke(manage_cli, ["--root", str(root), "backup", "--quiet"]).exit_code == 0
    (root / "data" / "memories" / "bad.json").write_text("{not json")
    assert runner.invoke(manage_cli, ["--root", str(root), "validate"]).exit_code == 1
    assert runner.invoke(manage_cli, ["--root", str(root), "restore", "nothing.tar.gz", "--yes"]).exit_code == 3
    audit = [line.split(" ", 2)[2] for line in (root / "data" / "logs" / "manage-data.log").read_text().splitlines()]
    assert audit[0].startswith("backup ok memory_backup_")
    assert audit[1].startswith("validate problems (exit 1)")
    assert audit[2].startswith("restore failed (exit 3): nothing.tar.gz: not a backup file")


def test_control_characters_from_files_never_reach_the_terminal(runner, root):
    evil = "clear the screen \x1b[2J\x1b]0;pwned\x07 and ring \r\n the bell"
    memories = root / "data" / "memories"
    (memories / "evil.json").write_bytes(orjson.dumps({"content": evil, "tags": ["t"]}))
    (memories / "bad\x1b[2Jname.json").write_text("{not json")
    for args in (["reindex"], ["list"], ["get", "evil"], ["search", "screen", "--mode", "keyword"]):
        result = runner.invoke(memfs_cli, ["--root", str(root), *args])
        assert "\x1b" not in result.output and "\x07" not in result.output and "\r" not in result.output, args
    assert "\\x1b[2J" in runner.invoke(memfs_cli, ["--root", str(root), "get", "evil"]).output
    # --json keeps the content exactly (JSON escapes it): scripts get the truth.
    got = orjson.loads(runner.invoke(memfs_cli, ["--root", str(root), "get", "evil", "--json"]).output)
    assert got["content"] == evil


def test_a_multi_line_memory_keeps_its_lines_in_get(runner, root):
    (root / "data" / "memories" / "lines.json").write_bytes(orjson.dumps({"content": "first line\n\tsecond line"}))
    out = runner.invoke(memfs_cli, ["--root", str(root), "get", "lines"]).output
    assert "first line\n\tsecond line" in out


def test_validate_counts_every_file_it_checked_invalid_ones_included(runner, root):
    memories = root / "data" / "memories"
    (memories / "good.json").write_text('{"content": "a good one"}')
    (memories / "bad.json").write_text("{not json")
    out = orjson.loads(runner.invoke(manage_cli, ["--root", str(root), "validate", "--json"]).output)
    assert out["memory_files"] == 2
