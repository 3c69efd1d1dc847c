#!/bin/sh
# Backups through the running server (MEMFS_URL) with 7/4/12 retention: daily at MEMFS_BACKUP_AT
# (UTC, HH:MM, default 02:00), or every MEMFS_BACKUP_EVERY seconds when that is set (tests; short
# schedules). Failures go to stderr, so they show in `docker compose logs backup`.
set -u
. "$(dirname "$0")/token-env.sh"
at="${MEMFS_BACKUP_AT:-02:00}"
every="${MEMFS_BACKUP_EVERY:-}"
while :; do
    if [ -n "$every" ]; then
        sleep "$every"
    else
        now=$(date -u +%s)
        next=$(date -u -d "today $at" +%s)
        [ "$next" -le "$now" ] && next=$(date -u -d "tomorrow $at" +%s)
        sleep $((next - now))
    fi
    if python /srv/memfs/manage_data.py backup --quiet --keep-daily 7 --keep-weekly 4 --keep-monthly 12; then
        echo "$(date -u +%FT%TZ) backup ok"
    else
        echo "$(date -u +%FT%TZ) backup FAILED (exit $?); see the message above" >&2
    fi
done
