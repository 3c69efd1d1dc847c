"""What every operation returns (DESIGN.md §4): the same types in-process and through the owner.

Each result turns into the JSON that `--json`, the HTTP API and MCP print (`to_dict`) and back
(`from_dict`), so a client of the owner rebuilds exactly what the owner's process had. This module
imports neither chromadb, torch nor numpy: clients import it and must start fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar

from . import documents
from .documents import Memory


def memory_from_dict(d: dict) -> Memory:
    """A Memory from its JSON form (as `Memory.to_dict` wrote it, plus any result fields around it)."""
    doc = {k: v for k, v in d.items() if k not in _RESULT_KEYS}
    return documents.from_dict(doc, default_id=doc.get("id", ""), default_time=datetime.now(timezone.utc))


# Keys that results put beside a memory's own fields; never part of the document.
_RESULT_KEYS = frozenset({"path", "duplicate", "warning", "score", "ranks", "similarity", "matched_terms",
                          "rank", "snippet", "content_truncated"})


class Record:
    """A dataclass that converts to and from JSON-able dicts.

    `_nested` names the fields holding other Records (or lists of them), so `from_dict` can rebuild them.
    """

    _nested: ClassVar[dict[str, type]] = {}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name not in d:
                continue
            value, kind = d[f.name], cls._nested.get(f.name)
            if kind is not None and value is not None:
                value = [kind.from_dict(v) for v in value] if isinstance(value, list) else kind.from_dict(value)
            kwargs[f.name] = value
        return cls(**kwargs)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (Record, Memory, Hit)):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, datetime):
        return documents.format_time(value)
    return value


# -- memories ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Hit:
    """One search result and every figure behind its place in the list (issue #12).

    - `score`: what the list is ordered by, 0–1. Semantic mode: the cosine similarity. Keyword mode:
      the share of the query's weight (IDF) whose terms the memory contains. Hybrid: a weighted sum
      of the two (docs/search.md says which weight for which kind of query).
    - `similarity`: cosine similarity between the query and the memory (0–1, clipped), or None when
      it was not computed (keyword mode).
    - `matched_terms`: the query's keyword terms found in the memory, as written in the query.
    - `rank`: 1-based place in this result list; `ranks`: 1-based place in each index that found it.
    - `snippet`: at most query.SNIPPET_CHARS of the content around the first matched term.
    """

    memory: Memory
    score: float
    path: str
    ranks: dict[str, int] = field(default_factory=dict)
    similarity: float | None = None
    matched_terms: tuple[str, ...] = ()
    rank: int = 0
    snippet: str = ""

    def to_dict(self) -> dict:
        return {"score": self.score, "similarity": self.similarity, "matched_terms": list(self.matched_terms),
                "rank": self.rank, "ranks": self.ranks, "snippet": self.snippet, "path": self.path,
                **self.memory.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Hit":
        return cls(memory_from_dict(d), d["score"], d["path"], d.get("ranks") or {}, d.get("similarity"),
                   tuple(d.get("matched_terms") or ()), d.get("rank") or 0, d.get("snippet") or "")


@dataclass(frozen=True)
class MemoryRecord:
    """One memory and where its file is (relative to data/memories/).

    `warning` is set when the file no longer parses and this is its last good version.
    """

    memory: Memory
    path: str
    warning: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = {"path": self.path, **self.memory.to_dict()}
        if self.warning is not None:
            d["warning"] = self.warning
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MemoryRecord":
        return cls(memory_from_dict(d), d["path"], d.get("warning"))


@dataclass(frozen=True)
class AddResult:
    memory: Memory
    path: str
    duplicate: bool  # True: the content was already stored, and `memory` is the existing one

    def to_dict(self) -> dict:
        return {"duplicate": self.duplicate, "path": self.path, **self.memory.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "AddResult":
        return cls(memory_from_dict(d), d["path"], d["duplicate"])


@dataclass(frozen=True)
class ListPage:
    memories: list[MemoryRecord]
    next_cursor: str | None = None  # give it back to get the next page; None: this was the last

    def to_dict(self) -> dict:
        return {"memories": [m.to_dict() for m in self.memories], "next_cursor": self.next_cursor}

    @classmethod
    def from_dict(cls, d: dict) -> "ListPage":
        return cls([MemoryRecord.from_dict(m) for m in d["memories"]], d.get("next_cursor"))


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    note: str | None = None  # e.g. why nothing came back

    def to_dict(self) -> dict:
        return {"hits": [h.to_dict() for h in self.hits], "note": self.note}

    @classmethod
    def from_dict(cls, d: dict) -> "SearchResult":
        return cls([Hit.from_dict(h) for h in d["hits"]], d.get("note"))


@dataclass(frozen=True)
class RemoveResult(Record):
    removed: list[str]  # ids removed
    dry_run: bool = False


# -- indexing -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvalidFile(Record):
    path: str  # relative to data/memories/
    reason: str


@dataclass
class ReconcileReport(Record):
    scanned: int = 0
    added: int = 0
    updated: int = 0
    moved: int = 0  # path or file state changed, content and fields did not: nothing re-embedded
    removed: int = 0
    embedded: int = 0  # texts the model actually encoded
    vectors_written: int = 0
    vectors_missing: int = 0  # catalog ids Chroma did not hold (chroma #6975), re-added
    vectors_orphaned: int = 0  # Chroma ids no file backs, removed
    invalid: list[InvalidFile] = field(default_factory=list)
    seconds: float = 0.0
    _nested: ClassVar[dict[str, type]] = {"invalid": InvalidFile}

    def absorb(self, earlier: "ReconcileReport") -> None:
        """Count an earlier pass's work in this report (the reconcile when a --no-daemon command
        opened the store did what `reindex` then found done: issue #24, item 5)."""
        for name in ("added", "updated", "moved", "removed", "embedded", "vectors_written"):
            setattr(self, name, getattr(self, name) + getattr(earlier, name))
        self.seconds += earlier.seconds


@dataclass(frozen=True)
class Stats(Record):
    memories: int
    types: dict[str, int]
    distinct_tags: int
    content_bytes: int
    invalid_files: int
    vectors: int
    embedding_cache: int  # vectors waiting for the index (kept once: issue #26), normally 0 at rest
    model: str
    last_reconcile: str | None
    disk_bytes: dict[str, int]
    root: str = ""
    added_per_day: dict[str, int] = field(default_factory=dict)  # "YYYY-MM-DD" (UTC) -> count, last 30 days
    tags: dict[str, int] = field(default_factory=dict)  # the 50 most used tags -> memories carrying each
    conflicts: int = 0  # open sync conflicts in data/conflicts/ (issue #20)


@dataclass(frozen=True)
class Health(Record):
    status: str  # "ok" once the startup reconcile is done, else "starting"
    version: str
    model_loaded: bool = False
    # Only for authenticated callers (over TCP with a token, the socket's own user):
    persistence: dict[str, Any] | None = None  # {"type": "filesystem", "writable": bool}
    index: dict[str, Any] | None = None  # catalog, Chroma and watcher state


# -- the owner --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OwnerStatus(Record):
    running: bool
    pid: int | None = None
    started_by: str | None = None  # "serve", "watch", "mcp", "on-demand"
    socket: str | None = None
    url: str | None = None
    since: str | None = None
    uptime: float | None = None  # seconds
    idle_exit: float | None = None  # seconds of idleness after which it exits; None: never
    idle_left: float | None = None  # seconds until it exits if nothing comes in
    ready: bool = False
    model_loaded: bool = False


# -- backups --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupInfo(Record):
    name: str
    path: str  # relative to the store root when inside it
    kind: str  # "backup" / "pre-restore"
    created: str  # UTC, ISO-8601 with Z
    size: int
    compression: str
    status: str  # a key of BackupList.statuses: ok / checksum ok / unverified / mismatch / corrupt / …
    reason: str = ""  # why, for a bad status
    encrypted: bool = False
    retention: list[str] = field(default_factory=list)  # why it is kept; ["would be pruned"] otherwise


@dataclass(frozen=True)
class Stray(Record):
    name: str
    reason: str  # "not a memfs backup (…)": left alone by retention


@dataclass(frozen=True)
class BackupList(Record):
    backup_dir: str
    backups: list[BackupInfo]
    policy: str = ""  # the retention policy in force, in words
    statuses: dict[str, str] = field(default_factory=dict)  # what each status means
    strays: list[Stray] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)  # leftovers of an interrupted backup
    _nested: ClassVar[dict[str, type]] = {"backups": BackupInfo, "strays": Stray}

    @property
    def bad(self) -> list[BackupInfo]:
        from .restore import BAD_STATUSES

        return [b for b in self.backups if b.status in BAD_STATUSES]


