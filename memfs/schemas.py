"""One request schema per operation (#19), declared once and used by every door: the HTTP routes
(memfs.http), the MCP tools (memfs.mcp.native, memfs.mcp.compat), the extended-memory routes
(memfs.http.extended) and the CLI (memfs.cli, for its times).

What a schema checks: each field's type, and the bounds the operations check too (`k`, a page's
`limit`, from memfs.inputs), so a door's early refusal is the same `bad_request` the core would give.
What a value may *be* (a tag's length, NaN in metadata, a blank type) is the core's business
(memfs.inputs, applied by memfs.documents): every way in meets it there, with the same error. Times
(`since`, `until`, `expires_at`) are read by memfs.timeparse only, here, for every door.

No FastAPI, click or MCP import here: pydantic only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from . import inputs
from .errors import BadRequestError
from .query import Filters
from .retention import Retention
from .timeparse import parse_when

# -- field types, each with its bounds from memfs.inputs ----------------------------------------------

def _count(name: str, maximum: int, description: str = ""):
    """An int 1..maximum, refused with the core's own words (inputs.count_problem), bounds in the schema."""
    def check(value: int) -> int:
        if problem := inputs.count_problem(name, value, maximum):
            raise ValueError(problem)
        return value
    return Annotated[int, Field(json_schema_extra={"minimum": 1, "maximum": maximum}, description=description or None),
                     AfterValidator(check)]


K = _count("k", inputs.MAX_K, f"How many results, 1 to {inputs.MAX_K}.")
PageLimit = _count("limit", inputs.MAX_PAGE, f"Memories per page, 1 to {inputs.MAX_PAGE}.")
RemoveLimit = _count("limit", inputs.MAX_REMOVE)
# A time as people write it (memfs.timeparse: 7d, yesterday, last week, 2025-03-01…), parsed by when().
When = Annotated[str | None, Field(max_length=inputs.MAX_TIME_CHARS,
                                   description="ISO-8601 (2025-03-01), or relative: 7d, 12h, yesterday, last week.")]
Match = Literal["any", "all"]
SearchMode = Literal["semantic", "keyword", "hybrid"]


def when(text: str | None, option: str) -> datetime | None:
    """The one parser of times for every door (memfs.timeparse). None: not given; "" is refused, as the
    CLI's `--since ""` is."""
    return parse_when(text, option=option) if text is not None else None


def filters(tags=(), match: str = "any", type: str | None = None, since: str | None = None,
            until: str | None = None) -> Filters:
    """Filters from a request's fields: tags, match, type, and times read by when()."""
    return Filters(tags=tuple(tags or ()), match=match, type=type,  # type: ignore[arg-type]
                   since=when(since, "since"), until=when(until, "until"))


def first_error(e: ValidationError) -> str:
    """A pydantic error as one line: where, and what is wrong."""
    first = e.errors()[0] if e.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))


def validated(model: type[BaseModel], data: Any) -> Any:
    """`data` as `model`, or BadRequestError (a usage error, exit code 2) naming the first bad field."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise BadRequestError(first_error(e)) from None


# -- one model per operation that takes a body ----------------------------------------------------------

class MemoryIn(BaseModel):
    """add"""
    content: str
    tags: list[str] = Field(default_factory=list)
    type: str = "note"
    metadata: dict[str, Any] = Field(default_factory=dict)
    allow_duplicate: bool = False


class MemoryPatch(BaseModel):
    """update"""
    content: str | None = None
    tags: list[str] | None = None
    add_tags: list[str] = Field(default_factory=list)
    remove_tags: list[str] = Field(default_factory=list)
    type: str | None = None
    metadata: dict[str, Any] | None = None


class FiltersIn(BaseModel):
    tags: list[str] = Field(default_factory=list)
    match: Match = "any"
    type: str | None = None
    since: When = None
    until: When = None

    def filters(self) -> Filters:
        return filters(self.tags, self.match, self.type, self.since, self.until)


class ListIn(FiltersIn):
    """list"""
    limit: PageLimit = 50
    cursor: str | None = None


class SearchIn(FiltersIn):
    """search"""
    query: str
    k: K = 5
    mode: SearchMode = "hybrid"
    min_score: float | None = None


class RemoveMatchingIn(FiltersIn):
    """remove_matching"""
    dry_run: bool = True
    limit: RemoveLimit = 1000


class RetentionIn(BaseModel):
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 12
    keep_pre_restore: int = 3
    keep_pre_restore_days: int = 7
    backup_dir: str | None = None

    def retention(self) -> Retention:
        return Retention(self.keep_daily, self.keep_weekly, self.keep_monthly, self.keep_pre_restore,
                         self.keep_pre_restore_days)


class BackupIn(RetentionIn):
    """backup"""
    compression: Literal["gz", "zst"] = "gz"
    prune: bool = True
    recipients: list[str] = Field(default_factory=list, max_length=100)  # age / ssh public keys
    passphrase_file: str | None = None
    copy_to: str | None = Field(default=None, max_length=4096)


class OffsiteIn(RetentionIn):
    """offsite_sync"""
    dest: str = Field(max_length=4096)
    prune: bool = True
    dry_run: bool = False


class RestoreIn(BaseModel):
    """restore"""
    archive: str = Field(min_length=1, max_length=4096)
    verify: bool = True
    dry_run: bool = False
    backup_dir: str | None = None
    identity_file: str | None = None
    passphrase_file: str | None = None


class ExportIn(BaseModel):
    """export"""
    format: Literal["memfs", "mms"] = "memfs"
    filter_tags: list[str] = Field(default_factory=list, max_length=100)
    include_embeddings: bool = False


class ImportIn(BaseModel):
    """import_sources"""
    sources: list[str] = Field(min_length=1, max_length=1000)
    format: str = "auto"
    dry_run: bool = False
    dedup: bool = True
    source_tag: str | None = None
    namespace: str | None = None


class KVIn(BaseModel):
    """kv_set (the key and namespace come in the path)"""
    value: Any = None
    ttl: float | None = None
    expires_at: When = None
    tags: list[str] = Field(default_factory=list, max_length=100)

    def expires(self) -> datetime | None:
        return when(self.expires_at, "expires_at")


class ExtendedStoreIn(BaseModel):
    """kv_set as the extended-memory service's POST /store takes it (memfs.http.extended)."""
    model_config = ConfigDict(extra="ignore")
    key: str
    value: Any = None
    namespace: str | None = None
    ttl: float | None = None


class ValidateIn(BaseModel):
    """validate"""
    backups: bool = False
    fix: bool = False
    backup_dir: str | None = None
    identity_file: str | None = None
    passphrase_file: str | None = None
