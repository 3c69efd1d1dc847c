"""GFS retention on synthetic timestamp sets; every expected set is written out by hand."""

from datetime import datetime, timedelta, timezone

from memfs.backups import create_backup, plan_prune
from memfs.filestore import Layout
from memfs.retention import Retention, decide


def t(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)


def kept(times: list[str], policy: Retention) -> set[str]:
    decisions = decide([t(x) for x in times], policy)
    return {x for x, d in zip(times, decisions) if d.keep}


def test_gaps_do_not_use_up_daily_allowance():
    times = ["2025-01-01 02:00", "2025-01-02 02:00", "2025-01-05 02:00", "2025-01-09 02:00", "2025-01-10 02:00"]
    assert kept(times, Retention(daily=3, weekly=0, monthly=0)) == {"2025-01-10 02:00", "2025-01-09 02:00",
                                                                 "2025-01-05 02:00"}


def test_several_backups_a_day_keep_the_newest_of_each_day():
    times = ["2025-03-04 01:00", "2025-03-04 12:00", "2025-03-04 23:00",
             "2025-03-05 01:00", "2025-03-05 12:00", "2025-03-05 23:00"]
    assert kept(times, Retention(daily=7, weekly=0, monthly=0)) == {"2025-03-04 23:00", "2025-03-05 23:00"}


def test_iso_weeks_across_new_year():
    # 2024-12-28 is in 2024-W52; 2024-12-30 and 2025-01-01 are both in 2025-W01; 2025-01-06 opens W02.
    times = ["2024-12-28 10:00", "2024-12-30 10:00", "2025-01-01 10:00", "2025-01-06 10:00"]
    assert kept(times, Retention(daily=0, weekly=3, monthly=0)) == {"2025-01-06 10:00", "2025-01-01 10:00",
                                                                 "2024-12-28 10:00"}


def test_month_ends():
    times = ["2025-01-31 23:59", "2025-02-01 00:00", "2025-02-28 23:59", "2025-03-01 00:00"]
    assert kept(times, Retention(daily=0, weekly=0, monthly=2)) == {"2025-03-01 00:00", "2025-02-28 23:59"}


def test_reasons_name_the_bucket():
    d = decide([t("2025-03-04 10:00")], Retention())
    assert d[0].reasons == ("daily 2025-03-04", "weekly 2025-W10", "monthly 2025-03")


def test_a_year_of_daily_backups_under_7_4_12():
    start = datetime(2025, 1, 1, 2, 0, tzinfo=timezone.utc)
    times = [(start + timedelta(days=i)).strftime("%Y-%m-%d %H:%M") for i in range(365)]
    expected = {
        # daily: the last 7 days
        "2025-12-25 02:00", "2025-12-26 02:00", "2025-12-27 02:00", "2025-12-28 02:00",
        "2025-12-29 02:00", "2025-12-30 02:00", "2025-12-31 02:00",
        # weekly: newest of 2026-W01 (Dec 31, already daily), W52 (Dec 28, daily), W51, W50
        "2025-12-21 02:00", "2025-12-14 02:00",
        # monthly: the last day of each month (Dec 31 already daily)
        "2025-11-30 02:00", "2025-10-31 02:00", "2025-09-30 02:00", "2025-08-31 02:00", "2025-07-31 02:00",
        "2025-06-30 02:00", "2025-05-31 02:00", "2025-04-30 02:00", "2025-03-31 02:00", "2025-02-28 02:00",
        "2025-01-31 02:00",
    }
    assert kept(times, Retention(7, 4, 12)) == expected


def test_pre_restore_snapshots_never_displace_regular_backups(tmp_path):
    layout = Layout(tmp_path / "root")
    layout.create()
    (layout.memories / "m.json").write_text('{"content": "x"}')
    regular = [create_backup(layout, now=t(f"2025-01-0{d} 02:00")) for d in range(1, 8)]
    pre = [create_backup(layout, kind="pre-restore", now=t(f"2025-01-07 1{h}:00")) for h in range(5)]
    plan = {i.backup.name: i.decision for i in plan_prune(layout.backups, Retention(7, 0, 0, pre_restore=3))}
    assert all(plan[b.name].keep for b in regular)
    assert [plan[b.name].keep for b in pre] == [False, False, True, True, True]
    # Only our naming pattern is ever a candidate.
    (layout.backups / "my-notes.tar.gz").write_text("not ours")
    assert "my-notes.tar.gz" not in {i.backup.name for i in plan_prune(layout.backups, Retention(0, 0, 0))}


