"""Prometheus metrics of an owner (issue #23): what `GET /metrics` answers, in the text exposition format.

The figures come from the operations interface (health, stats, status, list_backups) and from the
request counters of `RequestMetrics`, a plain ASGI wrapper the server puts in front of its routes.
Nothing here imports FastAPI.

More figures (sync lag, open conflicts, once sync lands) are added with `register(collector)`: a
collector is `collector(ops) -> iterable of Family`, called on every scrape; one that raises is
reported as `memfs_collector_errors_total` instead of breaking the scrape.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

log = logging.getLogger("memfs.metrics")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds; the API's routes answer in ms, a backup or a reindex in seconds to minutes.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass
class Family:
    """One metric family: its samples are (labels, value)."""

    name: str
    kind: str  # gauge / counter / histogram
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)
    suffixed: list[tuple[str, dict[str, str], float]] = field(default_factory=list)  # histogram parts

    def add(self, value: float, **labels: str) -> "Family":
        self.samples.append((labels, float(value)))
        return self

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        lines += [f"{self.name}{_labels(labels)} {_number(v)}" for labels, v in self.samples]
        lines += [f"{self.name}{suffix}{_labels(labels)} {_number(v)}" for suffix, labels, v in self.suffixed]
        return "\n".join(lines)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items()) + "}"


def _number(v: float) -> str:
    if v != v:
        return "NaN"
    return repr(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(v)


# -- requests and latency (counted by the ASGI wrapper) ------------------------------------------------


class RequestCounters:
    """Requests and their latency by route template (e.g. /memories/{mem_id:path}), method and status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], int] = {}
        self._latency: dict[tuple[str, str], list[float]] = {}  # [bucket counts…, sum, count]

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        with self._lock:
            key = (route, method, str(status))
            self._counts[key] = self._counts.get(key, 0) + 1
            h = self._latency.setdefault((route, method), [0.0] * (len(BUCKETS) + 2))
            for i, bound in enumerate(BUCKETS):
                if seconds <= bound:
                    h[i] += 1
            h[-2] += seconds
            h[-1] += 1

    def families(self) -> list[Family]:
        with self._lock:
            counts, latency = dict(self._counts), {k: list(v) for k, v in self._latency.items()}
        total = Family("memfs_http_requests_total", "counter", "HTTP requests answered, by route, method and status")
        for (route, method, status), n in sorted(counts.items()):
            total.add(n, route=route, method=method, status=status)
        hist = Family("memfs_http_request_duration_seconds", "histogram", "time to answer a request, by route")
        for (route, method), h in sorted(latency.items()):
            for bound, n in zip(BUCKETS, h):
                hist.suffixed.append(("_bucket", {"route": route, "method": method, "le": repr(bound)}, n))
            hist.suffixed.append(("_bucket", {"route": route, "method": method, "le": "+Inf"}, h[-1]))
            hist.suffixed.append(("_sum", {"route": route, "method": method}, h[-2]))
            hist.suffixed.append(("_count", {"route": route, "method": method}, h[-1]))
        return [total, hist]


class RequestMetrics:
    """ASGI wrapper: counts every HTTP request by the route that answered it (FastAPI puts the matched
    route in the scope), or "unmatched" (a 404, a refusal before routing: 401, 413)."""

    def __init__(self, app, *, counters: RequestCounters):
        self.app, self.counters = app, counters

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), 500

        async def sending(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.counters.observe(route, scope.get("method", ""), status, time.perf_counter() - start)


# -- the store's figures (through the operations interface) --------------------------------------------

_collectors: list[Callable[[Any], Iterable[Family]]] = []


def register(collector: Callable[[Any], Iterable[Family]]) -> None:
    """Add figures to every scrape (sync lag and open conflicts, when sync lands)."""
    if collector not in _collectors:
        _collectors.append(collector)


def unregister(collector: Callable[[Any], Iterable[Family]]) -> None:
    if collector in _collectors:
        _collectors.remove(collector)


class BackupAges:
    """Age of the newest verified backup. Each listing of backups/ (names and sizes) is verified (its
    checksum read) once, not on every scrape: a scrape every 15 s must not re-read gigabytes."""

    def __init__(self) -> None:
        self._seen: tuple | None = None
        self._newest_ok: datetime | None = None
        self._count = 0

    def families(self, ops) -> list[Family]:
        listing = ops.list_backups()
        key = tuple((b.name, b.size) for b in listing.backups)
        if key != self._seen:
            verified = ops.list_backups(verify="quick").backups
            ok = [b for b in verified if b.status in ("ok", "checksum ok") and b.kind == "backup"]
            self._newest_ok = max((_when(b.created) for b in ok), default=None)
            self._seen, self._count = key, len(listing.backups)
        age = Family("memfs_backup_newest_verified_age_seconds", "gauge",
                     "seconds since the newest backup whose checksum verifies was made (NaN: none)")
        age.add(time.time() - self._newest_ok.timestamp() if self._newest_ok else float("nan"))
        return [age, Family("memfs_backups", "gauge", "backups in the backup directory").add(self._count)]


def _when(iso: str) -> datetime:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def store_families(ops) -> list[Family]:
    """Memories by type, owner uptime and model state, indexing lag, invalid files."""
    stats, health, status = ops.stats(), ops.health(details=True), ops.status()
    index = health.index or {}
    by_type = Family("memfs_memories", "gauge", "memories in the catalog, by type")
    for kind, n in sorted(stats.types.items()):
        by_type.add(n, type=kind)
    return [
        by_type,
        Family("memfs_vectors", "gauge", "vectors in Chroma").add(stats.vectors),
        Family("memfs_invalid_files", "gauge", "files under memories/ that are not valid memories").add(
            stats.invalid_files),
        Family("memfs_index_queue_depth", "gauge",
               "file changes seen by the watcher and not yet applied to the indexes (indexing lag)").add(
            index.get("queue_depth") or 0),
        Family("memfs_index_reconcile_age_seconds", "gauge", "seconds since the last full reconcile").add(
            _age(stats.last_reconcile)),
        Family("memfs_embedded_total", "counter", "texts embedded by this owner since it started").add(
            index.get("embedded") or 0),
        Family("memfs_owner_uptime_seconds", "gauge", "seconds since this owner started").add(status.uptime or 0),
        Family("memfs_owner_ready", "gauge", "1 once the startup reconcile is done").add(int(status.ready)),
        Family("memfs_model_loaded", "gauge", "1 once the embedding model is in memory").add(int(health.model_loaded)),
    ]


def _age(iso: str | None) -> float:
    if not iso:
        return float("nan")
    try:
        return time.time() - datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return float("nan")


class Metrics:
    """Everything one scrape answers, for the owner behind `ops`."""

    def __init__(self, ops) -> None:
        self.ops = ops
        self.requests = RequestCounters()
        self.backups = BackupAges()
        self._errors = 0

    def render(self) -> str:
        families = store_families(self.ops) + self.requests.families()
        for part in [self.backups.families, *_collectors]:
            try:
                families += list(part(self.ops))
            except Exception:  # one failing part must not hide the others
                self._errors += 1
                log.exception("metrics collector %r failed", part)
        families.append(Family("memfs_collector_errors_total", "counter",
                               "metric collectors that failed (see the owner's log)").add(self._errors))
        return "\n".join(f.render() for f in families) + "\n"
