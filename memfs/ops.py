"""The one operations interface (DESIGN.md §4): everything a client can ask of a store.

Two implementations: `memfs.local.LocalOperations` (in the process that owns the store) and
`memfs.remote.RemoteOperations` (a client of that process, over its Unix socket or TCP). The `memfs`
CLI, `manage_data.py`, the HTTP routes and the MCP tools call this interface and never ask which one
they hold: the results are the same types (memfs.results), the errors the same classes (memfs.errors).

This module imports nothing heavy: clients import it and must start fast.
"""

from __future__ import annotations

from typing import Any, BinaryIO, Callable, Iterable, Protocol

from .query import Filters, Mode
from .retention import Retention
from .results import (AddResult, BackupList, BackupResult, Health, ListPage, MemoryRecord, OffsiteResult, OwnerStatus,
                      PruneResult, ReconcileReport, RemoveResult, RestoreSummary, SearchResult, Stats,
                      ValidationResult)

# progress(phase, done, total): long work reports through this where it runs in this process.
Progress = Callable[[str, int, int], None]


class Operations(Protocol):
    # -- memories -------------------------------------------------------------------------------------
    def add(self, content: str, *, tags: Iterable[str] = (), type: str = "note", metadata: dict | None = None,
            allow_duplicate: bool = False) -> AddResult: ...

    def get(self, mem_id: str) -> MemoryRecord: ...

    def update(self, mem_id: str, *, content: str | None = None, tags: Iterable[str] | None = None,
               add_tags: Iterable[str] = (), remove_tags: Iterable[str] = (), type: str | None = None,
               metadata: dict | None = None) -> MemoryRecord: ...

    def remove(self, mem_id: str) -> MemoryRecord: ...

    def list(self, filters: Filters = Filters(), *, limit: int = 50, cursor: str | None = None) -> ListPage: ...

    def search(self, query: str, *, k: int = 5, mode: Mode = "hybrid", filters: Filters = Filters(),
               min_score: float | None = None) -> SearchResult: ...

    # -- the store as a whole -------------------------------------------------------------------------
    def reindex(self, *, progress: Progress | None = None) -> ReconcileReport: ...

    def stats(self) -> Stats: ...

    def health(self) -> Health: ...

    def revision(self) -> str:
        """Changes whenever any memory is added, changed or removed (live views poll it; opaque)."""
        ...

    def status(self) -> OwnerStatus: ...

    # -- backups --------------------------------------------------------------------------------------
    # Files named here (identity, passphrase, a backup directory) are paths on the owner's machine:
    # the owner takes them only from a local client (its Unix socket), never over TCP.
    def backup(self, *, compression: str = "gz", prune: bool = True, retention: Retention = Retention(),
               backup_dir: str | None = None, recipients: Iterable[str] = (), passphrase_file: str | None = None,
               copy_to: str | None = None, progress: Progress | None = None) -> BackupResult: ...

    def list_backups(self, *, retention: Retention = Retention(), verify: str | None = None,
                     identity_file: str | None = None, backup_dir: str | None = None,
                     passphrase_file: str | None = None) -> BackupList: ...

    def restore(self, archive: str, *, verify: bool = True, dry_run: bool = False, backup_dir: str | None = None,
                identity_file: str | None = None, passphrase_file: str | None = None,
                progress: Progress | None = None) -> RestoreSummary: ...

    def validate(self, *, backups: bool = False, fix: bool = False, backup_dir: str | None = None,
                 identity_file: str | None = None, passphrase_file: str | None = None,
                 progress: Progress | None = None) -> ValidationResult: ...

    def prune(self, *, retention: Retention = Retention(), dry_run: bool = False,
              backup_dir: str | None = None) -> PruneResult: ...

    def offsite_sync(self, dest: str, *, retention: Retention = Retention(), prune: bool = True,
                     dry_run: bool = False, backup_dir: str | None = None) -> OffsiteResult: ...

    # -- in and out, key/value (issue #13); results from memfs.export/importers/migrations/kv ----------
    def export(self, out: BinaryIO, *, format: str = "memfs", filter_tags: Iterable[str] = (),
               include_embeddings: bool = False): ...

    def import_sources(self, sources: Iterable[str], *, format: str = "auto", dry_run: bool = False,
                       dedup: bool = True, source_tag: str | None = None, namespace: str | None = None,
                       progress: Progress | None = None): ...

    def import_history(self) -> list[dict]: ...

    def import_verify(self, record_id: str): ...

    def kv_set(self, key: str, value: Any, *, namespace: str = "default", ttl: float | None = None,
               expires_at=None, tags: Iterable[str] = ()): ...

    def kv_get(self, key: str, *, namespace: str = "default"): ...

    def kv_list(self, *, namespace: str | None = "default", prefix: str | None = None, limit: int | None = None,
                offset: int = 0) -> list: ...

    def kv_rm(self, key: str, *, namespace: str = "default") -> list[str]: ...

    def close(self) -> None: ...

    # -- lookups and bulk removal (added for issue #10; general, not MCP-specific) ----------------------
    def find(self, *, content_hash: str) -> MemoryRecord:
        """The memory whose content has this SHA-256 (hex); the oldest if several do. NotFoundError if none."""
        ...

    def remove_matching(self, filters: Filters, *, dry_run: bool = True, limit: int = 1000) -> RemoveResult:
        """Remove every memory passing `filters` (at least one filter; at most `limit` of them, else
        BadRequestError and nothing removed). With `dry_run` (the default) only say which would go."""
        ...

    # -- the knowledge graph (issue #22; memfs.graph) ---------------------------------------------------
    def graph(self, action: str, args: dict) -> dict:
        """One knowledge-graph action (memfs.graph.ACTIONS: create_entities, read_graph, search_nodes…)
        with the MCP reference memory server's arguments; its result as that server shapes it."""
        ...

    # -- replicas (issue #20; memfs.sync, docs/sync.md) -------------------------------------------------
    def sync(self, dest: str, *, dry_run: bool = False, recipients: Iterable[str] = (),
             identity_file: str | None = None, passphrase_file: str | None = None,
             rclone_config: str | None = None, progress: Progress | None = None):
        """Push this replica's changes to DEST (a folder or an rclone remote) and pull the others'."""
        ...

    def sync_compact(self, dest: str, *, dry_run: bool = False, recipients: Iterable[str] = (),
                     identity_file: str | None = None, passphrase_file: str | None = None,
                     rclone_config: str | None = None):
        """Replace this replica's own old change batches on DEST by one base object, then delete them
        (safe while other replicas sync: docs/sync.md)."""
        ...

    def sync_status(self): ...

    def conflicts(self) -> list[dict]: ...

    def conflict(self, conflict_id: str) -> dict: ...

    def resolve_conflict(self, conflict_id: str, *, keep: str = "winner", content: str | None = None) -> dict: ...
