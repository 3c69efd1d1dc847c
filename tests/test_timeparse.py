"""Relative and absolute times for --since / --until (memfs.timeparse)."""

from datetime import datetime, timedelta, timezone

import pytest

from memfs.errors import EXIT_USAGE
from memfs.timeparse import InvalidTimeError, parse_when

# A Wednesday, mid-month, mid-afternoon.
NOW = datetime(2026, 3, 18, 15, 30, 0, tzinfo=timezone.utc)


def when(text):
    return parse_when(text, now=NOW)


@pytest.mark.parametrize("text, expected", [
    ("7d", NOW - timedelta(days=7)),
    ("7 days", NOW - timedelta(days=7)),
    ("3 days ago", NOW - timedelta(days=3)),
    ("2w", NOW - timedelta(weeks=2)),
    ("1 week ago", NOW - timedelta(weeks=1)),
    ("12h", NOW - timedelta(hours=12)),
    ("30m", NOW - timedelta(minutes=30)),
    ("now", NOW),
    ("today", datetime(2026, 3, 18, tzinfo=timezone.utc)),
    ("yesterday", datetime(2026, 3, 17, tzinfo=timezone.utc)),
    ("  Yesterday ", datetime(2026, 3, 17, tzinfo=timezone.utc)),
    ("this week", datetime(2026, 3, 16, tzinfo=timezone.utc)),   # Monday
    ("last week", datetime(2026, 3, 9, tzinfo=timezone.utc)),
    ("last  WEEK", datetime(2026, 3, 9, tzinfo=timezone.utc)),
    ("this month", datetime(2026, 3, 1, tzinfo=timezone.utc)),
    ("last month", datetime(2026, 2, 1, tzinfo=timezone.utc)),
    ("last year", datetime(2025, 1, 1, tzinfo=timezone.utc)),
    ("2025-03-01", datetime(2025, 3, 1, tzinfo=timezone.utc)),
    ("2025-03-01T09:00:00Z", datetime(2025, 3, 1, 9, tzinfo=timezone.utc)),
    ("2025-03-01T10:00:00+01:00", datetime(2025, 3, 1, 9, tzinfo=timezone.utc)),
])
def test_forms(text, expected):
    assert when(text) == expected


def test_last_month_in_january_is_december():
    jan = datetime(2026, 1, 10, 8, tzinfo=timezone.utc)
    assert parse_when("last month", now=jan) == datetime(2025, 12, 1, tzinfo=timezone.utc)


def test_since_yesterday_until_today_is_all_of_yesterday():
    assert when("today") - when("yesterday") == timedelta(days=1)


@pytest.mark.parametrize("text", ["", "   ", "soon", "7", "7x", "last fortnight", "2025-13-40", "yesterdayish",
                                  "d7", "next week", "-3d"])
def test_invalid_text_is_a_usage_error_naming_the_option(text):
    with pytest.raises(InvalidTimeError) as e:
        parse_when(text, now=NOW, option="--since")
    assert e.value.exit_code == EXIT_USAGE == 2
    assert "--since" in str(e.value) and "7d" in str(e.value) and "yesterday" in str(e.value)
    assert isinstance(e.value, ValueError)  # click's callbacks and pydantic validators both handle it


def test_default_now_is_the_current_time():
    before = datetime.now(timezone.utc)
    assert before - timedelta(days=1, seconds=5) <= parse_when("1d") <= datetime.now(timezone.utc) - timedelta(days=1)
