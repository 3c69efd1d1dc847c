"""The memory document format, v1 (DESIGN.md §3), and how it maps to and from JSON bytes.

Only `content` is required: a person may drop `{"content": "…"}` into data/memories/ and it is a
memory. Every other field gets a default, unknown fields are kept on rewrite, and the content hash is
always computed here, never read from the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

from . import inputs
from .errors import InvalidDocumentError, UnsupportedFormatError
from .limits import MAX_FILE_BYTES

FORMAT_NAME = "memfs.memory"
FORMAT_VERSION = 1
FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
DEFAULT_TYPE = "note"

# Fields this version understands; anything else is carried along untouched in `extra`.
_KNOWN = {
    "format", "id", "content", "tags", "type", "namespace", "key", "metadata",
    "created_at", "updated_at", "expires_at", "source", "content_hash",
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def format_time(t: datetime) -> str:
    """UTC ISO-8601 with a `Z`, to the microsecond when there is one."""
    t = t.astimezone(timezone.utc)
    text = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.microsecond:
        text += f".{t.microsecond:06d}"
    return text + "Z"


def parse_time(value: str, field_name: str = "time") -> datetime:
    """Accept ISO-8601 with `Z`, an offset, or nothing (taken as UTC); a bare date is midnight UTC."""
    if not isinstance(value, str):
        raise InvalidDocumentError(f"'{field_name}' must be an ISO-8601 string, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidDocumentError(
            f"'{field_name}' is not an ISO-8601 time: {value!r} (write e.g. 2025-01-31T09:00:00Z)"
        ) from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


def content_hash(content: str) -> str:
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def new_id() -> str:
    """64 random bits as 16 hex digits: short enough to type, unique at millions of memories."""
    return secrets.token_hex(8)


@dataclass(frozen=True)
class Memory:
    id: str
    content: str
    tags: tuple[str, ...] = ()
    type: str = DEFAULT_TYPE
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    namespace: str | None = None
    key: str | None = None
    expires_at: datetime | None = None
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def content_hash(self) -> str:
        return content_hash(self.content)

    def replace(self, **changes: Any) -> "Memory":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The document as written to disk: stable key order, optional fields only when set."""
        doc: dict[str, Any] = {"format": FORMAT, "id": self.id, "content": self.content,
                               "tags": list(self.tags), "type": self.type}
        for name in ("namespace", "key"):
            if getattr(self, name) is not None:
                doc[name] = getattr(self, name)
        doc["metadata"] = self.metadata
        doc["created_at"] = format_time(self.created_at)
        doc["updated_at"] = format_time(self.updated_at)
        if self.expires_at is not None:
            doc["expires_at"] = format_time(self.expires_at)
        if self.source is not None:
            doc["source"] = self.source
        doc.update(self.extra)
        return doc

    def to_bytes(self) -> bytes:
        """Pretty-printed JSON so a person can edit the file by hand.

        Every write goes through here, and is read back by the parser that reads files: a PATCH
        that wrote a file this parser refused broke list, search and delete for everyone (#15).
        Raises InvalidDocumentError, before anything is written, for a document that would not read.
        """
        # orjson writes NaN and Infinity as null: refuse them rather than store something else.
        inputs.check_json(self.metadata, "metadata")
        inputs.check_json(self.extra, "(unknown fields)")
        try:
            data = orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2) + b"\n"
        except orjson.JSONEncodeError as e:
            raise InvalidDocumentError(f"cannot be stored as JSON: {e}") from None
        from_bytes(data, default_id=self.id, default_time=self.created_at)
        return data


def _check_format(value: Any) -> None:
    if not isinstance(value, str) or "/" not in value:
        raise InvalidDocumentError(f"'format' must look like '{FORMAT}', got {value!r}")
    name, _, version = value.rpartition("/")
    if name != FORMAT_NAME or not version.isdigit():
        raise InvalidDocumentError(f"'format' must look like '{FORMAT}', got {value!r}")
    if int(version) > FORMAT_VERSION:
        raise UnsupportedFormatError(
            f"written by a newer memfs (format {value!r}; this version reads up to {FORMAT}): "
            "upgrade memfs to read it"
        )


