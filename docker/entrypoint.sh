#!/bin/sh
# The container's command: create the layout if the volumes are empty, then serve.
# The token comes from MEMFS_API_TOKEN or from a file (MEMFS_API_TOKEN_FILE, e.g. a compose secret
# at /run/secrets/memfs_token): never from the image.
# The same script runs in tests (tests/test_docker.py) with the compose file's environment.
set -eu
. "$(dirname "$0")/token-env.sh"
for dir in "${MEMFS_ROOT:-/opt/memory-system}/data" "${MEMFS_ROOT:-/opt/memory-system}/backups"; do
    # Docker creates a missing host folder as root: say so instead of a PermissionError traceback.
    if [ -d "$dir" ] && ! [ -w "$dir" ]; then
        echo "$dir is not writable by uid $(id -u): on the host, chown -R 1000:1000 the folder mounted there (docs/deployment.md step 1)" >&2
        exit 3
    fi
done
memfs init >/dev/null
exec memfs serve --host "${MEMFS_HOST:-0.0.0.0}" --port "${MEMFS_PORT:-3000}" ${MEMFS_POLLING:+--polling}
