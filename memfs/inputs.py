"""What a memory and a request may hold: one set of limits, checked in the core for every way in.

Issue #15: validation that lived in the HTTP models let a PATCH write a file the store's own parser
refused, and a chunked body bypass the size check. So the rules live here, and are applied by the
code that reads memory files (memfs.documents.from_dict), which every write goes through too: the
CLI, the HTTP API, MCP and a file dropped by hand all meet the same limits and the same messages.

| limit                          | value            | applies to                                        |
|--------------------------------|------------------|---------------------------------------------------|
| MAX_CONTENT_CHARS              | 262,144 chars    | `content`                                         |
| MAX_ID_CHARS                   | 512 chars        | `id` (given, or a bare file's path)               |
| MAX_TAGS                       | 100              | tags on one memory                                |
| MAX_TAG_CHARS                  | 100 chars        | one tag                                           |
| MAX_TYPE_CHARS                 | 100 chars        | `type`                                            |
| MAX_FIELD_CHARS                | 1,024 chars      | `namespace`, `key`, `source`                      |
| MAX_METADATA_BYTES             | 65,536 bytes     | `metadata` as compact JSON (UTF-8)                |
| MAX_METADATA_DEPTH             | 32 levels        | objects/arrays nested in `metadata` (and extras)  |
| integers                       | signed 64-bit    | numbers in `metadata`                             |
| MAX_QUERY_CHARS                | 10,000 chars     | a search query                                    |
| MAX_K                          | 1,000            | hits one search returns                           |
| MAX_PAGE                       | 1,000            | memories one list page holds                      |
| MAX_REMOVE                     | 10,000           | memories one remove_matching removes              |
| MAX_TIME_CHARS                 | 100 chars        | a `since` / `until` / `expires_at` text           |
| MAX_REQUEST_BODY_BYTES         | 1 MiB            | an HTTP request body, counted as it is read       |
| MAX_HEADER_BYTES               | 64 KiB           | an HTTP request's line and headers                |
| HEADER_TIMEOUT_SECONDS         | 10 s             | to send a request's headers (and idle keep-alive) |
| BODY_TIMEOUT_SECONDS           | 10 s             | to send a request's body, once its headers are in |
| MIN_TOKEN_CHARS                | 16 chars         | MEMFS_API_TOKEN                                   |

Everywhere: text must be valid Unicode (no lone surrogates); numbers must be finite (no NaN or
Infinity: memory files are strict JSON). The hand-dropped *file* size limit is memfs/limits.py's.
"""

from __future__ import annotations

import math
import re
from typing import Any

import orjson

from .errors import BadRequestError, InvalidDocumentError
from .limits import MAX_CONTENT_CHARS  # one number for every way in, kept in memfs/limits.py

__all__ = ["MAX_CONTENT_CHARS"]  # re-exported: callers read inputs.MAX_CONTENT_CHARS beside the others

MAX_ID_CHARS = 512
MAX_TAGS = 100
MAX_TAG_CHARS = 100
MAX_TYPE_CHARS = 100
MAX_FIELD_CHARS = 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_METADATA_DEPTH = 32
MIN_INT, MAX_INT = -(2**63), 2**63 - 1
MAX_QUERY_CHARS = 10_000
MAX_K = 1000
MAX_PAGE = 1000
MAX_REMOVE = 10_000


def count_problem(name: str, value, maximum: int) -> str | None:
    """What is wrong with a count (k, a page's limit) that must be 1..maximum; None if nothing. One
    wording for every door: the core raises it, the request schemas (memfs.schemas) too."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        return f"{name} must be between 1 and {maximum}, not {str(value)[:30]}"
    return None
MAX_TIME_CHARS = 100
MAX_REQUEST_BODY_BYTES = 1 << 20
MAX_HEADER_BYTES = 64 * 1024
HEADER_TIMEOUT_SECONDS = 10
BODY_TIMEOUT_SECONDS = 10
MIN_TOKEN_CHARS = 16


def is_unicode(text: str) -> bool:
    """False for a string holding lone surrogates (JSON's "\\ud800" parses to one), which no UTF-8 file,
    SQLite column or response can carry."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: Any, name: str, max_chars: int, error: type = InvalidDocumentError) -> str:
    """A string within `max_chars` that can be written as UTF-8."""
    if not isinstance(value, str):
        raise error(f"'{name}' must be a string, got {type(value).__name__}")
    if len(value) > max_chars:
        raise error(f"'{name}' is {len(value):,} characters, over the limit of {max_chars:,} (memfs/limits.py "
                    "and memfs/inputs.py: MAX_CONTENT_CHARS and the others); split it or shorten it")
    if not is_unicode(value):
        raise error(f"'{name}' is not valid Unicode (it holds a lone surrogate such as \\ud800)")
    return value


def check_tags(tags: tuple[str, ...]) -> tuple[str, ...]:
    """Normalized tags (memfs.documents.normalize_tags): how many, how long, printable."""
    if len(tags) > MAX_TAGS:
        raise InvalidDocumentError(f"{len(tags)} tags; a memory may have at most {MAX_TAGS}")
    for t in tags:
        check_text(t, "tag", MAX_TAG_CHARS)
        if has_control(t):
            raise InvalidDocumentError(f"tag {t[:40]!r} holds a control character")
    return tags


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def has_control(text: str) -> bool:
    """C0/C1 control characters (newline, NUL, …): never part of a tag or a type."""
    return _CONTROL.search(text) is not None


def check_json(value: Any, name: str, *, max_bytes: int | None = None) -> None:
    """A value a memory file can hold and give back unchanged: strict JSON within the limits."""
    _walk(value, name, 0)
    if max_bytes is not None:
        size = len(orjson.dumps(value))
        if size > max_bytes:
            raise InvalidDocumentError(f"'{name}' is {size:,} bytes as JSON, over the limit of {max_bytes:,}")


def _walk(value: Any, where: str, depth: int) -> None:
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if not MIN_INT <= value <= MAX_INT:
            raise InvalidDocumentError(f"{where[:80]}: integer {str(value)[:30]}… is beyond 64 bits; store it as a string")
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidDocumentError(f"{where[:80]}: {value} is not a JSON number (memory files are strict JSON); "
                                       "store it as a string or null")
    elif isinstance(value, str):
        if not is_unicode(value):
            raise InvalidDocumentError(f"{where[:80]}: text with a lone surrogate (such as \\ud800) is not valid Unicode")
    elif isinstance(value, (dict, list)):
        if depth >= MAX_METADATA_DEPTH:
            raise InvalidDocumentError(f"{where[:80]}: nested more than {MAX_METADATA_DEPTH} levels deep")
        if isinstance(value, dict):
            for k, v in value.items():
                if not isinstance(k, str) or not is_unicode(k):
                    raise InvalidDocumentError(f"{where[:80]}: key {k!r} must be a valid Unicode string")
                _walk(v, f"{where}.{k[:40]}", depth + 1)
        else:
            for i, v in enumerate(value):
                _walk(v, f"{where}[{i}]", depth + 1)
    else:
        raise InvalidDocumentError(f"{where[:80]}: a {type(value).__name__} is not a JSON value")


def check_lookup(value: Any, name: str = "id") -> str:
    """A string used only to look something up (an id, a filter, a query): it must be one SQLite can
    bind; no length limit, so a memory stored under older rules can still be found and deleted."""
    if not isinstance(value, str) or not is_unicode(value):
        raise BadRequestError(f"{name} {value!r} is not a valid Unicode string")
    return value


def check_query(query: Any) -> str:
    return check_text(query, "query", MAX_QUERY_CHARS, BadRequestError)
