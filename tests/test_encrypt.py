"""Issue #11 capability 8: encrypted backups in the age format (pyrage), opened by the real `age` tool too."""

import hashlib
import os
import shutil
import subprocess
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from memfs.backups import create_backup, list_backups, md5_of, plan_prune
from memfs.encryption import (DecryptionError, EncryptionKeyError, generate_identity, parse_identities,
                              parse_recipients)
from memfs.errors import EXIT_FAILED
from memfs.filestore import Layout
from memfs.restore import restore_backup, verify_backup
from memfs.retention import Retention

needs_age = pytest.mark.skipif(shutil.which("age") is None, reason="the age CLI is not installed "
                               "(scripts/test.sh installs Debian's `age` when it runs as root)")


@pytest.fixture
def layout(tmp_path) -> Layout:
    layout = Layout(tmp_path / "store")
    layout.create()
    for i in range(30):
        (layout.memories / f"m{i:02}.json").write_text(orjson.dumps({"content": f"secret memory {i}"}).decode())
    (layout.indexes / "catalog.sqlite").write_bytes(os.urandom(2 << 20))
    return layout


@pytest.fixture
def key(tmp_path):
    secret, public = generate_identity()
    path = tmp_path / "key.txt"
    path.write_text(f"# created: by the test\n# public key: {public}\n{secret}\n")
    return path, public


def state(layout: Layout) -> dict[str, str]:
    return {p.relative_to(layout.data).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(layout.data.rglob("*")) if p.is_file() and "logs" not in p.parts}


@pytest.mark.parametrize("compression", ["gz", "zst"])
def test_encrypted_backup_round_trip_to_a_recipient(layout, key, compression):
    path, public = key
    made = create_backup(layout, compression=compression, recipients=parse_recipients([public]))
    assert made.encrypted and made.name.endswith(f".tar.{compression}.age")
    assert made.path.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert b"secret memory" not in made.path.read_bytes()
    # the .md5 covers the ciphertext: md5sum -c needs no key
    check = subprocess.run(["md5sum", "-c", made.md5_path.name], cwd=made.path.parent, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert verify_backup(made).status == "encrypted"  # no identity: the checksum only, said so
    ids = parse_identities(path.read_text())
    report = verify_backup(made, identities=ids)
    assert report.status == "ok" and report.memory_count == 30
    before = state(layout)
    (layout.memories / "m00.json").unlink()
    result = restore_backup(layout, made, identities=ids)
    assert state(layout) == before and result.memory_count == 30


def test_a_wrong_key_fails_with_exit_3_and_changes_nothing(layout, key):
    _, public = key
    made = create_backup(layout, recipients=parse_recipients([public]))
    other = parse_identities(generate_identity()[0])
    assert verify_backup(made, identities=other).status == "wrong key"
    before = state(layout)
    n = len(list_backups(layout.backups)[0])
    for attempt in ({"identities": other}, {}):
        with pytest.raises(DecryptionError) as e:
            restore_backup(layout, made, **attempt)
        assert e.value.exit_code == EXIT_FAILED and "nothing was changed" in str(e.value)
    assert state(layout) == before and len(list_backups(layout.backups)[0]) == n
    assert not list(layout.data.glob(".restore-*"))


def test_passphrase_round_trip_and_wrong_passphrase(layout):
    made = create_backup(layout, passphrase="correct horse battery staple")
    assert made.encrypted and b"scrypt" in made.path.read_bytes()[:200]
    assert verify_backup(made, passphrase="correct horse battery staple").status == "ok"
    assert verify_backup(made, passphrase="wrong").status == "wrong key"


def test_damaged_ciphertext_with_a_recomputed_md5_is_corrupt(layout, key):
    path, public = key
    made = create_backup(layout, recipients=parse_recipients([public]))
    data = bytearray(made.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    made.path.write_bytes(bytes(data))
    made.md5_path.write_text(f"{md5_of(made.path)}  {made.name}\n")
    report = verify_backup(made, identities=parse_identities(path.read_text()))
    assert report.status == "corrupt" and "does not decrypt" in report.reason


def test_ssh_keys_work_as_recipient_and_identity(layout, tmp_path):
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "id")], check=True)
    made = create_backup(layout, recipients=parse_recipients([(tmp_path / "id.pub").read_text()]))
    assert verify_backup(made, identities=parse_identities((tmp_path / "id").read_text())).status == "ok"