def _tags(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise InvalidDocumentError("'tags' must be a list of strings, e.g. [\"ui\", \"prefs\"]")
    return inputs.check_tags(normalize_tags(value))


def normalize_tags(tags: Any) -> tuple[str, ...]:
    """Strip, drop empties and repeats, keep first-seen order."""
    seen: dict[str, None] = {}
    for t in tags:
        t = t.strip()
        if t:
            seen.setdefault(t, None)
    return tuple(seen)


def _optional_str(doc: dict, name: str) -> str | None:
    value = doc.get(name)
    if value is not None:
        inputs.check_text(value, name, inputs.MAX_FIELD_CHARS)
    return value


_BAD_ID = re.compile(r"[\x00-\x1f\x7f]|^\s|\s$")


def from_dict(doc: Any, *, default_id: str, default_time: datetime, check_limits: bool = True) -> Memory:
    """Build a Memory from parsed JSON, filling the defaults a bare file leaves out.

    `check_limits=False` is for rows the catalog already holds: they were checked when they came in.
    """
    if not isinstance(doc, dict):
        raise InvalidDocumentError(f"a memory must be a JSON object, got {type(doc).__name__}")
    if "format" in doc:
        _check_format(doc["format"])
    content = doc.get("content")
    if not isinstance(content, str):
        raise InvalidDocumentError("missing 'content' (a memory needs at least {\"content\": \"…\"})")
    if not content.strip():
        raise InvalidDocumentError("'content' is empty")
    if check_limits:
        # The limits (memfs.inputs) hold here, where files are read, so no way in can write what this
        # refuses; rows the catalog already holds were checked when they came in.
        inputs.check_text(content, "content", inputs.MAX_CONTENT_CHARS)
    mem_id = doc.get("id", default_id)
    if not isinstance(mem_id, str) or not mem_id or _BAD_ID.search(mem_id):
        raise InvalidDocumentError(f"'id' must be a non-empty string without control characters, got {mem_id!r:.80}")
    inputs.check_text(mem_id, "id", inputs.MAX_ID_CHARS)
    metadata = doc.get("metadata", {})
    if not isinstance(metadata, dict):
        raise InvalidDocumentError("'metadata' must be a JSON object")
    inputs.check_json(metadata, "metadata", max_bytes=inputs.MAX_METADATA_BYTES)
    mem_type = doc.get("type", DEFAULT_TYPE)
    if not isinstance(mem_type, str) or not mem_type.strip():
        raise InvalidDocumentError("'type' must be a non-empty string")
    inputs.check_text(mem_type.strip(), "type", inputs.MAX_TYPE_CHARS)
    if inputs.has_control(mem_type.strip()):
        raise InvalidDocumentError("'type' holds a control character")
    created = parse_time(doc["created_at"], "created_at") if "created_at" in doc else default_time
    updated = parse_time(doc["updated_at"], "updated_at") if "updated_at" in doc else created
    expires = doc.get("expires_at")
    return Memory(
        id=mem_id,
        content=content,
        tags=_tags(doc.get("tags", [])),
        type=mem_type.strip(),
        metadata=metadata,
        created_at=created,
        updated_at=updated,
        namespace=_optional_str(doc, "namespace"),
        key=_optional_str(doc, "key"),
        expires_at=parse_time(expires, "expires_at") if expires is not None else None,
        source=_optional_str(doc, "source"),
        # content_hash is derived, never trusted from the file, so it is dropped rather than kept.
        extra=_extra(doc),
    )


def from_checked(doc: dict[str, Any]) -> Memory:
    """The Memory whose `to_dict()` `doc` is, for a memory this process built with from_dict (an
    import's spool, memfs.import_plan): nothing is checked or normalized a second time."""
    expires = doc.get("expires_at")
    return Memory(id=doc["id"], content=doc["content"], tags=tuple(doc["tags"]), type=doc["type"],
                  metadata=doc["metadata"], created_at=datetime.fromisoformat(doc["created_at"]),
                  updated_at=datetime.fromisoformat(doc["updated_at"]), namespace=doc.get("namespace"),
                  key=doc.get("key"), expires_at=None if expires is None else datetime.fromisoformat(expires),
                  source=doc.get("source"), extra={k: v for k, v in doc.items() if k not in _KNOWN})


UTF8_BOM = b"\xef\xbb\xbf"


def check_file_size(size: int) -> None:
    """A memory file over MAX_FILE_BYTES is refused before it is read (issue #14, finding 4)."""
    if size > MAX_FILE_BYTES:
        raise InvalidDocumentError(
            f"the file is {size:,} bytes, over the {MAX_FILE_BYTES:,}-byte limit for a memory file "
            "(memfs.limits.MAX_FILE_BYTES); split it into several memories")


def _extra(doc: dict) -> dict[str, Any]:
    extra = {k: v for k, v in doc.items() if k not in _KNOWN}
    if extra:  # carried along and written back, so held to the same rules as metadata
        inputs.check_json(extra, "(unknown fields)", max_bytes=inputs.MAX_METADATA_BYTES)
    return extra


def from_bytes(data: bytes, *, default_id: str, default_time: datetime) -> Memory:
    """Parse a memory file's bytes; raises InvalidDocumentError with a reason a person can act on.

    A leading UTF-8 byte order mark (Windows Notepad writes one) is skipped, as RFC 8259 §8.1 lets a
    parser do; the file itself is left as it is (issue #14, finding 7).
    """
    check_file_size(len(data))
    skipped = len(UTF8_BOM) if data.startswith(UTF8_BOM) else 0
    data = data[skipped:]
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as u:
            # orjson says "surrogates not allowed" for any bad byte; say where the bad byte is.
            raise InvalidDocumentError(
                f"not UTF-8 (byte {skipped + u.start}: {data[u.start:u.start + 1].hex()}); save the file as UTF-8"
            ) from None
        raise InvalidDocumentError(f"invalid JSON ({e}); fix the file by hand or restore it") from None
    return from_dict(doc, default_id=default_id, default_time=default_time)
