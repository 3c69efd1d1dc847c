"""Key/value in memfs's own model (issue #13): a value is a memory with a `namespace` and a `key`.

- `(namespace, key)` is unique: `kv_set` on a taken key rewrites that memory (same id, same file).
  Two files written by hand with one (namespace, key) are tolerated; the newest is served.
- Values are any JSON value. A non-empty string is stored as the content itself (so it is searchable
  as written); anything else as its JSON text, with `metadata.value_type` saying how to read it back.
  A pickled value from an old extended-memory store is kept as an opaque base64 blob
  (`value_type: "base64-pickle"`): memfs never unpickles.
- `ttl` / `expires_at`: an expired memory is gone from get, list and search at once (the catalog
  filters on `expires_ts`); `sweep_expired` removes its file later and logs what it removed.
- Reads are counted (`accessed_at`, `access_count`) in the catalog's `access` table, never by rewriting
  the memory file on every read.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Iterable

import orjson

from . import documents, inputs
from .documents import Memory, utcnow
from .errors import BadRequestError, InvalidDocumentError, NotFoundError
from .filestore import fsync_dir
from .results import Record

if TYPE_CHECKING:
    from .store import MemoryStore

log = logging.getLogger("memfs")

DEFAULT_NAMESPACE = "default"
KV_TYPE = "kv"
TEXT, JSON, PICKLE = "text", "json", "base64-pickle"
PICKLE_WARNING = ("pickled value kept as an opaque base64 blob: memfs never unpickles "
                  "(decode it yourself only if you trust where it came from)")


def encode_value(value: Any) -> tuple[str, str]:
    """(content, value_type) for a JSON value."""
    if isinstance(value, str) and value.strip():
        return value, TEXT
    try:
        return orjson.dumps(value).decode(), JSON
    except TypeError as e:
        raise InvalidDocumentError(f"a value must be JSON (string, number, bool, null, list, object): {e}") from None


def decode_value(m: Memory) -> Any:
    """The value a memory holds, by its `metadata.value_type` (a hand-written file defaults to text)."""
    kind = m.metadata.get("value_type", TEXT)
    if kind == JSON:
        try:
            return orjson.loads(m.content)
        except orjson.JSONDecodeError:
            return m.content  # edited by hand into something else: serve the text rather than fail
    return m.content


def python_type_name(m: Memory) -> str:
    """The extended-memory service's `type` column for a value: str, int, float, bool, dict, list, none, pickle."""
    if m.metadata.get("value_type") == PICKLE:
        return "pickle"
    value = decode_value(m)
    return "none" if value is None else type(value).__name__


@dataclass(frozen=True)
class KVItem(Record):
    namespace: str
    key: str
    value: Any
    value_type: str  # text | json | base64-pickle
    type: str  # the Python type name, as the extended-memory service reports it
    id: str
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    accessed_at: datetime | None
    access_count: int
    warning: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> "KVItem":
        """Rebuild from `to_dict` (through the owner's socket), times included."""
        times = {n: documents.parse_time(d[n], n) if d.get(n) else None
                 for n in ("created_at", "updated_at", "expires_at", "accessed_at")}
        return cls(**{**{k: v for k, v in d.items() if k in cls.__dataclass_fields__}, **times})


def expired(m: Memory, now: datetime) -> bool:
    """Has the memory's `expires_at` passed? Then it is gone from every read; its file waits for the sweep."""
    return m.expires_at is not None and m.expires_at <= now


def _item(store: "MemoryStore", m: Memory) -> KVItem:
    ts, count = store.catalog.access_of([m.id]).get(m.id, (None, 0))
    kind = m.metadata.get("value_type", TEXT)
    return KVItem(namespace=m.namespace or DEFAULT_NAMESPACE, key=m.key or "", value=decode_value(m),
                  value_type=kind, type=python_type_name(m), id=m.id, created_at=m.created_at,
                  updated_at=m.updated_at, expires_at=m.expires_at,
                  accessed_at=datetime.fromtimestamp(ts, timezone.utc) if ts is not None else None,
                  access_count=count, warning=PICKLE_WARNING if kind == PICKLE else None)


def _live_id(store: "MemoryStore", namespace: str, key: str, now: datetime) -> str | None:
    for mem_id in store.catalog.ids_for_key(namespace, key):
        if not store.catalog.is_expired(mem_id, now.timestamp()):
            return mem_id
    return None


def _expiry(ttl: float | None, expires_at: datetime | None, now: datetime) -> datetime | None:
    if ttl is not None:
        if isinstance(ttl, bool) or not isinstance(ttl, (int, float)) or not math.isfinite(ttl) or ttl <= 0:
            raise BadRequestError(f"ttl must be a positive number of seconds, not {str(ttl)[:40]}")
        try:
            return now + timedelta(seconds=ttl)
        except OverflowError:  # {"ttl": 1e300}: once a 500 text/plain on the extended port (#19)
            raise BadRequestError(f"ttl {ttl:g} s ends after the year 9999; give a shorter ttl or none") from None
    return expires_at


