"""mcp-memory-service's forms of input, read for its tools (memfs.mcp.compat) and for its 12.x arguments
to the native tools (memfs.mcp.compat_args): tags as a list or one comma-separated string (split_tags),
and a time expression inside a query (parse_timeframe: "what did we decide last week").
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from typing import Any

from mcp.server.mcpserver.exceptions import ToolError

from ..documents import normalize_tags
from ..timeparse import parse_when


def split_tags(value: Any) -> list[str]:
    """Tags as mcp-memory-service takes them: a list, or one string of comma-separated tags."""
    if value is None:
        return []
    if isinstance(value, str):
        return list(normalize_tags(value.split(",")))
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return list(normalize_tags(value))
    raise ToolError('tags must be a list of strings or a comma-separated string, e.g. ["a", "b"] or "a,b"')


# -- recall_memory's time expressions -----------------------------------------------------------------

_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "ten": 10}
_TIME = re.compile(
    r"\b(?:(?P<named>today|yesterday|this week|last week|this month|last month|this year|last year)"
    r"|(?:(?:in the )?(?:last|past) (?P<n>\d+|a|an|one|two|three|four|five|six|seven|ten) (?P<unit>days?|weeks?|months?|years?))"
    r"|(?:(?P<n2>\d+|a|an|one|two|three|four|five|six|seven|ten) (?P<unit2>days?|weeks?|months?|years?) ago))\b",
    re.IGNORECASE)
# Where a named period ends: the start of the one after it (its start is memfs.timeparse's).
_ENDS = {"yesterday": "today", "last week": "this week", "last month": "this month", "last year": "this year"}


def parse_timeframe(query: str, now: datetime | None = None) -> tuple[str, datetime | None, datetime | None]:
    """(the query without its time expression, since, until): "what did we decide last week" ->
    ("what did we decide", Monday a week ago, this Monday). No expression: (query, None, None).

    Finding the expression in the text is this module's; what instant it names is memfs.timeparse's,
    the one parser of times for every door (#19)."""
    now = now or datetime.now(timezone.utc)
    m = _TIME.search(query)
    if not m:
        return query, None, None
    named = (m.group("named") or "").lower()
    until: datetime | None = None
    if named:
        since = parse_when(named, now=now)
        until = parse_when(_ENDS[named], now=now) if named in _ENDS else None
    elif m.group("unit"):
        since = parse_when(f"{_count(m.group('n'))} {m.group('unit').lower()}", now=now)
    else:  # "N days ago": that day
        since = parse_when(f"{_count(m.group('n2'))} {m.group('unit2').lower()} ago", now=now)
        since = since.replace(hour=0, minute=0, second=0, microsecond=0)
        until = since + timedelta(days=1)
    rest = " ".join((query[:m.start()] + " " + query[m.end():]).split()).strip(" ,.?!")
    return rest, since, until


def _count(word: str) -> int:
    return int(word) if word.isdigit() else _NUMBERS[word.lower()]
