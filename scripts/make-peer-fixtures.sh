#!/usr/bin/env bash
# Install each peer memfs imports from (issue #25) from its own registry, have the peer's own code write
# a small store, and record it under tests/fixtures/peers/ with the versions that wrote it (README.md
# there). Re-run it when a peer ships a new format; the import tests read these files.
#
#   scripts/make-peer-fixtures.sh            # every peer
#   scripts/make-peer-fixtures.sh kg mms     # some: kg, mms, cf3, cf2
#
# Peers are installed under $PEERS (default /tmp/memfs-peers), never into the project. A peer that cannot
# be installed or run here is reported, and its fixtures are left as they were.
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
OUT="$ROOT/tests/fixtures/peers"
PEERS="${PEERS:-/tmp/memfs-peers}"
PY="${PY:-$ROOT/.venv/bin/python}"; [ -x "$PY" ] || PY="$(command -v python3)"
KG_VERSION="${KG_VERSION:-2026.8.31}"
MMS_VERSION="${MMS_VERSION:-12.4.0}"
CF3_VERSION="${CF3_VERSION:-3.43.0}"
CF2_VERSION="${CF2_VERSION:-2.7.47}"
mkdir -p "$OUT" "$PEERS"
WANT="${*:-kg mms cf3 cf2}"
FAILED=()

note() { echo "== $*" >&2; }
versions() { echo "$1: $2" >> "$OUT/.versions.new"; }

npm_peer() {  # npm_peer DIR PACKAGE@VERSION
    mkdir -p "$PEERS/$1"
    (cd "$PEERS/$1" && [ -d "node_modules/${2%@*}" ] && grep -q "\"version\": \"${2##*@}\"" "node_modules/${2%@*}/package.json") \
        || (cd "$PEERS/$1" && npm install --no-audit --no-fund "$2" >"$PEERS/$1.log" 2>&1)
}

make_kg() {
    note "MCP reference memory server @modelcontextprotocol/server-memory@$KG_VERSION (npm, run under node)"
    npm_peer kg "@modelcontextprotocol/server-memory@$KG_VERSION" || return 1
    rm -f "$OUT/kg-memory.jsonl"
    "$PY" "$ROOT/scripts/peers/kg_write.py" \
        "$PEERS/kg/node_modules/@modelcontextprotocol/server-memory/dist/index.js" "$OUT/kg-memory.jsonl" || return 1
    versions "kg-memory.jsonl" "@modelcontextprotocol/server-memory $KG_VERSION, node $(node --version)"
}

make_mms() {
    # Its sqlite-vec backend loads a SQLite extension: the venv needs a python built with extension
    # loading (Debian's /usr/bin/python3 is; pyenv's usually is not).
    note "mcp-memory-service==$MMS_VERSION (PyPI, own venv $PEERS/mms-venv)"
    local base="${MMS_PYTHON:-/usr/bin/python3}"
    "$base" -c "import sqlite3; sqlite3.connect(':memory:').enable_load_extension(True)" || {
        note "$base cannot load SQLite extensions; set MMS_PYTHON to one that can"; return 1; }
    [ -x "$PEERS/mms-venv/bin/python" ] || "$base" -m venv "$PEERS/mms-venv" || return 1
    "$PEERS/mms-venv/bin/python" -c "import mcp_memory_service" 2>/dev/null \
        || "$PEERS/mms-venv/bin/pip" install -q "mcp-memory-service==$MMS_VERSION" || return 1
    local tmp; tmp="$(mktemp -d)"
    # No ML extra (torch) here: the service's own hash-embedding fallback makes its vectors, so they are
    # NOT all-MiniLM-L6-v2's (memfs must notice and re-embed). Its own warning says so.
    MCP_MEMORY_ALLOW_HASH_EMBEDDINGS=1 MCP_MEMORY_USE_ONNX=0 HF_HUB_OFFLINE=1 \
        "$PEERS/mms-venv/bin/python" "$ROOT/scripts/peers/mms_write.py" "$tmp" || return 1
    "$PY" - "$tmp/sqlite_vec.db" <<'PY' || return 1
import sqlite3, sys
db = sqlite3.connect(sys.argv[1]); db.execute("VACUUM"); db.close()  # smaller, same rows
PY
    cp "$tmp/sqlite_vec.db" "$OUT/mms-sqlite_vec.db"
    sed "s#$tmp#/tmp/mms#g" "$tmp/mms_export.json" > "$OUT/mms-export.json"
    rm -rf "$tmp"
    versions "mms-sqlite_vec.db, mms-export.json" "mcp-memory-service $MMS_VERSION (hash-embedding fallback), python $("$PEERS/mms-venv/bin/python" -V 2>&1)"
}

