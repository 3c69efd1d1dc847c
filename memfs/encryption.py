"""Encrypted backups in the age format (age-encryption.org/v1), through pyrage (rage's Python binding).

An encrypted backup is the same compressed archive, encrypted whole: `memory_backup_….tar.gz.age`.
So in an emergency the `age` tool alone opens it: `age -d -i key.txt FILE | tar -xz`. Its `.md5`
covers the ciphertext, so `md5sum -c` and off-site checksums work without a key.

Recipients (X25519 `age1…` keys or `ssh-ed25519`/`ssh-rsa` public keys) are streamed through
`encrypt_io`/`decrypt_io` on their own thread, behind a pipe: memory stays flat whatever the size.
A passphrase (age's scrypt recipient) is for humans, as age says. pyrage's API for it holds the
archive in memory and bounds the work factor by timing the host (issue #24 item 7), so memfs.age_scrypt
does that recipient itself, streaming, at age's fixed default work factor.

Identities and passphrases are handed in as values: the entry points read them from a file or the
environment, never from the command line (DESIGN.md §7).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import BinaryIO, Iterable, Sequence

from .age_scrypt import PassphraseError, PassphraseReader, PassphraseWriter
from .archive import CorruptBackupError
from .errors import MemfsError

AGE_SUFFIX = ".age"


class DecryptionError(MemfsError):
    """The archive is encrypted and the identity or passphrase given does not open it (or none was)."""


class EncryptionKeyError(MemfsError):
    """A recipient, identity or passphrase given to memfs is not usable."""


def _pyrage():
    try:
        import pyrage
    except ImportError as e:  # pragma: no cover - a dependency; the message says what to do
        raise EncryptionKeyError("encrypted backups need the pyrage package: pip install pyrage") from e
    return pyrage


def _key_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def parse_recipients(values: Iterable[str]) -> list:
    """Recipients from strings: an `age1…` key, an ssh public key line, or the path of a file holding
    such lines (`#` comments allowed), as `age -R` reads."""
    pyrage = _pyrage()
    out = []
    for value in values:
        value = value.strip()
        lines = [value]
        if not value.startswith(("age1", "ssh-")) and Path(value).is_file():
            lines = _key_lines(Path(value).read_text())
        for line in lines:
            try:
                out.append(pyrage.ssh.Recipient.from_str(line) if line.startswith("ssh-")
                           else pyrage.x25519.Recipient.from_str(line))
            except Exception as e:  # pyrage.RecipientError, and ValueError for odd ssh keys
                raise EncryptionKeyError(f"not an age recipient: {line[:24]!r}… ({e}); expected an age1… key, "
                                         "an ssh public key, or a file of them") from e
    if not out:
        raise EncryptionKeyError("no recipients given to encrypt to")
    return out


def parse_identities(text: str) -> list:
    """Identities from the contents of an identity file: `AGE-SECRET-KEY-1…` lines (as `age-keygen`
    writes them, comments allowed) or an unencrypted OpenSSH private key."""
    pyrage = _pyrage()
    if "-----BEGIN" in text:
        try:
            return [pyrage.ssh.Identity.from_buffer(text.encode())]
        except Exception as e:
            raise EncryptionKeyError(f"the ssh private key is not usable ({e}); it must not be "
                                     "passphrase-protected") from e
    out = []
    for line in _key_lines(text):
        try:
            out.append(pyrage.x25519.Identity.from_str(line))
        except Exception as e:
            raise EncryptionKeyError(f"an identity line is not an AGE-SECRET-KEY ({e})") from e
    if not out:
        raise EncryptionKeyError("the identity holds no AGE-SECRET-KEY-1… line")
    return out


def generate_identity() -> tuple[str, str]:
    """(secret key, public recipient) of a new X25519 identity, as `age-keygen` makes."""
    ident = _pyrage().x25519.Identity.generate()
    return str(ident), str(ident.to_public())


def _pipe() -> tuple[int, int]:
    """A pipe with a 1 MiB buffer (Linux F_SETPIPE_SZ) rather than 64 KiB: far fewer wake-ups between
    the compressing and the encrypting thread."""
    r, w = os.pipe()
    try:
        import fcntl

        fcntl.fcntl(w, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except OSError:
        pass  # over /proc/sys/fs/pipe-max-size: the default buffer works, only slower
    return r, w


class _HashingFile:
    """Writes through to `f`, keeping the MD5 of every byte (the `.md5` covers the ciphertext)."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.md5 = hashlib.md5()

    def write(self, data) -> int:
        self.md5.update(data)
        self.f.write(data)
        return len(data)

    def flush(self) -> None:
        self.f.flush()