def test_a_recipients_file_and_bad_keys(layout, key, tmp_path):
    _, public = key
    second_secret, second_public = generate_identity()
    (tmp_path / "recipients.txt").write_text(f"# ops team\n{public}\n{second_public}\n")
    made = create_backup(layout, recipients=parse_recipients([str(tmp_path / "recipients.txt")]))
    assert verify_backup(made, identities=parse_identities(second_secret)).status == "ok"
    with pytest.raises(EncryptionKeyError, match="not an age recipient"):
        parse_recipients(["age1notakey"])
    with pytest.raises(EncryptionKeyError, match="AGE-SECRET-KEY"):
        parse_identities("# only a comment\n")


def test_the_pre_restore_snapshot_is_encrypted_when_asked(layout, key):
    path, public = key
    recipients, ids = parse_recipients([public]), parse_identities(path.read_text())
    made = create_backup(layout, recipients=recipients)
    result = restore_backup(layout, made, identities=ids, snapshot_recipients=recipients)
    assert result.pre_restore.encrypted and verify_backup(result.pre_restore, identities=ids).status == "ok"


def test_retention_treats_encrypted_and_plain_backups_alike(layout, key):
    _, public = key
    recipients = parse_recipients([public])
    day = datetime(2025, 3, 1, 2, tzinfo=timezone.utc)
    made = [create_backup(layout, now=day + timedelta(days=d, hours=h), recipients=recipients if (d + h) % 2 else None)
            for d in range(4) for h in (0, 1)]
    plan = {i.backup.name: i.decision.keep for i in plan_prune(layout.backups, Retention(3, 0, 0, pre_restore=0))}
    assert [plan[b.name] for b in made] == [False, False, False, True, False, True, False, True]
    assert {b.encrypted for b in made} == {True, False}


@needs_age
def test_the_age_tool_alone_opens_an_encrypted_backup(layout, key, tmp_path):
    """The emergency path: `age -d -i key.txt FILE | tar -xz`, no memfs needed."""
    path, public = key
    made = create_backup(layout, recipients=parse_recipients([public]))
    out = tmp_path / "out"
    out.mkdir()
    decrypted = subprocess.run(["age", "-d", "-i", str(path), str(made.path)], capture_output=True, check=True).stdout
    untar = subprocess.run(["tar", "-xzf", "-", "-C", str(out)], input=decrypted, capture_output=True)
    assert untar.returncode == 0, untar.stderr
    assert (out / "data" / "memories" / "m07.json").read_bytes() == (layout.memories / "m07.json").read_bytes()
    assert orjson.loads((out / "memfs-backup.json").read_bytes())["memory_count"] == 30


@needs_age
def test_an_archive_encrypted_by_the_age_tool_restores(layout, key, tmp_path):
    path, public = key
    plain = create_backup(layout, backup_dir=tmp_path / "plain")
    target = layout.backups / (plain.name + ".age")
    subprocess.run(["age", "-r", public, "-o", str(target), str(plain.path)], check=True)
    target.with_name(target.name + ".md5").write_text(f"{md5_of(target)}  {target.name}\n")
    archive = list_backups(layout.backups)[0][0]
    assert archive.encrypted
    before = state(layout)
    shutil.rmtree(layout.memories)
    restore_backup(layout, archive, identities=parse_identities(path.read_text()))
    assert state(layout) == before


def _age_decrypt_with_passphrase(path, out, passphrase: str) -> tuple[int, bytes]:
    return _age_with_passphrase(["-d", "-o", str(out), str(path)], passphrase)


def _age_with_passphrase(args: list[str], passphrase: str) -> tuple[int, bytes]:
    """`age` reads a passphrase only from a terminal: give it one (a pty), and type it at each prompt."""
    import pty
    import select
    import time

    pid, fd = pty.fork()
    if pid == 0:  # the child: age on the pty as its controlling terminal
        os.execvp("age", ["age", *args])
    seen, typed, deadline = b"", 0, time.monotonic() + 120
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.5)[0]:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
        if seen.lower().count(b"passphrase") > typed:
            os.write(fd, passphrase.encode() + b"\n")
            typed += 1
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    return os.waitstatus_to_exitcode(status), seen


@needs_age
def test_the_age_tool_alone_opens_a_passphrase_backup(layout, tmp_path):
    made = create_backup(layout, passphrase="correct horse battery staple")
    code, seen = _age_decrypt_with_passphrase(made.path, tmp_path / "plain.tar.gz", "correct horse battery staple")
    assert code == 0, seen
    listing = subprocess.run(["tar", "-tzf", str(tmp_path / "plain.tar.gz")], capture_output=True, text=True)
    assert "data/memories/m29.json" in listing.stdout.split()


