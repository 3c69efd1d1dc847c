#!/bin/sh
# Daily backup at MEMFS_BACKUP_AT (UTC, HH:MM, default 02:00) with 7/4/12 retention, through the
# running server (MEMFS_URL). Failures go to stderr, so they show in `docker compose logs backup`.
set -u
at="${MEMFS_BACKUP_AT:-02:00}"
while :; do
    now=$(date -u +%s)
    next=$(date -u -d "today $at" +%s)
    [ "$next" -le "$now" ] && next=$(date -u -d "tomorrow $at" +%s)
    sleep $((next - now))
    if python /srv/memfs/manage_data.py backup --quiet --keep-daily 7 --keep-weekly 4 --keep-monthly 12; then
        echo "$(date -u +%FT%TZ) backup ok"
    else
        echo "$(date -u +%FT%TZ) backup FAILED (exit $?); see the message above" >&2
    fi
done
