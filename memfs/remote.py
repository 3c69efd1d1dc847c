"""The operations (memfs.ops.Operations) as a client of the owner, over its Unix socket or TCP.

Stdlib only (http.client), and nothing heavy imported: a `memfs search` through a warm owner must
start and answer in a fraction of a second. Results are rebuilt from JSON into the same types the
owner's process had; an error comes back as the same memfs.errors class with the same message.
"""

from __future__ import annotations

import http.client
import socket
import time
import urllib.parse
from typing import Any, Iterable

import orjson

from .errors import MemfsError, OwnerUnavailableError, error_class, permission_denied
from .ops import Progress, Retention
from .query import Filters, Mode
from .sync.client import RemoteSyncOperations
from .results import (AddResult, BackupList, BackupResult, Health, ListPage, MemoryRecord, OffsiteResult, OwnerStatus,
                      PruneResult, ReconcileReport, RemoveResult, RestoreSummary, SearchResult, Stats, ValidationResult)


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
        except PermissionError:
            # Another user's owner (issue #24, item 4): not "gone", and retrying cannot help.
            sock.close()
            raise permission_denied(self.unix_path, "the store's owner runs as {uid} (its socket "
                                                    f"{self.unix_path} is private)") from None
        except OSError:
            sock.close()
            raise
        self.sock = sock


