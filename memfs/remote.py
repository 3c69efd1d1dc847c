"""The operations (memfs.ops.Operations) as a client of the owner, over its Unix socket or TCP.

Stdlib only (http.client), and nothing heavy imported: a `memfs search` through a warm owner must
start and answer in a fraction of a second. Results are rebuilt from JSON into the same types the
owner's process had; an error comes back as the same memfs.errors class with the same message.
"""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.parse
from typing import Any, Iterable

from .errors import MemfsError, OwnerUnavailableError, error_class
from .ops import Progress, Retention
from .query import Filters, Mode
from .results import (AddResult, BackupList, BackupResult, Health, ListPage, MemoryRecord, OwnerStatus,
                      PruneResult, ReconcileReport, RemoveResult, RestoreSummary, SearchResult, Stats,
                      ValidationResult)


class OwnerGoneError(OwnerUnavailableError):
    """The owner's socket refused or dropped the connection. `sent`: the request may have been applied."""

    def __init__(self, message: str, sent: bool):
        super().__init__(message)
        self.sent = sent


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class RemoteOperations:
    """`RemoteOperations(socket="/…/data/memfs.sock")` or `RemoteOperations(url="http://…", token=…)`."""

    def __init__(self, *, socket: str | None = None, url: str | None = None, token: str | None = None,
                 timeout: float = 3600.0, ready_wait: float = 120.0):
        if (socket is None) == (url is None):
            raise ValueError("give a socket path or a URL")
        self.socket, self.url, self.token = socket, url.rstrip("/") if url else None, token
        self.timeout = timeout
        self.ready_wait = ready_wait  # how long to wait for an owner that is still starting
        self._conn: http.client.HTTPConnection | None = None

    @property
    def where(self) -> str:
        return self.url or f"the owner's socket {self.socket}"

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self.socket is not None:
                self._conn = _UnixConnection(self.socket, self.timeout)
            else:
                u = urllib.parse.urlsplit(self.url)
                cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
                self._conn = cls(u.hostname, u.port, timeout=self.timeout)
        return self._conn

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        """One call; waits (up to ready_wait) while the owner answers 503 "starting"."""
        if query:
            path += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        deadline = time.monotonic() + self.ready_wait
        while True:
            status, data = self._send(method, path, body)
            if status == 503 and isinstance(data, dict) and data.get("error", {}).get("code") == "not_ready" \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
                continue
            break
        if status >= 400:
            err = data.get("error") if isinstance(data, dict) else None
            if not isinstance(err, dict):
                raise MemfsError(f"HTTP {status} from {self.where}")
            raise error_class(str(err.get("code")))(str(err.get("message")))
        return data

    def _send(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if self.token and self.url:
            headers["Authorization"] = f"Bearer {self.token}"
        payload = json.dumps(body).encode() if body is not None else None
        conn = self._connection()
        sent = False
        try:
            conn.request(method, path, body=payload, headers=headers)
            sent = True
            resp = conn.getresponse()
            raw = resp.read()
        except (ConnectionError, FileNotFoundError, http.client.RemoteDisconnected, http.client.BadStatusLine,
                socket.timeout, OSError) as e:
            self.close()
            raise OwnerGoneError(f"lost the connection to {self.where} ({e.__class__.__name__}: {e})", sent) from None
        if resp.getheader("connection", "").lower() == "close":
            self.close()
        try:
            return resp.status, json.loads(raw or b"null")
        except ValueError:
            return resp.status, None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> "RemoteOperations":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- memories -----------------------------------------------------------------------------------

    def add(self, content: str, *, tags: Iterable[str] = (), type: str = "note", metadata: dict | None = None,
            allow_duplicate: bool = False) -> AddResult:
        return AddResult.from_dict(self.request("POST", "/memories", {
            "content": content, "tags": list(tags), "type": type, "metadata": metadata or {},
            "allow_duplicate": allow_duplicate}))

    def get(self, mem_id: str) -> MemoryRecord:
        return MemoryRecord.from_dict(self.request("GET", _memory_path(mem_id)))

    def update(self, mem_id: str, *, content: str | None = None, tags: Iterable[str] | None = None,
               add_tags: Iterable[str] = (), remove_tags: Iterable[str] = (), type: str | None = None,
               metadata: dict | None = None) -> MemoryRecord:
        body = {"content": content, "tags": list(tags) if tags is not None else None, "add_tags": list(add_tags),
                "remove_tags": list(remove_tags), "type": type, "metadata": metadata or None}
        return MemoryRecord.from_dict(self.request("PATCH", _memory_path(mem_id), body))

    def remove(self, mem_id: str) -> MemoryRecord:
        return MemoryRecord.from_dict(self.request("DELETE", _memory_path(mem_id))["memory"])

    def list(self, filters: Filters = Filters(), *, limit: int = 50, cursor: str | None = None) -> ListPage:
        f = filters.to_dict()
        return ListPage.from_dict(self.request("GET", "/memories", query={
            "tag": f["tags"], "match": f["match"], "type": f["type"], "since": f["since"], "until": f["until"],
            "limit": limit, "cursor": cursor}))

    def search(self, query: str, *, k: int = 5, mode: Mode = "hybrid", filters: Filters = Filters()) -> SearchResult:
        return SearchResult.from_dict(self.request("POST", "/search", {"query": query, "k": k, "mode": mode,
                                                                       **filters.to_dict()}))

    # -- the store as a whole -----------------------------------------------------------------------

    def reindex(self, *, progress: Progress | None = None) -> ReconcileReport:
        return ReconcileReport.from_dict(self.request("POST", "/reindex"))

    def stats(self) -> Stats:
        return Stats.from_dict(self.request("GET", "/stats"))

    def health(self) -> Health:
        status, data = self._send("GET", "/health", None)
        return Health.from_dict(data)

    def status(self) -> OwnerStatus:
        return OwnerStatus.from_dict(self.request("GET", "/owner"))

    def stop(self) -> None:
        self.request("POST", "/owner/stop")

    # -- backups ------------------------------------------------------------------------------------

    def backup(self, *, compression: str = "gz", prune: bool = True, retention: Retention = Retention(),
               backup_dir: str | None = None, progress: Progress | None = None) -> BackupResult:
        return BackupResult.from_dict(self.request("POST", "/backups", {
            "compression": compression, "prune": prune, "backup_dir": backup_dir, **_retention(retention)}))

    def list_backups(self, *, retention: Retention = Retention(), verify: bool = False,
                     backup_dir: str | None = None) -> BackupList:
        return BackupList.from_dict(self.request("GET", "/backups", query={
            "verify": str(verify).lower(), "backup_dir": backup_dir, **_retention(retention)}))

    def restore(self, archive: str, *, verify: bool = True, dry_run: bool = False, backup_dir: str | None = None,
                progress: Progress | None = None) -> RestoreSummary:
        return RestoreSummary.from_dict(self.request("POST", "/backups/restore", {
            "archive": archive, "verify": verify, "dry_run": dry_run, "backup_dir": backup_dir}))

    def validate(self, *, backups: bool = False, fix: bool = False, backup_dir: str | None = None,
                 progress: Progress | None = None) -> ValidationResult:
        return ValidationResult.from_dict(self.request("POST", "/validate", {
            "backups": backups, "fix": fix, "backup_dir": backup_dir}))

    def prune(self, *, retention: Retention = Retention(), dry_run: bool = False,
              backup_dir: str | None = None) -> PruneResult:
        return PruneResult.from_dict(self.request("POST", "/backups/prune", {
            "backup_dir": backup_dir, **_retention(retention)}, query={"dry_run": str(dry_run).lower()}))

    # -- lookups and bulk removal (issue #10) -------------------------------------------------------

    def find(self, *, content_hash: str) -> MemoryRecord:
        return MemoryRecord.from_dict(self.request("GET", "/find", query={"content_hash": content_hash}))

    def remove_matching(self, filters: Filters, *, dry_run: bool = True, limit: int = 1000) -> RemoveResult:
        return RemoveResult.from_dict(self.request("POST", "/remove-matching", {
            **filters.to_dict(), "dry_run": dry_run, "limit": limit}))


def _memory_path(mem_id: str) -> str:
    return "/memories/" + urllib.parse.quote(mem_id, safe="")


def _retention(r: Retention) -> dict:
    return {"keep_daily": r.daily, "keep_weekly": r.weekly, "keep_monthly": r.monthly,
            "keep_pre_restore": r.pre_restore}
