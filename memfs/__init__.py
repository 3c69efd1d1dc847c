"""memfs: a filesystem-backed document memory store.

JSON files under data/memories/ are the truth; the catalog (SQLite + FTS5) and the vectors (Chroma) are
derived from them and can be rebuilt at any time. Start with `MemoryStore.open(root)`.
"""

__version__ = "0.1.0"  # before the imports: submodules read it

from .documents import Memory
from .errors import (InvalidDocumentError, MemfsError, NotFoundError, StoreBusyError,
                     StoreNotInitializedError, UnsupportedFormatError)
from .query import Filters, Hit
from .results import AddResult, ReconcileReport
from .store import MemoryStore

__all__ = [
    "AddResult", "Filters", "Hit", "InvalidDocumentError", "Memory", "MemfsError", "MemoryStore",
    "NotFoundError", "ReconcileReport", "StoreBusyError", "StoreNotInitializedError",
    "UnsupportedFormatError", "__version__",
]