class AgeWriter:
    """A write-only file that encrypts what it is given into `f`. `close()` finishes the age stream;
    `md5` is then the MD5 of the ciphertext written."""

    def __init__(self, f: BinaryIO, *, recipients: Sequence | None = None, passphrase: str | None = None):
        if bool(recipients) == bool(passphrase):
            raise EncryptionKeyError("encrypt to recipients or with a passphrase (one of them, not both)")
        self._out = _HashingFile(f)
        self._passphrase = passphrase
        self._error: BaseException | None = None
        if passphrase:
            self._sealer = PassphraseWriter(self._out, passphrase)
            return
        r, w = _pipe()
        self._pipe_in = os.fdopen(w, "wb", buffering=0)
        self._pipe_out = os.fdopen(r, "rb", buffering=0)
        self._thread = threading.Thread(target=self._encrypt, args=(list(recipients),), name="memfs-age",
                                        daemon=True)
        self._thread.start()

    def _encrypt(self, recipients: list) -> None:
        try:
            _pyrage().encrypt_io(self._pipe_out, self._out, recipients)
        except BaseException as e:
            self._error = e
        finally:
            self._pipe_out.close()  # the producer then sees a broken pipe instead of blocking

    @property
    def md5(self):
        return self._out.md5

    def write(self, data) -> int:
        if self._passphrase:
            return self._sealer.write(data)
        view = memoryview(data)
        try:
            while view:
                view = view[self._pipe_in.write(view):]
        except BrokenPipeError:
            self._thread.join()
            raise MemfsError(f"encryption failed: {self._error}") from self._error
        return len(data)

    def close(self) -> None:
        if self._passphrase:
            self._sealer.close()
            return
        self._pipe_in.close()
        self._thread.join()
        if self._error is not None:
            raise MemfsError(f"encryption failed: {self._error}") from self._error


class DecryptingReader:
    """A readable file of the plaintext of an age file, decrypted on a thread as it is read.

    A wrong identity is found at the header, before any plaintext: `read` raises DecryptionError.
    Damaged ciphertext raises CorruptBackupError when the reader reaches it.
    """

    def __init__(self, path: Path, *, identities: Sequence | None = None, passphrase: str | None = None,
                 source: BinaryIO | None = None):
        """`source`: the age file already opened (read on the decrypting thread); else `path` is opened."""
        self._name = path.name
        self._source = source
        self._error: BaseException | None = None
        self._plain = self._thread = self._owned = None
        if not identities and not passphrase:
            raise DecryptionError(f"{path.name} is encrypted: give an identity file (--identity, env "
                                  "MEMFS_AGE_IDENTITY) or a passphrase file to open it; nothing was changed")
        if passphrase:  # memfs.age_scrypt, on this thread (see the module docstring)
            self._owned = None if source is not None else open(path, "rb")
            try:
                self._plain = PassphraseReader(source or self._owned, passphrase, path.name)
            except PassphraseError as e:
                self.close()
                raise DecryptionError(str(e)) from e
            except BaseException:
                self.close()
                raise
            return
        r, w = _pipe()
        self._plain = os.fdopen(r, "rb", buffering=0)
        self._pipe_in = os.fdopen(w, "wb", buffering=0)
        self._thread = threading.Thread(target=self._decrypt, args=(path, list(identities)),
                                        name="memfs-age-decrypt", daemon=True)
        self._thread.start()

    def _translate(self, e: BaseException) -> MemfsError:
        text = str(e)
        if "No matching keys" in text or "Decryption failed" in text:
            return DecryptionError(f"{self._name} cannot be decrypted with the identity or passphrase given "
                                   f"({text}); nothing was changed")
        return CorruptBackupError(f"corrupted: the encrypted data does not decrypt ({text})")

    def _decrypt(self, path: Path, identities: list) -> None:
        try:
            if self._source is not None:
                _pyrage().decrypt_io(self._source, self._pipe_in, identities)
            else:
                with open(path, "rb") as f:
                    _pyrage().decrypt_io(f, self._pipe_in, identities)
        except BaseException as e:
            self._error = e
        finally:
            try:
                self._pipe_in.close()
            except OSError:
                pass

    def read(self, n: int = -1) -> bytes:
        data = self._plain.read(n)
        if not data and self._thread is not None:
            self._thread.join()
            if self._error is not None and not isinstance(self._error, BrokenPipeError):
                raise self._translate(self._error)
        return data

    def close(self) -> None:
        if self._plain is not None:
            self._plain.close()  # a decrypting thread blocked on a full pipe gets EPIPE and ends
        if self._thread is not None:
            self._thread.join()
        if self._owned is not None:
            self._owned.close()


def read_identity_file(path: Path) -> list:
    """Identities from an identity file (`--identity FILE` or env MEMFS_AGE_IDENTITY, resolved by the caller)."""
    try:
        return parse_identities(Path(path).read_text())
    except OSError as e:
        raise EncryptionKeyError(f"cannot read the identity file {path}: {e.strerror or e}") from e


def read_passphrase_file(path: Path) -> str:
    """The passphrase in a file's first line (`--passphrase-file FILE`; never a command-line value)."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise EncryptionKeyError(f"cannot read the passphrase file {path}: {e.strerror or e}") from e
    passphrase = text.splitlines()[0] if text.strip() else ""
    if not passphrase:
        raise EncryptionKeyError(f"the passphrase file {path} is empty")
    return passphrase