cf() { (cd "$1" && shift && timeout 300 "$CF" "$@" </dev/null >>"$LOG" 2>&1); }

make_cf3() {
    note "claude-flow@$CF3_VERSION (npm)"
    npm_peer cf3 "claude-flow@$CF3_VERSION" || return 1
    CF="$PEERS/cf3/node_modules/.bin/claude-flow"; LOG="$PEERS/cf3-run.log"; : >"$LOG"
    # Its AgentDB bridge needs a second native better-sqlite3 (agentdb's own); without it, its sql.js
    # fallback keeps writes in memory only. CLAUDE_FLOW_DISABLE_BRIDGE=1 is claude-flow's own switch to
    # its direct writer (memory-initializer.js), which writes .swarm/memory.db itself.
    export CLAUDE_FLOW_DISABLE_BRIDGE=1
    local p="$PEERS/cf3-project"; rm -rf "$p"; mkdir -p "$p"
    cf "$p" memory init || return 1
    cf "$p" memory store -k auth/decision --value "We use OAuth2 with PKCE for the mobile app" -n architecture --tags auth,mobile
    cf "$p" memory store -k task/42 --value '{"status": "done", "owner": "coder-1", "big": 123456789012}' -n tasks
    cf "$p" memory store -k cache/warm --value "Warm the CDN cache before the launch" --ttl 31536000
    cf "$p" memory store -k notes/pipes --value "A note whose key has | in it" -n "team|a" --tags "x|y"
    cf "$p" memory store -k session/tmp --value "scratch notes for one session" -n sessions
    cf "$p" memory store -k pattern/retry --value "Retry with exponential backoff and jitter" -n patterns --provenance agent_output
    cf "$p" memory retrieve -k auth/decision -n architecture
    cf "$p" memory retrieve -k auth/decision -n architecture
    cf "$p" memory delete -k session/tmp -n sessions -f
    cf "$p" memory export -o "$p/export.json"
    "$PY" - "$p/.swarm/memory.db" <<'PY' || { note "claude-flow $CF3_VERSION wrote no rows to .swarm/memory.db (see $LOG)"; return 1; }
import sqlite3, sys
n = sqlite3.connect(sys.argv[1]).execute("SELECT count(*) FROM memory_entries").fetchone()[0]
sys.exit(0 if n >= 5 else 1)
PY
    cp "$p/.swarm/memory.db" "$OUT/claude-flow-3.memory.db"
    [ -s "$p/export.json" ] && cp "$p/export.json" "$OUT/claude-flow-3.export.json"
    versions "claude-flow-3.memory.db, claude-flow-3.export.json" "claude-flow $CF3_VERSION, node $(node --version)"
}

make_cf2() {
    note "claude-flow@$CF2_VERSION (npm)"
    npm_peer cf2 "claude-flow@$CF2_VERSION" || return 1
    CF="$PEERS/cf2/node_modules/.bin/claude-flow"; LOG="$PEERS/cf2-run.log"; : >"$LOG"
    local p="$PEERS/cf2-project"; rm -rf "$p"; mkdir -p "$p"
    cf "$p" memory store auth/decision "We use OAuth2 with PKCE for the mobile app" --namespace architecture
    cf "$p" memory store task/42 '{"status": "done", "owner": "coder-1"}' --namespace tasks
    cf "$p" memory store cache/warm "Warm the CDN cache before the launch"
    cf "$p" memory query OAuth2
    local db; db="$(ls "$p/.swarm/memory.db" 2>/dev/null)"
    [ -n "$db" ] || { note "claude-flow $CF2_VERSION wrote no .swarm/memory.db (see $LOG)"; return 1; }
    cp "$db" "$OUT/claude-flow-2.memory.db"
    versions "claude-flow-2.memory.db" "claude-flow $CF2_VERSION, node $(node --version)"
}

: >"$OUT/.versions.new"
for peer in $WANT; do
    if ! "make_$peer"; then FAILED+=("$peer"); note "FAILED: $peer (its fixtures were left as they were)"; fi
done
# Keep the versions of the peers not re-made this time.
[ -f "$OUT/VERSIONS" ] && grep -v -F -f <(cut -d: -f1 "$OUT/.versions.new") "$OUT/VERSIONS" >> "$OUT/.versions.new"
sort -o "$OUT/VERSIONS" "$OUT/.versions.new"; rm -f "$OUT/.versions.new"
cat "$OUT/VERSIONS"
[ ${#FAILED[@]} -eq 0 ] || { note "peers that could not be installed or run here: ${FAILED[*]}"; exit 1; }
