#!/usr/bin/env bash
# Command 2: set up and run the whole test suite (what .ci/run runs).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Tools the backup tests drive for real (issue #11): rclone (off-site copies), sshd (an SFTP remote on
# 127.0.0.1), age (opens our encrypted archives). Installed when missing and we may; otherwise the
# tests that need them skip and say why.
# The web page's tests (issue #21) drive Debian's headless chromium through chromium-driver.
if ! command -v rclone >/dev/null || ! command -v age >/dev/null || ! [ -x /usr/sbin/sshd ] \
        || ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone openssh-server age \
            chromium chromium-driver) \
            >/dev/null || echo "test.sh: could not install rclone/openssh-server/age/chromium; their tests will skip" >&2
    else
        echo "test.sh: rclone, age or sshd missing and not root: the off-site/encryption interop tests will skip" >&2
    fi
fi
# mcp-memory-service in its own venv (issue #25): the round trip into its real importer
# (tests/test_peer_imports.py) skips, saying so, without it. Its venv needs a python that loads SQLite
# extensions (Debian's python3); the fixtures themselves are committed, so only the venv is made here.
if [ ! -x /tmp/memfs-peers/mms-venv/bin/python ] && [ -x /usr/bin/python3 ]; then
    (/usr/bin/python3 -m venv /tmp/memfs-peers/mms-venv \
        && /tmp/memfs-peers/mms-venv/bin/pip install -q "mcp-memory-service==12.4.0") >/dev/null 2>&1 \
        || echo "test.sh: could not install mcp-memory-service; the round trip into its importer will skip" >&2
fi
# A Docker engine for tests/test_docker.py (issue #23): Debian's docker.io (+ Compose v1, debootstrap
# for the base image), started here with no default bridge and no iptables changes when none runs,
# and stopped at the end if we started it. Without root the engine tests skip and say why.
started_dockerd=
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null \
        || { ! command -v docker-compose >/dev/null && ! docker compose version >/dev/null 2>&1; }; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap) \
            >/dev/null || echo "test.sh: could not install docker.io/docker-compose/debootstrap; the engine tests will skip" >&2
    fi
    if command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
        dockerd --bridge=none --iptables=false --ip6tables=false >/tmp/memfs-test-dockerd.log 2>&1 &
        started_dockerd=$!
        for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    fi
fi
stop_dockerd() {
    if [ -n "$started_dockerd" ]; then kill "$started_dockerd" 2>/dev/null && wait "$started_dockerd" 2>/dev/null; fi
    return 0
}
trap stop_dockerd EXIT
# node + npm run the MCP reference memory server (@modelcontextprotocol/server-memory, installed from npm
# by tests/test_mcp_graph.py) that the knowledge-graph transcript is recorded against (issue #22).
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm) \
            >/dev/null || echo "test.sh: could not install nodejs/npm; the reference-server transcript test will skip" >&2
    else
        echo "test.sh: node or npm missing and not root: the reference-server transcript test will skip" >&2
    fi
fi
set +e
.venv/bin/python -m pytest "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$code"
