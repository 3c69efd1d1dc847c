"""Moving memories in and out, and the key/value surface (issue #13), as operations (memfs.ops) in
the process that owns the store. A mixin of LocalOperations; the logic is in memfs.export,
memfs.importers, memfs.migrations and memfs.kv.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, BinaryIO, Iterable

from .admin import translated
from .errors import BadRequestError
from .ops import Progress


class TransferOperations:
    owner: object

    @translated
    def export(self, out: BinaryIO, *, format: str = "memfs", filter_tags: Iterable[str] = (),
               include_embeddings: bool = False):
        """Stream every live memory (with any of `filter_tags`) to `out` as one JSON document."""
        from .export import FORMATS, export

        if format not in FORMATS:
            raise BadRequestError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
        with self.owner.using() as store:
            return export(store, out, format=format, filter_tags=tuple(filter_tags),
                          include_embeddings=include_embeddings)

    @translated
    def import_sources(self, sources: Iterable[str], *, format: str = "auto", dry_run: bool = False,
                       dedup: bool = True, source_tag: str | None = None, namespace: str | None = None,
                       progress: Progress | None = None):
        """Import files of other stores (paths on the owner's machine); see memfs.importers."""
        from .importers import import_sources

        with self.owner.using() as store:
            return import_sources(store, list(sources), format=format, dry_run=dry_run, dedup=dedup,
                                  source_tag=source_tag, namespace=namespace, progress=progress)

    @translated
    def import_history(self) -> list[dict]:
        from .migrations import history

        return history(self.owner.layout)

    @translated
    def import_verify(self, record_id: str):
        from .migrations import verify

        with self.owner.using() as store:
            return verify(store, record_id)

    @translated
    def kv_set(self, key: str, value: Any, *, namespace: str = "default", ttl: float | None = None,
               expires_at: datetime | None = None, tags: Iterable[str] = ()):
        from .kv import kv_set

        with self.owner.using() as store:
            return kv_set(store, key, value, namespace=namespace, ttl=ttl, expires_at=expires_at, tags=tags)

    @translated
    def kv_get(self, key: str, *, namespace: str = "default"):
        from .kv import kv_get

        with self.owner.using() as store:
            return kv_get(store, key, namespace=namespace)

    @translated
    def kv_list(self, *, namespace: str | None = "default", prefix: str | None = None, limit: int | None = None,
                offset: int = 0) -> list:
        from .kv import kv_list

        with self.owner.using() as store:
            return kv_list(store, namespace=namespace, prefix=prefix, limit=limit, offset=offset)

    @translated
    def kv_rm(self, key: str, *, namespace: str = "default") -> list[str]:
        from .kv import kv_rm

        with self.owner.using() as store:
            return kv_rm(store, key, namespace=namespace)