def test_two_backups_in_one_second_get_distinct_names(tmp_path):
    layout = Layout(tmp_path / "root")
    layout.create()
    now = t("2025-01-01 00:00")
    a, b = create_backup(layout, now=now), create_backup(layout, now=now)
    assert a.name == "memory_backup_20250101_000000.tar.gz" and b.name == "memory_backup_20250101_000000_1.tar.gz"


def test_the_newest_backup_survives_a_policy_of_zeros(tmp_path):
    layout = Layout(tmp_path / "root")
    layout.create()
    old, new = create_backup(layout, now=t("2025-01-01 00:00")), create_backup(layout, now=t("2025-01-02 00:00"))
    plan = {i.backup.name: i.decision for i in plan_prune(layout.backups, Retention(0, 0, 0, pre_restore=0))}
    assert plan[new.name].keep and plan[new.name].reasons == ("newest backup",)
    assert not plan[old.name].keep


def test_a_reused_second_still_sorts_newest(tmp_path):
    """Found by schemathesis: after `_000000.tar.gz` was pruned, the next backup of that second reused the
    plain name and sorted before the older `_1`, so retention deleted the backup just made."""
    layout = Layout(tmp_path / "root")
    layout.create()
    now = t("2025-01-01 00:00")
    first, second = create_backup(layout, now=now), create_backup(layout, now=now)
    first.path.unlink()
    third = create_backup(layout, now=now)
    assert third.name == "memory_backup_20250101_000000_2.tar.gz"
    from memfs.backups import list_backups
    assert [b.name for b in list_backups(layout.backups)[0]] == [third.name, second.name]


def test_a_pre_restore_snapshot_younger_than_7_days_is_never_pruned(tmp_path):
    """Issue #11 finding 3: after a fourth restore, the next `backup --quiet` deleted the data from before
    the first restore without a word."""
    from memfs.backups import apply_prune, prune_messages

    layout = Layout(tmp_path / "root")
    layout.create()
    (layout.memories / "m.json").write_text('{"content": "x"}')
    now = t("2025-03-10 12:00")
    create_backup(layout, now=now - timedelta(hours=1))
    recent = [create_backup(layout, kind="pre-restore", now=now - timedelta(days=d)) for d in (1, 2, 3, 4)]
    plan = plan_prune(layout.backups, Retention(pre_restore=3), now=now)
    by_name = {i.backup.name: i.decision for i in plan}
    assert all(by_name[b.name].keep for b in recent)
    assert by_name[recent[-1].name].reasons == ("pre-restore younger than 7 days",)
    # Older than the window and beyond the count: pruned, and named as what it is.
    old = create_backup(layout, kind="pre-restore", now=now - timedelta(days=8))
    plan = plan_prune(layout.backups, Retention(pre_restore=3), now=now)
    deleted = apply_prune(plan)
    assert [b.name for b in deleted] == [old.name]
    assert prune_messages(deleted) == [f"pruned pre-restore snapshot {old.name} (the data replaced by a restore "
                                       "on 2025-03-02 12:00 UTC)"]
    # The window is configurable.
    plan = plan_prune(layout.backups, Retention(pre_restore_days=2, pre_restore=0), now=now)
    assert [i.decision.keep for i in plan if i.backup.kind == "pre-restore"] == [True, False, False, False]


def test_a_stray_named_like_a_backup_is_listed_as_one_and_never_a_candidate(tmp_path):
    """Issue #11 finding 1: an impossible date in a backup-like name killed every command."""
    from memfs.backups import apply_prune, scan_backup_dir

    layout = Layout(tmp_path / "root")
    layout.create()
    made = create_backup(layout, now=t("2025-01-01 00:00"))
    strays = {"memory_backup_20251340_250000.tar.gz": "impossible date 20251340_250000",
              "pre_restore_2025.tar.zst": "the name does not follow memory_backup_YYYYMMDD_HHMMSS[_N].tar.gz|zst[.age]",
              "memory_backup_20250101_000001.tar.gz": "not a regular file"}
    for name in strays:
        (layout.backups / name).mkdir() if "000001" in name else (layout.backups / name).write_text("x")
    found = scan_backup_dir(layout.backups)
    assert [b.name for b in found.backups] == [made.name]
    assert {s.name: s.reason for s in found.strays} == strays
    assert found.strays[0].describe().startswith("not a memfs backup (")
    assert apply_prune(plan_prune(layout.backups, Retention(0, 0, 0, pre_restore=0))) == []
    assert create_backup(layout, now=t("2025-01-02 00:00")).name == "memory_backup_20250102_000000.tar.gz"
    assert all((layout.backups / name).exists() for name in strays)
