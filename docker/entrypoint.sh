#!/bin/sh
# The container's command: create the layout if the volumes are empty, then serve.
# The token comes from MEMFS_API_TOKEN or from a file (MEMFS_API_TOKEN_FILE, e.g. a compose secret
# at /run/secrets/memfs_token): never from the image.
# The same script runs in tests (tests/test_docker.py) with the compose file's environment.
set -eu
. "$(dirname "$0")/token-env.sh"
memfs init >/dev/null
exec memfs serve --host "${MEMFS_HOST:-0.0.0.0}" --port "${MEMFS_PORT:-3000}" ${MEMFS_POLLING:+--polling}