def test_identity_and_passphrase_files(tmp_path, key):
    from memfs.encryption import read_identity_file, read_passphrase_file

    path, _ = key
    assert len(read_identity_file(path)) == 1
    (tmp_path / "pass").write_text("two words\n")
    assert read_passphrase_file(tmp_path / "pass") == "two words"
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(EncryptionKeyError, match="empty"):
        read_passphrase_file(tmp_path / "empty")
    with pytest.raises(EncryptionKeyError, match="cannot read"):
        read_identity_file(tmp_path / "nope")


# -- issue #24 item 7: a passphrase backup memfs wrote always opens with its passphrase ---------------------


def _scrypt_stanza(path) -> list[bytes]:
    head = path.read_bytes()[:200].split(b"\n")
    assert head[0] == b"age-encryption.org/v1"
    return head[1].split(b" ")


def test_a_passphrase_backup_has_ages_fixed_work_factor_and_is_read_without_timing_the_host(layout, monkeypatch):
    """pyrage chose the work factor by timing the host, and refused on decryption what this host, busy,
    would now take over ~16 s for ("corrupted … Excessive work parameter"). memfs writes age's default,
    2^18, on every host, and reads it with a fixed bound: nothing depends on the load."""
    import pyrage

    def timed_by_the_host(*args):
        raise AssertionError("the passphrase path must not go through pyrage's host-timed scrypt")

    monkeypatch.setattr(pyrage.passphrase, "encrypt", timed_by_the_host)
    monkeypatch.setattr(pyrage.passphrase, "decrypt", timed_by_the_host)
    made = create_backup(layout, passphrase="correct horse battery staple")
    assert _scrypt_stanza(made.path)[:2] == [b"->", b"scrypt"] and _scrypt_stanza(made.path)[3] == b"18"
    assert verify_backup(made, passphrase="correct horse battery staple").status == "ok"
    before = state(layout)
    (layout.memories / "m00.json").unlink()
    restore_backup(layout, made, passphrase="correct horse battery staple")
    assert {k: v for k, v in state(layout).items() if "pre_restore" not in k} == \
        {k: v for k, v in before.items() if "pre_restore" not in k}


def test_a_backup_pyrage_wrote_still_opens(layout, tmp_path):
    """Passphrase backups made before item 7 (pyrage, whatever work factor it chose) are read as before."""
    import pyrage

    made = create_backup(layout)
    encrypted = made.path.with_name(made.name + ".age")
    encrypted.write_bytes(pyrage.passphrase.encrypt(made.path.read_bytes(), "old words"))
    encrypted.with_name(encrypted.name + ".md5").write_text(f"{md5_of(encrypted)}  {encrypted.name}\n")
    archive = next(b for b in list_backups(layout.backups)[0] if b.encrypted)
    assert verify_backup(archive, passphrase="old words").status == "ok"
    assert verify_backup(archive, passphrase="new words").status == "wrong key"


def test_a_work_factor_over_the_bound_is_refused_without_saying_corrupted(layout, tmp_path):
    import base64

    made = create_backup(layout, passphrase="pw")
    lines = made.path.read_bytes().split(b"\n", 4)
    salt = base64.b64encode(os.urandom(16)).rstrip(b"=")
    lines[1] = b"-> scrypt " + salt + b" 30"  # 2^30: 1 TiB of memory; age and memfs open at most 2^22
    made.path.write_bytes(b"\n".join(lines))
    made.md5_path.write_text(f"{md5_of(made.path)}  {made.name}\n")
    report = verify_backup(made, passphrase="pw")
    assert report.status == "wrong key" and "corrupt" not in report.reason.lower(), report
    assert "2^30" in report.reason and "age -d" in report.reason


def test_damaged_or_cut_passphrase_ciphertext_is_corrupt(layout):
    made = create_backup(layout, passphrase="pw")
    good = made.path.read_bytes()
    for damaged in (good[:len(good) // 2] + bytes([good[len(good) // 2] ^ 1]) + good[len(good) // 2 + 1:],
                    good[:-100], good[:-(64 << 10) - 16], good + b"more"):
        made.path.write_bytes(damaged)
        made.md5_path.write_text(f"{md5_of(made.path)}  {made.name}\n")
        report = verify_backup(made, passphrase="pw")
        assert report.status == "corrupt", report


@needs_age
def test_an_archive_the_age_tool_encrypted_to_a_passphrase_restores(layout, tmp_path):
    made = create_backup(layout)
    out = made.path.with_name(made.name + ".age")
    code, seen = _age_with_passphrase(["-p", "-o", str(out), str(made.path)], "typed by a person")
    assert code == 0, seen
    out.with_name(out.name + ".md5").write_text(f"{md5_of(out)}  {out.name}\n")
    archive = next(b for b in list_backups(layout.backups)[0] if b.encrypted)
    assert verify_backup(archive, passphrase="typed by a person").status == "ok"
