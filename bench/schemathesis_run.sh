#!/usr/bin/env bash
# Property-based API test (issue 5): schemathesis against the served OpenAPI schema, checking that no
# request, however odd, gets a server error (5xx). Run: bench/schemathesis_run.sh [max-examples=25]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(mktemp -d)
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
MEMFS_ROOT="$root" .venv/bin/memfs serve --port "$port" 2>"$root/serve.log" &
pid=$!
trap 'kill -TERM $pid; wait $pid; rm -rf "$root"' EXIT
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$port/health" >/dev/null && break; sleep 0.2; done
.venv/bin/schemathesis run "http://127.0.0.1:$port/openapi.json" --checks not_a_server_error \
    --max-examples "${1:-25}" --workers 1
