"""Times as people write them, for `--since` / `--until` (issue #12): `7d`, `2w`, `yesterday`, ISO dates.

Each expression names one instant (UTC); the filters compare `created_at >= since` and
`created_at < until`, so `--since yesterday --until today` is all of yesterday.

| text | instant |
|---|---|
| `30m`, `12h`, `7d`, `2w` (also `7 days`, `2 weeks ago`, `3 months`: 30 days, `1 year`: 365) | that long before now |
| `now` | now |
| `today`, `yesterday` | 00:00 UTC of that day |
| `this week`, `last week` | Monday 00:00 UTC of that week |
| `this month`, `last month` | the 1st, 00:00 UTC |
| `this year`, `last year` | 1 January, 00:00 UTC |
| `2025-03-01`, `2025-03-01T09:00:00Z`, … | as written (a bare date is 00:00 UTC) |

Anything else raises InvalidTimeError, a usage error (exit code 2) whose message lists these forms.
It is the one reader of times for every door (#19): the CLI's --since, the HTTP API's `since`, MCP's
native `since` and its compatibility tools' "last week" in a query (memfs.mcp.compat_inputs) all come here.
This module imports nothing heavy: clients use it.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from .documents import parse_time
from .errors import EXIT_USAGE, InvalidDocumentError, MemfsError

_UNITS = {"m": "minutes", "min": "minutes", "mins": "minutes", "minute": "minutes", "minutes": "minutes",
          "h": "hours", "hr": "hours", "hrs": "hours", "hour": "hours", "hours": "hours",
          "d": "days", "day": "days", "days": "days",
          "w": "weeks", "wk": "weeks", "wks": "weeks", "week": "weeks", "weeks": "weeks",
          # a month is 30 days and a year 365, as mcp-memory-service's recall_memory counts them
          "month": "months", "months": "months", "y": "years", "year": "years", "years": "years"}
_DAYS = {"months": 30, "years": 365}
_AGO = re.compile(r"^(\d+)\s*([a-z]+)(?:\s+ago)?$")

FORMS = "7d, 12h, 2w, '3 days ago', today, yesterday, 'last week', 'last month', 'this year', or an ISO date such as 2025-03-01"


class InvalidTimeError(MemfsError, ValueError):
    """A --since / --until value that is neither a relative time nor an ISO-8601 date: a usage error."""

    exit_code = EXIT_USAGE
    http_status = 422
    code = "bad_request"  # a client of the owner raises BadRequestError: the same exit code and message

    def __init__(self, value: str, option: str = "time"):
        self.value = value
        self.option = option
        super().__init__(f"{option}: cannot read {value!r} as a time; write {FORMS}")


def parse_when(text: str, *, now: datetime | None = None, option: str = "time") -> datetime:
    """The UTC instant `text` names (module docstring), relative to `now` (default: the current time).

    `option` names the flag in the error message (e.g. '--since').
    """
    if not isinstance(text, str) or not text.strip():
        raise InvalidTimeError(str(text), option)
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    s = " ".join(text.strip().lower().split())
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if s == "now":
        return now
    if s == "today":
        return midnight
    if s == "yesterday":
        return midnight - timedelta(days=1)
    if m := re.fullmatch(r"(this|last) (week|month|year)", s):
        return _period_start(midnight, m.group(2), previous=m.group(1) == "last")
    if m := _AGO.match(s):
        unit = _UNITS.get(m.group(2))
        if unit is None:
            raise InvalidTimeError(text, option)
        count = int(m.group(1))
        if unit in _DAYS:
            unit, count = "days", count * _DAYS[unit]
        try:
            return now - timedelta(**{unit: count})
        except OverflowError:  # `99999999999d` (#19: a 500 over HTTP, a traceback in the CLI)
            raise InvalidTimeError(text, option) from None
    if not re.match(r"^\d{4}-\d{2}", s):
        raise InvalidTimeError(text, option)
    try:
        return parse_time(text, option)
    except InvalidDocumentError:
        raise InvalidTimeError(text, option) from None


def _period_start(midnight: datetime, period: str, previous: bool) -> datetime:
    if period == "week":
        start = midnight - timedelta(days=midnight.weekday())
        return start - timedelta(weeks=1) if previous else start
    if period == "month":
        start = midnight.replace(day=1)
        if previous:
            start = (start - timedelta(days=1)).replace(day=1)
        return start
    start = midnight.replace(month=1, day=1)
    return start.replace(year=start.year - 1) if previous else start
