"""memfs: a filesystem-backed document memory store.

JSON files under data/memories/ are the truth; the catalog (SQLite + FTS5) and the vectors (Chroma) are
derived from them and can be rebuilt at any time. Start with `MemoryStore.open(root)`, or use the
operations interface (memfs.ops) through `memfs.connect.connect(root)`.

The store (numpy, chromadb, the model) is imported only when it is first named, so a client of the
owner (`memfs search` while an owner runs) starts in a fraction of a second.
"""

__version__ = "0.1.0"  # before the imports: submodules read it

from .documents import Memory
from .errors import (InvalidDocumentError, MemfsError, NotFoundError, StoreBusyError,
                     StoreNotInitializedError, UnsupportedFormatError)
from .query import Filters
from .results import AddResult, Hit, ReconcileReport

__all__ = [
    "AddResult", "Filters", "Hit", "InvalidDocumentError", "Memory", "MemfsError", "MemoryStore",
    "NotFoundError", "ReconcileReport", "StoreBusyError", "StoreNotInitializedError",
    "UnsupportedFormatError", "__version__",
]


def __getattr__(name: str):
    if name == "MemoryStore":
        from .store import MemoryStore

        return MemoryStore
    raise AttributeError(f"module 'memfs' has no attribute {name!r}")
