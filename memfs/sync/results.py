"""What sync operations return: plain data, the same in-process and through the owner (no heavy imports)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


class _Plain:
    """A result's wire form: a dict out, and back (keys this memfs does not know are dropped)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class SyncResult(_Plain):
    remote: str
    replica: str
    dry_run: bool = False
    pushed: int = 0
    pulled: int = 0
    applied: int = 0
    conflicts: int = 0
    embedded: int = 0
    vectors_reused: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    peers: list[str] = field(default_factory=list)
    would_push: list[str] = field(default_factory=list)
    would_pull: int = 0
    seconds: float = 0.0
    conflicts_open: int = 0


@dataclass
class SyncStatus(_Plain):
    replica: str
    remotes: list[dict]
    pending_changes: int | None
    conflicts: int


@dataclass
class CompactResult(_Plain):
    """What `memfs sync compact` did to this replica's own objects on the remote (memfs.sync.compact)."""

    remote: str
    replica: str
    dry_run: bool = False
    base: str | None = None  # the base object written (dry run: that would be); None: none needed
    objects_before: int = 0
    objects_removed: int = 0
    bytes_before: int = 0
    bytes_after: int = 0
    bytes_received: int = 0  # read back to verify and fold
    seconds: float = 0.0
