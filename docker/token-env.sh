# Sourced by entrypoint.sh and backup-loop.sh: MEMFS_API_TOKEN from MEMFS_API_TOKEN_FILE when that is set.
if [ -n "${MEMFS_API_TOKEN_FILE:-}" ]; then
    if ! MEMFS_API_TOKEN=$(cat "$MEMFS_API_TOKEN_FILE"); then
        echo "cannot read the token file $MEMFS_API_TOKEN_FILE (MEMFS_API_TOKEN_FILE); mount it readable by uid 1000" >&2
        exit 3
    fi
    export MEMFS_API_TOKEN
fi
[ -n "${MEMFS_API_TOKEN:-}" ] || unset MEMFS_API_TOKEN
