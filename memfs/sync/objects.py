"""The objects on a sync remote (docs/sync.md, format `memfs.sync/1`): naming, envelope, verification,
encryption.

    memfs-sync.json                          the remote's marker: format, encrypted or not
    replicas/<prefix>/<seq:010d>-<h16>.mfs   one change batch; h16 = SHA-256 of the stored bytes
    replicas/<prefix>/<seq:010d>-<h16>.base.mfs  a base: the replica's batches 1..seq-1 folded into one
                                                 (memfs.sync.compact); a reader whose next object is gone reads it
    replicas/<prefix>/key.age                (passphrase mode) this replica's age identity, passphrase-encrypted

An object's bytes (plaintext, or the age ciphertext of them) are a JSON header line, then the body:

    {"format": "memfs.sync/1", "replica": ID, "seq": N, "prev": NAME-of-N-1|null, "body_sha256": H, "body_len": L}
    (a base adds "base": true)
    <one JSON change record per line>

Readers check, before anything is applied: the stored bytes against the hash in the name (a bit flip,
a truncation), the format version (a newer one is refused), the header's replica and seq against the
prefix and the name (an object replayed under another name), the chain (`prev`), and the body's hash.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import orjson

from ..errors import EXIT_FAILED, MemfsError

FORMAT = "memfs.sync/1"
MARKER = "memfs-sync.json"
REPLICAS = "replicas/"
KEY_OBJECT = "key.age"
BATCH_NAME = re.compile(r"^(\d{10})-([0-9a-f]{16})(\.base)?\.mfs$")
MAGIC = b"MEMFS-SYNC\n"


class RemoteObjectError(MemfsError):
    """An object on the remote failed verification. Nothing from this sync was applied."""

    exit_code = EXIT_FAILED

    def __init__(self, name: str, reason: str):
        self.name = name
        super().__init__(f"refused the remote object {name}: {reason}; nothing was applied. Remove or restore "
                         "that object on the remote (it is not one memfs wrote, or it was damaged), then sync again")


class SyncKeyError(MemfsError):
    """The key given does not open the remote's objects, or the remote's encryption differs from ours."""

    exit_code = EXIT_FAILED


def batch_name(prefix: str, seq: int, data: bytes, *, base: bool = False) -> str:
    return f"{REPLICAS}{prefix}/{seq:010d}-{hashlib.sha256(data).hexdigest()[:16]}{'.base' if base else ''}.mfs"


def is_base(name: str) -> bool:
    """Whether an object's name marks a base (readers find one in a listing without reading it)."""
    return name.endswith(".base.mfs")


def parse_name(name: str) -> tuple[str, int, str] | None:
    """(prefix, seq, h16) of a batch or base object's name, or None for anything else."""
    if not name.startswith(REPLICAS):
        return None
    prefix, _, base = name[len(REPLICAS):].partition("/")
    m = BATCH_NAME.match(base)
    if not prefix or "/" in base or m is None:
        return None
    return prefix, int(m.group(1)), m.group(2)


@dataclass
class Batch:
    replica: str
    seq: int
    prev: str | None
    records: list[dict] = field(default_factory=list)
    base: bool = False  # covers the replica's seqs 1..seq-1 (memfs.sync.compact)


def encode(batch: Batch) -> bytes:
    body = b"".join(orjson.dumps(r) + b"\n" for r in batch.records)
    header = {"format": FORMAT, "replica": batch.replica, "seq": batch.seq, "prev": batch.prev,
              "body_sha256": hashlib.sha256(body).hexdigest(), "body_len": len(body)}
    if batch.base:  # only then: an ordinary batch's bytes (and so a queued batch's name) stay as they were
        header["base"] = True
    return MAGIC + orjson.dumps(header) + b"\n" + body


