"""Every error memfs raises, each with the exit code the CLI turns it into (DESIGN.md §6) and the HTTP
status and wire code the owner sends it with, so a client of the owner raises the same class with the
same message and exits with the same code as the in-process path.

| code | meaning                                                              |
|------|----------------------------------------------------------------------|
| 0    | done; nothing wrong                                                  |
| 1    | done, but problems were found (drift, invalid files)                 |
| 2    | usage error (click's own, or a request the operations refuse as such)|
| 3    | failed: I/O error, corrupt or unverifiable backup, invalid data      |
| 4    | busy: another process holds the lock                                 |
"""

from __future__ import annotations

import errno as _errno

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_BUSY = 4


class MemfsError(Exception):
    """Base class. The message says what happened, to which file, and what to do next."""

    exit_code = EXIT_FAILED
    http_status = 500
    code = "failed"


class InvalidDocumentError(MemfsError):
    """A memory file (or a document handed to the API) does not follow the format."""

    http_status = 422
    code = "invalid"

    def __init__(self, reason: str, path: str | None = None):
        self.reason = reason
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{reason}")


class UnsupportedFormatError(InvalidDocumentError):
    """A document or archive written by a newer memfs; we refuse rather than guess."""

    code = "unsupported_format"


class BadRequestError(MemfsError):
    """A request the operations cannot take as given (a bad cursor, an unknown mode): a usage error."""

    exit_code = EXIT_USAGE
    http_status = 422
    code = "bad_request"


class NotFoundError(MemfsError):
    """No memory (or backup) with that name."""

    http_status = 404
    code = "not_found"


class StoreBusyError(MemfsError):
    """Another process owns the data directory (DESIGN.md §4), or a conflicting operation runs."""

    exit_code = EXIT_BUSY
    http_status = 409
    code = "busy"


class PermissionDeniedError(MemfsError):
    """This user may not reach the store: its data/ is private, or its owner's socket is (0600)."""

    http_status = 403
    code = "permission_denied"


def permission_denied(path, what: str) -> PermissionDeniedError:
    """The error for `path` (the store's data/, or its owner's socket) refusing this user."""
    import os

    try:
        uid = os.stat(path).st_uid
    except OSError:
        uid = None
    whose = f"uid {uid}" if uid is not None else "another user"
    return PermissionDeniedError(f"permission denied: {what.format(uid=whose)}; run memfs as that user "
                                 f"(you are uid {os.getuid()})")


class StoreNotInitializedError(MemfsError):
    """The root has no data/ layout yet."""

    code = "not_initialized"


class NoSpaceError(MemfsError):
    """The disk is full; writes are atomic, so nothing was lost."""

    http_status = 507
    code = "no_space"


class OwnerUnavailableError(MemfsError):
    """The owner process could not be reached or started (a client-side condition)."""

    http_status = 503
    code = "unavailable"


class InternalError(MemfsError):
    """An unexpected exception; its traceback is in data/logs/ under the error id in the message."""

    code = "internal"


def error_class(code: str) -> type[MemfsError]:
    """The class for a wire code (MemfsError for a code this version does not know)."""
    for cls in _all_subclasses(MemfsError):
        if cls.code == code:
            return cls
    return MemfsError


def _all_subclasses(cls: type) -> list[type]:
    out = [cls]
    for sub in cls.__subclasses__():
        out += _all_subclasses(sub)
    return out


def io_error(e: OSError | Exception) -> MemfsError:
    """An I/O failure (OSError or sqlite3.Error) as a message a person can act on.

    Writes are atomic, so the message can promise that nothing was lost.
    """
    if not isinstance(e, OSError):  # sqlite3.Error: the catalog
        # SQLite reports a full disk as "database or disk is full" or, opening WAL files, "disk I/O error".
        return MemfsError(f"the catalog (data/indexes/catalog.sqlite) failed: {e}. If the disk is full, free "
                          "some space and try again (nothing was lost); if it is damaged, delete data/indexes/ "
                          "and run `memfs reindex` to rebuild it from the files")
    where = f"{e.filename}: " if e.filename else ""
    if e.errno in (_errno.ENOSPC, _errno.EDQUOT):
        return NoSpaceError(f"{where}no space left on the device; free some space and try again "
                            "(nothing was lost: files are replaced only once fully written)")
    if e.errno in (_errno.EACCES, _errno.EPERM, _errno.EROFS):
        return MemfsError(f"{where}permission denied; check the permissions of the store's directories")
    return MemfsError(f"{where}{e.strerror or e}")


# A path in a message starts where a word starts: after the start, a space, a quote, a bracket, '=' or ':'.
_PATH_START = r"(?<![^\s'\"(\[=:,])"


def relative_to_root(message: str, roots: "list[str]") -> str:
    """The message with the store's root taken off the paths in it, so a response names files from
    the root (#15). Only whole paths are touched: the root at the start of a word and followed by '/'
    (or, for an absolute root, ending the path), never the same letters inside a word (issue #24,
    item 14: with `--root ow`, "shows" became "sh.s")."""
    import re

    for r in sorted(set(roots), key=len, reverse=True):
        message = re.sub(_PATH_START + re.escape(r.rstrip("/")) + "/", "", message)
        if r.startswith("/"):
            message = re.sub(_PATH_START + re.escape(r.rstrip("/")) + r"(?![^\s'\")\],:;.])", ".", message)
    return message