def kv_set(store: "MemoryStore", key: str, value: Any, *, namespace: str = DEFAULT_NAMESPACE,
           ttl: float | None = None, expires_at: datetime | None = None, tags: Iterable[str] = (),
           metadata: dict | None = None, value_type: str | None = None) -> KVItem:
    """Store `value` under (namespace, key), replacing what the key held. `ttl` is in seconds.

    `value_type` forces how the value is kept (importers pass PICKLE for an opaque blob).
    """
    if not isinstance(key, str) or not key.strip():
        raise InvalidDocumentError("a key must be a non-empty string")
    inputs.check_text(key, "key", inputs.MAX_FIELD_CHARS)
    inputs.check_text(namespace, "namespace", inputs.MAX_FIELD_CHARS)
    # NaN, Infinity, 2**70, lone surrogates: refused, not written as null or a string (#19)
    inputs.check_json(value, "value")
    now = utcnow()
    content, kind = encode_value(value)
    kind = value_type or kind
    meta = {**(metadata or {}), "value_type": kind}
    expires = _expiry(ttl, expires_at, now)
    with store.mutex:
        mem_id = _live_id(store, namespace, key, now)
        if mem_id is None:
            # An expired holder of the key is removed first, so the key stays unique.
            for old in store.catalog.ids_for_key(namespace, key):
                store.remove(old)
            doc = {"content": content, "type": KV_TYPE, "namespace": namespace, "key": key,
                   "tags": list(tags), "metadata": meta}
            if expires is not None:
                doc["expires_at"] = documents.format_time(expires)
            m = store.add_many([doc], allow_duplicate=True)[0].memory
        else:
            old_m = store.get(mem_id)
            m = store.rewrite(mem_id, content=content, metadata={**old_m.metadata, **meta},
                               expires_at=expires, updated_at=now,
                               tags=documents.normalize_tags([*old_m.tags, *tags]))
        return _item(store, m)


def kv_get(store: "MemoryStore", key: str, *, namespace: str = DEFAULT_NAMESPACE, touch: bool = True) -> KVItem:
    """The value under (namespace, key); NotFoundError if none (or expired). Counts the read."""
    now = utcnow()
    with store.mutex:
        mem_id = _live_id(store, namespace, key, now)
        if mem_id is None:
            raise NotFoundError(f"no value for key {key!r} in namespace {namespace!r}")
        m = store.get(mem_id)
        if touch:
            store.catalog.touch([mem_id], now.timestamp())
        return _item(store, m)


def kv_list(store: "MemoryStore", *, namespace: str | None = DEFAULT_NAMESPACE, prefix: str | None = None,
            limit: int | None = None, offset: int = 0) -> list[KVItem]:
    """Live keyed memories in a namespace (None: all), sorted by namespace and key."""
    now = utcnow()
    with store.mutex:
        rows = store.catalog.keys_in(namespace, now.timestamp())
        seen: set[tuple[str, str]] = set()
        picked: list[str] = []
        for ns, key, _ in rows:
            if (ns, key) in seen or (prefix and not key.startswith(prefix)):
                continue
            seen.add((ns, key))
            picked.append(_live_id(store, ns, key, now) or "")
        picked = [i for i in picked if i][offset:None if limit is None else offset + limit]
        entries = store.catalog.get_many(picked)
        return [_item(store, entries[i].memory) for i in picked if i in entries]


def kv_rm(store: "MemoryStore", key: str, *, namespace: str = DEFAULT_NAMESPACE) -> list[str]:
    """Remove every memory holding (namespace, key). Returns the ids removed; NotFoundError if none."""
    with store.mutex:
        ids = store.catalog.ids_for_key(namespace, key)
        if not ids:
            raise NotFoundError(f"no value for key {key!r} in namespace {namespace!r}")
        for mem_id in ids:
            store.remove(mem_id)
        store.catalog.forget_access(ids)
        return ids


def sweep_expired(store: "MemoryStore", now: datetime | None = None) -> list[Memory]:
    """Delete the files of memories whose expires_at has passed, and their index entries.

    Each file is read again first: one edited to expire later (not yet reconciled) is left alone.
    Every removal is logged with its path and expiry, so a disappearing memory can be traced.
    """
    now = now or utcnow()
    removed: list[Memory] = []
    with store.mutex:
        for mem_id, rel in store.catalog.expired(now.timestamp()):
            path = store.layout.memories / rel
            try:
                m = store.read_file(rel)
            except (NotFoundError, InvalidDocumentError, OSError):
                continue  # gone or unreadable: reconcile deals with it, the sweep never guesses
            if m.id != mem_id or not expired(m, now):
                continue
            path.unlink(missing_ok=True)
            fsync_dir(path.parent)
            with store.catalog.transaction():
                store.catalog.remove([mem_id])
                store.catalog.forget_access([mem_id])
            store.vectors.delete([mem_id])
            log.info("expired: removed %s (id %s, key %s/%s, expired at %s)", rel, mem_id,
                     m.namespace, m.key, documents.format_time(m.expires_at))
            removed.append(m)
    return removed
