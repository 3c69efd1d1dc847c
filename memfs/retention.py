"""Grandfather-father-son retention with restic `forget` semantics.

For each rule (daily, weekly, monthly) walk the backups newest first and keep the newest backup of each
bucket (UTC calendar day, ISO week, calendar month) until the rule has kept its count of buckets. Only
buckets that have backups count: a gap of empty days does not use up the daily allowance. Each rule
counts on its own and a backup is kept if any rule keeps it; the reasons say which.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Sequence

from .errors import BadRequestError


@dataclass(frozen=True)
class Retention:
    """How many backups to keep: GFS counts for regular backups, a count for pre-restore snapshots.
    Every interface builds one (`--keep-daily`…, the HTTP body's keep_* fields) and hands it down."""

    daily: int = 7
    weekly: int = 4
    monthly: int = 12
    pre_restore: int = 3
    # A pre-restore snapshot younger than this is never pruned, whatever --keep-pre-restore says.
    pre_restore_days: int = 7

    def __post_init__(self) -> None:
        for name in ("daily", "weekly", "monthly", "pre_restore", "pre_restore_days"):
            if getattr(self, name) < 0:
                raise BadRequestError(f"keep-{name.replace('_', '-')} must be 0 or more")


@dataclass(frozen=True)
class Decision:
    created: datetime
    keep: bool
    reasons: tuple[str, ...]  # e.g. ("daily 2025-03-04", "monthly 2025-03"); empty when deleted


_RULES: list[tuple[str, Callable[[datetime], str]]] = [
    ("daily", lambda t: t.strftime("%Y-%m-%d")),
    ("weekly", lambda t: "%04d-W%02d" % t.isocalendar()[:2]),
    ("monthly", lambda t: t.strftime("%Y-%m")),
]


def decide(times: Sequence[datetime], policy: Retention) -> list[Decision]:
    """One decision per time, in the order given. Times should be UTC."""
    order = sorted(range(len(times)), key=lambda i: times[i], reverse=True)
    reasons: dict[int, list[str]] = {i: [] for i in order}
    for rule, bucket_of in _RULES:
        allowance = getattr(policy, rule)
        last_bucket = None
        for i in order:
            if allowance <= 0:
                break
            bucket = bucket_of(times[i])
            if bucket != last_bucket:
                reasons[i].append(f"{rule} {bucket}")
                last_bucket = bucket
                allowance -= 1
    return [Decision(times[i], bool(reasons[i]), tuple(reasons[i])) for i in range(len(times))]