def decode(name: str, plain: bytes) -> Batch:
    """The batch in an object's plaintext, or RemoteObjectError naming the object."""
    if not plain.startswith(MAGIC):
        raise RemoteObjectError(name, "it is not a memfs sync object (no memfs header)")
    head, sep, body = plain[len(MAGIC):].partition(b"\n")
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError:
        raise RemoteObjectError(name, "its header is not JSON (truncated or damaged)") from None
    if not isinstance(header, dict):
        raise RemoteObjectError(name, "its header is not an object")
    fmt = header.get("format")
    if fmt != FORMAT:
        if isinstance(fmt, str) and fmt.startswith("memfs.sync/"):
            raise RemoteObjectError(name, f"it is in format {fmt}, newer than this memfs reads ({FORMAT}); "
                                    "upgrade memfs on this machine")
        raise RemoteObjectError(name, f"unknown format {str(fmt)[:40]!r}")
    if not sep or len(body) != header.get("body_len") or hashlib.sha256(body).hexdigest() != header.get("body_sha256"):
        raise RemoteObjectError(name, "its body does not match the hash in its header (truncated or damaged)")
    try:
        records = [orjson.loads(line) for line in body.splitlines() if line]
    except orjson.JSONDecodeError:
        raise RemoteObjectError(name, "a change record in it is not JSON") from None
    if not all(isinstance(r, dict) for r in records):
        raise RemoteObjectError(name, "a change record in it is not an object")
    seq, replica = header.get("seq"), header.get("replica")
    if not isinstance(seq, int) or not isinstance(replica, str):
        raise RemoteObjectError(name, "its header lacks the replica or the sequence number")
    return Batch(replica, seq, header.get("prev"), records, header.get("base") is True)


class Codec:
    """Plain, or age (recipients to write, identities to read; or one passphrase for both).

    With a passphrase, age's scrypt costs about a second per object, so each replica makes one age
    identity, stores it on the remote encrypted with the passphrase (`key.age`, one scrypt), and
    encrypts its batches to that identity (fast X25519).
    """

    def __init__(self, *, recipients: Iterable[str] = (), identities: list | None = None,
                 passphrase: str | None = None):
        from ..encryption import parse_recipients

        self.passphrase = passphrase
        self.recipients = parse_recipients(recipients) if recipients else []
        self.identities = list(identities or [])
        self.encrypted = bool(self.recipients or passphrase)
        self.own_identity = None  # passphrase mode: this replica's identity (from key.age)

    def marker(self) -> dict:
        return {"format": FORMAT, "encrypted": self.encrypted}

    def seal(self, plain: bytes) -> bytes:
        if not self.encrypted:
            return plain
        import pyrage

        recipients = self.recipients or [self.own_identity.to_public()]
        return pyrage.encrypt(plain, recipients)

    def open(self, name: str, stored: bytes) -> bytes:
        if stored.startswith(MAGIC):
            if self.encrypted:
                raise RemoteObjectError(name, "it is not encrypted, but this remote is")
            return stored
        if not stored.startswith(b"age-encryption.org/"):
            raise RemoteObjectError(name, "it is neither a memfs sync object nor age ciphertext")
        if not self.identities:
            raise SyncKeyError(f"the remote object {name} is encrypted and no key was given: pass --identity FILE "
                               "(age identity) or --passphrase-file FILE; nothing was changed")
        import pyrage

        try:
            return pyrage.decrypt(stored, self.identities)
        except pyrage.DecryptError as e:
            if "header" in str(e).lower() or "no matching" in str(e).lower() or "identit" in str(e).lower():
                raise SyncKeyError(f"the key given does not open the remote object {name} ({e}); use the identity "
                                   "or passphrase the remote was encrypted with. Nothing was changed") from None
            raise RemoteObjectError(name, f"it does not decrypt ({e}): damaged") from None

    # -- passphrase mode: one age identity per replica, stored passphrase-encrypted -----------------

    def wrap_identity(self, identity) -> bytes:
        import pyrage

        return pyrage.passphrase.encrypt(str(identity).encode(), self.passphrase)

    def unwrap_identity(self, name: str, stored: bytes):
        import pyrage

        try:
            text = pyrage.passphrase.decrypt(stored, self.passphrase).decode()
            return pyrage.x25519.Identity.from_str(text.strip())
        except Exception as e:  # pyrage raises several kinds for a wrong passphrase
            raise SyncKeyError(f"the passphrase does not open the remote object {name} ({e}); use the passphrase "
                               "the remote was encrypted with. Nothing was changed") from None


def read_keys(*, recipients: Iterable[str] = (), identity_file: str | None = None,
              passphrase_file: str | None = None) -> Codec:
    """A Codec from the options the entry points resolved (files named, never secrets on the command line)."""
    from ..encryption import read_identity_file, read_passphrase_file

    passphrase = read_passphrase_file(Path(passphrase_file)) if passphrase_file else None
    identities = read_identity_file(Path(identity_file)) if identity_file else []
    return Codec(recipients=list(recipients), identities=identities, passphrase=passphrase)
