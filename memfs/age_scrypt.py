"""age files encrypted to a passphrase (the scrypt recipient of age-encryption.org/v1), streamed.

Why not pyrage here (it still does the X25519 and ssh recipients, in encryption.py): its passphrase API
holds the whole archive in memory, picks the scrypt work factor by timing this host, and refuses to
decrypt any file whose work factor this host would now take more than ~16 s for, timed again at
decryption. On a busy host a backup it wrote an hour before was refused as "Excessive work parameter
… would take around 32 seconds", reported as corrupted, while `age -d` opened it (issue #24 item 7).

So a passphrase backup is written here with age's own default work factor, 2^18 (256 MiB, about a
second), the same on every host, and is read here with a fixed bound, 2^MAX_LOG_N, as the age tool
reads: never a limit that depends on the load. The format is the age spec's, and tests/test_encrypt.py
checks it both ways against the real `age` tool.

  header   "age-encryption.org/v1\n-> scrypt <salt> <logN>\n<wrapped file key>\n--- <MAC>\n"
  payload  16-byte nonce, then 64 KiB chunks sealed with ChaCha20-Poly1305 (the last one flagged)
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import BinaryIO

from .archive import CorruptBackupError
from .errors import MemfsError

LOG_N = 18  # age's default work factor: 256 MiB, about a second
MAX_LOG_N = 22  # the most the age tool opens by default (4 GiB)
VERSION_LINE = b"age-encryption.org/v1\n"
_SALT_LABEL = b"age-encryption.org/v1/scrypt"
_CHUNK = 64 << 10
_TAG = 16
_MAX_HEADER = 64 << 10


class PassphraseError(MemfsError):
    """The passphrase does not open the file, or the file is not encrypted to a passphrase."""


def _crypto():
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return hashes, ChaCha20Poly1305, HKDF, Scrypt


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data).rstrip(b"=")


def _unb64(text: bytes, what: str) -> bytes:
    """Canonical unpadded base64 (the spec's), else CorruptBackupError."""
    try:
        data = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except ValueError:
        data = None
    if data is None or _b64(data) != text:
        raise CorruptBackupError(f"corrupted: the age header's {what} is not valid base64")
    return data


def _hkdf(key: bytes, salt: bytes, info: bytes) -> bytes:
    hashes, _, HKDF, _ = _crypto()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(key)


def _scrypt_key(passphrase: str, salt: bytes, log_n: int) -> bytes:
    _, _, _, Scrypt = _crypto()
    try:
        return Scrypt(salt=_SALT_LABEL + salt, length=32, n=1 << log_n, r=8, p=1).derive(passphrase.encode())
    except MemoryError as e:
        raise PassphraseError(f"opening this file needs {(128 * 8 << log_n) >> 20} MiB of memory for its scrypt work "
                              f"factor 2^{log_n}, and it could not be had; free memory and try again") from e


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


class PassphraseWriter:
    """Encrypt to a passphrase as it is written into `out` (a file-like object with write()); close()
    seals the last chunk. Memory: one 64 KiB chunk."""

    def __init__(self, out, passphrase: str, *, log_n: int = LOG_N):
        _, ChaCha20Poly1305, _, _ = _crypto()
        self._out = out
        file_key, salt, nonce = os.urandom(16), os.urandom(16), os.urandom(16)
        wrapped = ChaCha20Poly1305(_scrypt_key(passphrase, salt, log_n)).encrypt(bytes(12), file_key, None)
        header = VERSION_LINE + b"-> scrypt " + _b64(salt) + b" %d\n" % log_n + _b64(wrapped) + b"\n---"
        mac = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
        out.write(header + b" " + _b64(mac) + b"\n" + nonce)
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._buffer = bytearray()
        self._counter = 0

    def write(self, data) -> int:
        self._buffer += data
        # Hold back one full chunk: the last chunk is sealed differently, and only close() knows which it is.
        while len(self._buffer) > _CHUNK:
            self._seal(bytes(self._buffer[:_CHUNK]), last=False)
            del self._buffer[:_CHUNK]
        return len(data)

    def _seal(self, chunk: bytes, last: bool) -> None:
        self._out.write(self._aead.encrypt(_nonce(self._counter, last), chunk, None))
        self._counter += 1

    def close(self) -> None:
        self._seal(bytes(self._buffer), last=True)
        self._buffer = bytearray()


def _read_line(f: BinaryIO, budget: list[int]) -> bytes:
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = f.read(1)
        if not byte:
            raise CorruptBackupError("truncated: the age header ends early")
        line += byte
        budget[0] -= 1
        if budget[0] < 0:
            raise CorruptBackupError("corrupted: the age header is implausibly long")
    return bytes(line)


def _read_header(f: BinaryIO) -> tuple[list[list[bytes]], bytes, bytes]:
    """([stanza: args..., body], the header as MACed, the MAC)."""
    budget = [_MAX_HEADER]
    first = _read_line(f, budget)
    if first != VERSION_LINE:
        raise CorruptBackupError("corrupted: not an age v1 file (its first line is not age-encryption.org/v1)")
    stanzas, header = [], bytearray(first)
    while True:
        line = _read_line(f, budget)
        if line.startswith(b"--- "):
            header += b"---"
            return stanzas, bytes(header), _unb64(line[4:].rstrip(b"\n"), "MAC")
        if not line.startswith(b"-> "):
            raise CorruptBackupError("corrupted: the age header holds a line that is neither a stanza nor its end")
        header += line
        body = bytearray()
        while True:  # the body: lines of 64 columns, ended by a shorter one
            part = _read_line(f, budget)
            header += part
            body += part.rstrip(b"\n")
            if len(part) - 1 < 64:
                break
        stanzas.append([*line[3:].rstrip(b"\n").split(b" "), bytes(body)])


def _unwrap(stanzas: list[list[bytes]], passphrase: str, name: str) -> bytes:
    """The file key, from the header's single scrypt stanza."""
    _, ChaCha20Poly1305, _, _ = _crypto()
    if len(stanzas) != 1 or stanzas[0][0] != b"scrypt":
        kinds = ", ".join(sorted({s[0].decode("ascii", "replace") for s in stanzas}))
        raise PassphraseError(f"{name} is encrypted to keys ({kinds}), not to a passphrase: give the identity file "
                              "(--identity, env MEMFS_AGE_IDENTITY); nothing was changed")
    stanza = stanzas[0]
    if len(stanza) != 4 or not stanza[2].isdigit() or stanza[2].startswith(b"0"):
        raise CorruptBackupError("corrupted: the age header's scrypt stanza is malformed")
    salt, log_n, body = _unb64(stanza[1], "scrypt salt"), int(stanza[2]), _unb64(stanza[3], "wrapped key")
    if len(salt) != 16 or len(body) != 32:
        raise CorruptBackupError("corrupted: the age header's scrypt stanza is malformed")
    if log_n > MAX_LOG_N:
        raise PassphraseError(f"{name} asks for an scrypt work factor of 2^{log_n}, more than the 2^{MAX_LOG_N} that "
                              "memfs and the age tool open (memfs writes 2^18): it was not written by memfs. If you "
                              "trust it, open it with `age -d`; nothing was changed")
    try:
        return ChaCha20Poly1305(_scrypt_key(passphrase, salt, log_n)).decrypt(bytes(12), body, None)
    except Exception as e:  # cryptography's InvalidTag: the key derived from this passphrase does not open it
        if isinstance(e, MemfsError):
            raise
        raise PassphraseError(f"{name} cannot be decrypted with the passphrase given (it is not the one the backup "
                              "was made with); nothing was changed") from e


class PassphraseReader:
    """The plaintext of an age file encrypted to a passphrase, decrypted chunk by chunk as it is read.

    The header is read and the passphrase checked when it is made (PassphraseError for a wrong one);
    damage anywhere after raises CorruptBackupError where it is met, and a file cut short raises it at
    the end, since the last chunk carries its own flag.
    """

    def __init__(self, f: BinaryIO, passphrase: str, name: str):
        _, ChaCha20Poly1305, _, _ = _crypto()
        self._f = f
        stanzas, header, mac = _read_header(f)
        file_key = _unwrap(stanzas, passphrase, name)
        expected = hmac.new(_hkdf(file_key, b"", b"header"), header, hashlib.sha256).digest()
        if not hmac.compare_digest(mac, expected):
            raise CorruptBackupError("corrupted: the age header's MAC does not match (the header was altered)")
        nonce = f.read(16)
        if len(nonce) != 16:
            raise CorruptBackupError("truncated: the age payload ends before its nonce")
        self._aead = ChaCha20Poly1305(_hkdf(file_key, nonce, b"payload"))
        self._counter = 0
        self._pending = f.read(_CHUNK + _TAG)
        self._plain = bytearray()
        self._done = False

    def _next(self) -> bytes:
        """Open the next chunk; a short read means it is the last one, and then nothing may follow."""
        sealed, following = self._pending, self._f.read(_CHUNK + _TAG)
        last = not following
        if len(sealed) < _TAG or (not last and len(sealed) != _CHUNK + _TAG):
            raise CorruptBackupError("truncated: the age payload ends in the middle of a chunk")
        try:
            plain = self._aead.decrypt(_nonce(self._counter, last), sealed, None)
        except Exception as e:  # InvalidTag: damaged, reordered or cut short
            raise CorruptBackupError(f"corrupted: the encrypted data does not decrypt (chunk {self._counter} fails "
                                     "its authentication: damaged or truncated)") from e
        if last and not plain and self._counter:
            raise CorruptBackupError("corrupted: the age payload ends with an empty chunk")
        self._counter += 1
        self._pending, self._done = following, last
        return plain

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._plain) < n):
            self._plain += self._next()
        if n < 0 or n >= len(self._plain):
            out = bytes(self._plain)
            self._plain.clear()
            return out
        out = bytes(self._plain[:n])
        del self._plain[:n]
        return out

    def close(self) -> None:
        self._plain.clear()
