"""What sync operations return: plain data, the same in-process and through the owner (no heavy imports)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class SyncResult:
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SyncResult":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


@dataclass
class SyncStatus:
    replica: str
    remotes: list[dict]
    pending_changes: int | None
    conflicts: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "SyncStatus":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})
