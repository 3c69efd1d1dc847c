"""Search and list filters, search hits, and rank fusion: the vocabulary the indexes share."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Literal

from .documents import Memory, format_time, parse_time

Match = Literal["any", "all"]
Mode = Literal["semantic", "keyword", "hybrid"]
MODES: tuple[str, ...] = ("semantic", "keyword", "hybrid")

# Reciprocal rank fusion's damping constant, as in Cormack et al. (2009) and most hybrid engines.
RRF_K = 60


@dataclass(frozen=True)
class Filters:
    """Applied by each index before its top-k cut, never to a cut list afterwards."""

    tags: tuple[str, ...] = ()
    match: Match = "any"
    type: str | None = None
    since: datetime | None = None  # created_at >= since
    until: datetime | None = None  # created_at < until

    def __post_init__(self):
        if self.match not in ("any", "all"):
            raise ValueError(f"match must be 'any' or 'all', not {self.match!r}")

    @property
    def empty(self) -> bool:
        return not self.tags and self.type is None and self.since is None and self.until is None

    def to_dict(self) -> dict:
        return {"tags": list(self.tags), "match": self.match, "type": self.type,
                "since": format_time(self.since) if self.since else None,
                "until": format_time(self.until) if self.until else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Filters":
        since, until = d.get("since"), d.get("until")
        return cls(tags=tuple(d.get("tags") or ()), match=d.get("match") or "any", type=d.get("type"),
                   since=parse_time(since, "since") if since else None,
                   until=parse_time(until, "until") if until else None)


@dataclass(frozen=True)
class Hit:
    memory: Memory
    score: float
    path: str
    ranks: dict[str, int] = field(default_factory=dict)  # 1-based rank in each index that found it

    def to_dict(self) -> dict:
        return {"score": self.score, "path": self.path, "ranks": self.ranks, **self.memory.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> "Hit":
        from .results import memory_from_dict

        return cls(memory_from_dict(d), d["score"], d["path"], d.get("ranks") or {})


def reciprocal_rank_fusion(rankings: dict[str, list[str]], k: int = RRF_K) -> list[tuple[str, float, dict[str, int]]]:
    """Fuse ranked id lists: score(id) = sum over lists of 1 / (k + rank). Best first."""
    scores: dict[str, float] = {}
    ranks: dict[str, dict[str, int]] = {}
    for name, ids in rankings.items():
        for rank, mem_id in enumerate(ids, start=1):
            scores[mem_id] = scores.get(mem_id, 0.0) + 1.0 / (k + rank)
            ranks.setdefault(mem_id, {})[name] = rank
    order: Iterable[str] = sorted(scores, key=lambda i: (-scores[i], i))
    return [(i, scores[i], ranks[i]) for i in order]