class RemoteOperations(RemoteSyncOperations):
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

    def _headers(self) -> dict:
        headers = {"Content-Type": "application/json"}
        if self.token and self.url:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _send(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        headers = self._headers()
        payload = orjson.dumps(body) if body is not None else None
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
            return resp.status, orjson.loads(raw or b"null")
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

    def search(self, query: str, *, k: int = 5, mode: Mode = "hybrid", filters: Filters = Filters(),
               min_score: float | None = None) -> SearchResult:
        return SearchResult.from_dict(self.request("POST", "/search", {
            "query": query, "k": k, "mode": mode, "min_score": min_score, **filters.to_dict()}))

    # -- the store as a whole -----------------------------------------------------------------------

    def reindex(self, *, progress: Progress | None = None) -> ReconcileReport:
        return ReconcileReport.from_dict(self.request("POST", "/reindex"))

    def stats(self) -> Stats:
        return Stats.from_dict(self.request("GET", "/stats"))

    def revision(self) -> str:
        return self.request("GET", "/revision")["revision"]

    def health(self) -> Health:
        status, data = self._send("GET", "/health", None)
        return Health.from_dict(data)

    def status(self) -> OwnerStatus:
        return OwnerStatus.from_dict(self.request("GET", "/owner"))

    def stop(self) -> None:
        self.request("POST", "/owner/stop")

    # -- backups ------------------------------------------------------------------------------------

    def backup(self, *, compression: str = "gz", prune: bool = True, retention: Retention = Retention(),
               backup_dir: str | None = None, recipients: Iterable[str] = (), passphrase_file: str | None = None,
               copy_to: str | None = None, progress: Progress | None = None) -> BackupResult:
        return BackupResult.from_dict(self.request("POST", "/backups", {
            "compression": compression, "prune": prune, "backup_dir": backup_dir, "recipients": list(recipients),
            "passphrase_file": passphrase_file, "copy_to": copy_to, **_retention(retention)}))

    def list_backups(self, *, retention: Retention = Retention(), verify: str | None = None,
                     identity_file: str | None = None, backup_dir: str | None = None,
                     passphrase_file: str | None = None) -> BackupList:
        return BackupList.from_dict(self.request("GET", "/backups", query={
            "verify": verify, "identity_file": identity_file, "passphrase_file": passphrase_file,
            "backup_dir": backup_dir, **_retention(retention)}))

    def restore(self, archive: str, *, verify: bool = True, dry_run: bool = False, backup_dir: str | None = None,
                identity_file: str | None = None, passphrase_file: str | None = None,
                progress: Progress | None = None) -> RestoreSummary:
        return RestoreSummary.from_dict(self.request("POST", "/backups/restore", {
            "archive": archive, "verify": verify, "dry_run": dry_run, "backup_dir": backup_dir,
            "identity_file": identity_file, "passphrase_file": passphrase_file}))

    def validate(self, *, backups: bool = False, fix: bool = False, backup_dir: str | None = None,
                 identity_file: str | None = None, passphrase_file: str | None = None,
                 progress: Progress | None = None) -> ValidationResult:
        return ValidationResult.from_dict(self.request("POST", "/validate", {
            "backups": backups, "fix": fix, "backup_dir": backup_dir, "identity_file": identity_file,
            "passphrase_file": passphrase_file}))

    def prune(self, *, retention: Retention = Retention(), dry_run: bool = False,
              backup_dir: str | None = None) -> PruneResult:
        return PruneResult.from_dict(self.request("POST", "/backups/prune", {
            "backup_dir": backup_dir, **_retention(retention)}, query={"dry_run": str(dry_run).lower()}))

    def offsite_sync(self, dest: str, *, retention: Retention = Retention(), prune: bool = True,
                     dry_run: bool = False, backup_dir: str | None = None) -> OffsiteResult:
        return OffsiteResult.from_dict(self.request("POST", "/offsite/sync", {
            "dest": dest, "prune": prune, "dry_run": dry_run, "backup_dir": backup_dir, **_retention(retention)}))


    # -- in and out, key/value (results are rebuilt by their own modules, imported when used) ---------

    def export(self, out, *, format: str = "memfs", filter_tags: Iterable[str] = (), include_embeddings: bool = False):
        from .export import ExportReport

        status, report = self._stream("POST", "/export", {"format": format, "filter_tags": list(filter_tags),
                                                         "include_embeddings": include_embeddings}, out)
        return ExportReport.from_dict(report)

    def import_sources(self, sources: Iterable[str], *, format: str = "auto", dry_run: bool = False,
                       dedup: bool = True, source_tag: str | None = None, namespace: str | None = None,
                       progress: Progress | None = None):
        from .importers import ImportReport

        return ImportReport.from_dict(self.request("POST", "/import", {
            "sources": list(sources), "format": format, "dry_run": dry_run, "dedup": dedup,
            "source_tag": source_tag, "namespace": namespace}))

    def import_history(self) -> list[dict]:
        return self.request("GET", "/import/history")

    def import_verify(self, record_id: str):
        from .migrations import VerifyReport

        return VerifyReport.from_dict(self.request("POST", "/import/verify", {"record": record_id}))

    def kv_set(self, key: str, value: Any, *, namespace: str = "default", ttl: float | None = None,
               expires_at=None, tags: Iterable[str] = ()):
        from .kv import KVItem

        return KVItem.from_dict(self.request("PUT", _kv_path(namespace, key), {
            "value": value, "ttl": ttl, "expires_at": expires_at.isoformat() if expires_at else None,
            "tags": list(tags)}))

    def kv_get(self, key: str, *, namespace: str = "default"):
        from .kv import KVItem

        return KVItem.from_dict(self.request("GET", _kv_path(namespace, key)))

    def kv_list(self, *, namespace: str | None = "default", prefix: str | None = None, limit: int | None = None,
                offset: int = 0) -> list:
        from .kv import KVItem

        return [KVItem.from_dict(d) for d in self.request("GET", "/kv", query={
            "namespace": namespace, "all": "true" if namespace is None else None, "prefix": prefix,
            "limit": limit, "offset": offset})]

    def kv_rm(self, key: str, *, namespace: str = "default") -> list[str]:
        return self.request("DELETE", _kv_path(namespace, key))["removed"]

    # -- lookups and bulk removal (issue #10) -------------------------------------------------------

    def find(self, *, content_hash: str) -> MemoryRecord:
        return MemoryRecord.from_dict(self.request("GET", "/find", query={"content_hash": content_hash}))

    def remove_matching(self, filters: Filters, *, dry_run: bool = True, limit: int = 1000) -> RemoveResult:
        return RemoveResult.from_dict(self.request("POST", "/remove-matching", {
            **filters.to_dict(), "dry_run": dry_run, "limit": limit}))

    # -- the knowledge graph (issue #22) -------------------------------------------------------------

    def graph(self, action: str, args: dict) -> dict:
        return self.request("POST", "/graph/" + urllib.parse.quote(action, safe=""), args)

    def _stream(self, method: str, path: str, body: Any, out) -> tuple[int, Any]:
        """A request whose response body is copied to `out` as it arrives; its report is the
        X-Memfs-Report header."""
        conn = self._connection()
        try:
            conn.request(method, path, body=orjson.dumps(body), headers=self._headers())
            resp = conn.getresponse()
            if resp.status >= 400:
                data = orjson.loads(resp.read() or b"null")
                err = data.get("error", {}) if isinstance(data, dict) else {}
                raise error_class(str(err.get("code")))(str(err.get("message")))
            while chunk := resp.read(1 << 16):
                out.write(chunk)
            return resp.status, orjson.loads(resp.getheader("X-Memfs-Report") or "{}")
        except (ConnectionError, OSError, http.client.HTTPException) as e:
            self.close()
            raise OwnerGoneError(f"lost the connection to {self.where} ({e.__class__.__name__}: {e})", True) from None


def _kv_path(namespace: str, key: str) -> str:
    return f"/kv/{urllib.parse.quote(namespace, safe='')}/{urllib.parse.quote(key, safe='')}"



def _memory_path(mem_id: str) -> str:
    return "/memories/" + urllib.parse.quote(mem_id, safe="")


def _retention(r: Retention) -> dict:
    return {"keep_daily": r.daily, "keep_weekly": r.weekly, "keep_monthly": r.monthly,
            "keep_pre_restore": r.pre_restore, "keep_pre_restore_days": r.pre_restore_days}