@dataclass(frozen=True)
class OffsiteResult(Record):
    dest: str
    ok: bool
    dry_run: bool = False
    copied: list[str] = field(default_factory=list)  # uploaded and verified by checksum
    already_there: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)  # remote copies retention no longer keeps
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BackupResult(Record):
    backup: str  # path of the archive (relative to the root when inside it)
    name: str
    size: int
    md5: str
    encrypted: bool = False
    pruned: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # e.g. a pruned pre-restore snapshot, named
    offsite: OffsiteResult | None = None  # with copy_to: a failed copy leaves the local backup in place
    _nested: ClassVar[dict[str, type]] = {"offsite": OffsiteResult}


@dataclass(frozen=True)
class PruneEntry(Record):
    name: str
    keep: bool
    reasons: list[str]


@dataclass(frozen=True)
class PruneResult(Record):
    dry_run: bool
    backups: list[PruneEntry]
    _nested: ClassVar[dict[str, type]] = {"backups": PruneEntry}


@dataclass(frozen=True)
class Problem(Record):
    check: str  # layout / memory / duplicate-id / catalog / vectors / model / backup / conflict
    path: str
    message: str
    fixable: bool = False  # derived data that `--fix` repairs
    last_good: str | None = None  # an invalid file's id whose last good version is still served


@dataclass(frozen=True)
class ValidationResult(Record):
    ok: bool
    memory_files: int
    seconds: float
    problems: list[Problem]
    fixed: int = 0
    pending: int = 0  # memories whose vectors are still being made (issue #24, item 5): not a problem
    _nested: ClassVar[dict[str, type]] = {"problems": Problem}


@dataclass(frozen=True)
class RestoreSummary(Record):
    archive: str
    memory_count: int | None
    embedded: int = 0
    pre_restore: str | None = None
    problems: list[Problem] = field(default_factory=list)
    dry_run: bool = False
    created_at: str | None = None
    _nested: ClassVar[dict[str, type]] = {"problems": Problem}
