"""Talk to a running `memfs serve` (DESIGN.md §4): the same methods and result types as MemoryStore,
over HTTP (stdlib only), so the CLI and manage_data.py work the same whoever owns the data.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from . import documents
from .catalog import Entry, Invalid
from .documents import Memory
from .errors import InvalidDocumentError, MemfsError, NotFoundError, StoreBusyError
from .filestore import FileState
from .query import Filters, Hit
from .results import AddResult, ReconcileReport

_NOT_TRACKED = FileState(0, 0, 0)  # the server does not send file states; nothing here reads them


def _memory(d: dict) -> Memory:
    doc = {k: v for k, v in d.items() if k not in ("path", "duplicate", "score", "ranks")}
    return documents.from_dict(doc, default_id=doc.get("id", ""), default_time=datetime.now(timezone.utc))


class RemoteStore:
    def __init__(self, url: str, token: str | None = None, timeout: float = 600.0):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        url = self.url + path
        if query:
            url += "?" + urllib.parse.urlencode({k: v for k, v in query.items() if v is not None}, doseq=True)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            try:
                err = json.loads(e.read())["error"]
                message = err["message"]
            except (ValueError, KeyError, TypeError):
                message = f"HTTP {e.code} from {url}"
            raise {404: NotFoundError, 409: StoreBusyError, 422: InvalidDocumentError}.get(e.code, MemfsError)(message) from None
        except (urllib.error.URLError, OSError) as e:
            raise MemfsError(f"cannot reach the memfs server at {self.url} ({getattr(e, 'reason', e)}); "
                             "is `memfs serve` running? Unset MEMFS_URL to use the files directly") from None

    def reachable(self) -> bool:
        """Does anything answer HTTP at the URL? (Any status counts: 503 while starting, 401 with auth.)"""
        try:
            urllib.request.urlopen(self.url + "/health", timeout=3).close()
            return True
        except urllib.error.HTTPError:
            return True
        except (urllib.error.URLError, OSError):
            return False

    # -- the MemoryStore surface the CLI uses ------------------------------------------------------

    def close(self) -> None:
        pass

    def add(self, content: str, *, tags: Iterable[str] = (), type: str = "note", metadata: dict | None = None,
            allow_duplicate: bool = False) -> AddResult:
        d = self.request("POST", "/memories", {"content": content, "tags": list(tags), "type": type,
                                               "metadata": metadata or {}, "allow_duplicate": allow_duplicate})
        return AddResult(_memory(d), d["path"], d["duplicate"])

    def get(self, mem_id: str) -> Memory:
        return _memory(self._get(mem_id))

    def path_of(self, mem_id: str) -> Path:
        return Path(self._get(mem_id)["path"])

    def _get(self, mem_id: str) -> dict:
        return self.request("GET", "/memories/" + urllib.parse.quote(mem_id, safe="/"))

    def update(self, mem_id: str, *, content=None, tags=None, add_tags=(), remove_tags=(), type=None,
               metadata=None) -> Memory:
        body = {"content": content, "tags": list(tags) if tags is not None else None, "add_tags": list(add_tags),
                "remove_tags": list(remove_tags), "type": type, "metadata": metadata or None}
        return _memory(self.request("PATCH", "/memories/" + urllib.parse.quote(mem_id, safe="/"), body))

    def remove(self, mem_id: str) -> Memory:
        d = self.request("DELETE", "/memories/" + urllib.parse.quote(mem_id, safe="/"))
        return _memory(d["memory"])

    def list(self, filters: Filters = Filters(), *, limit: int | None = None, offset: int = 0) -> list[Entry]:
        out: list[Entry] = []
        cursor = str(offset) if offset else None
        while limit is None or len(out) < limit:
            page = min(1000, (limit - len(out)) if limit is not None else 1000)
            d = self.request("GET", "/memories", query={
                "tag": list(filters.tags), "match": filters.match, "type": filters.type, "limit": page,
                "since": filters.since.isoformat() if filters.since else None,
                "until": filters.until.isoformat() if filters.until else None, "cursor": cursor})
            out += [Entry(_memory(m), m["path"], _memory(m).content_hash, _NOT_TRACKED) for m in d["memories"]]
            cursor = d["next_cursor"]
            if cursor is None:
                break
        return out

    def search(self, query: str, *, k: int = 5, mode: str = "hybrid", filters: Filters = Filters()) -> list[Hit]:
        d = self.request("POST", "/search", {
            "query": query, "k": k, "mode": mode, "tags": list(filters.tags), "match": filters.match,
            "type": filters.type, "since": filters.since.isoformat() if filters.since else None,
            "until": filters.until.isoformat() if filters.until else None})
        return [Hit(_memory(h), h["score"], h["path"], h["ranks"]) for h in d["hits"]]

    def stats(self) -> dict:
        return self.request("GET", "/stats")

    def reconcile(self, *, verify_vectors: bool = True, progress=None) -> ReconcileReport:
        d = self.request("POST", "/reindex")
        return ReconcileReport.from_dict(d)

    # -- what manage_data.py needs -------------------------------------------------------------------

    def backup(self, **body) -> dict:
        return self.request("POST", "/backups", body)

    def restore(self, name: str, verify: bool = True) -> dict:
        return self.request("POST", f"/backups/{urllib.parse.quote(name)}/restore", {"verify": verify})

    def validate(self, backups: bool = False) -> dict:
        return self.request("POST", "/validate", query={"backups": str(backups).lower()})

    def prune(self, dry_run: bool = False, **body) -> dict:
        return self.request("POST", "/backups/prune", body, query={"dry_run": str(dry_run).lower()})
