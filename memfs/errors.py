"""Every error memfs raises, each with the exit code the CLI turns it into (DESIGN.md §6).

| code | meaning                                                              |
|------|----------------------------------------------------------------------|
| 0    | done; nothing wrong                                                  |
| 1    | done, but problems were found (drift, invalid files)                 |
| 2    | usage error (click's own)                                            |
| 3    | failed: I/O error, corrupt or unverifiable backup, invalid data      |
| 4    | busy: another process holds the lock                                 |
"""

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_BUSY = 4


class MemfsError(Exception):
    """Base class. The message says what happened, to which file, and what to do next."""

    exit_code = EXIT_FAILED


class InvalidDocumentError(MemfsError):
    """A memory file (or a document handed to the API) does not follow the format."""

    def __init__(self, reason: str, path: str | None = None):
        self.reason = reason
        self.path = path
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{reason}")


class UnsupportedFormatError(InvalidDocumentError):
    """A document or archive written by a newer memfs; we refuse rather than guess."""


class NotFoundError(MemfsError):
    """No memory with that id."""


class StoreBusyError(MemfsError):
    """Another process owns the data directory (DESIGN.md §4)."""

    exit_code = EXIT_BUSY


class StoreNotInitializedError(MemfsError):
    """The root has no data/ layout yet."""
