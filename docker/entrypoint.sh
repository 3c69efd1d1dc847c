#!/bin/sh
# The container's command: create the layout if the volumes are empty, then serve.
# The same script runs in tests (tests/test_docker.py) with the compose file's environment.
set -eu
memfs init >/dev/null
exec memfs serve --host "${MEMFS_HOST:-0.0.0.0}" --port "${MEMFS_PORT:-3000}" ${MEMFS_POLLING:+--polling}
