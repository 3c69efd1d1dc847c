#!/usr/bin/env bash
# Command 2: set up and run the whole test suite (what .ci/run runs).
set -euo pipefail
cd "$(dirname "$0")/.."
# Three installs run side by side (each mostly waits on the network): this repo's venv
# (scripts/setup.sh), the Debian packages the tests drive for real, and mcp-memory-service's venv.
#
# Debian packages, one `apt-get update` for all of them, installed when missing and we are root;
# otherwise the tests that need them skip and say why:
# - rclone (off-site copies), openssh-server (an SFTP remote on 127.0.0.1), age (opens our encrypted
#   archives): the backup tests (issue #11);
# - chromium + chromium-driver: the web page's tests (issue #21);
# - docker.io, docker-compose, debootstrap (the base image): tests/test_docker.py (issue #23);
# - nodejs + npm: the MCP reference memory server (@modelcontextprotocol/server-memory, installed from
#   npm by tests/test_mcp_graph.py) that the knowledge-graph transcript is recorded against (issue #22).
missing=()
command -v rclone >/dev/null || missing+=(rclone)
command -v age >/dev/null || missing+=(age)
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v dockerd >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1 || missing+=(docker-compose)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
apt_pid=
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") >/dev/null \
            || echo "test.sh: could not install ${missing[*]}; the tests that drive them will skip" >&2 &
        apt_pid=$!
    else
        echo "test.sh: ${missing[*]} missing and not root: the tests that drive them will skip" >&2
    fi
fi
# mcp-memory-service in its own venv (issue #25): the round trip into its real importer
# (tests/test_peer_imports.py) skips, saying so, without it. Its venv needs a python that loads SQLite
# extensions (Debian's python3); the fixtures themselves are committed, so only the venv is made here.
mms_pid=
if [ ! -x /tmp/memfs-peers/mms-venv/bin/python ] && [ -x /usr/bin/python3 ]; then
    (/usr/bin/python3 -m venv /tmp/memfs-peers/mms-venv \
        && /tmp/memfs-peers/mms-venv/bin/pip install -q "mcp-memory-service==12.4.0") >/dev/null 2>&1 \
        || echo "test.sh: could not install mcp-memory-service; the round trip into its importer will skip" >&2 &
    mms_pid=$!
fi
scripts/setup.sh
for pid in $apt_pid $mms_pid; do wait "$pid" || true; done
# A Docker engine, started here with no default bridge and no iptables changes when none runs, and
# stopped at the end if we started it.
started_dockerd=
if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null && ! docker info >/dev/null 2>&1; then
    dockerd --bridge=none --iptables=false --ip6tables=false >/tmp/memfs-test-dockerd.log 2>&1 &
    started_dockerd=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
fi
stop_dockerd() {
    if [ -n "$started_dockerd" ]; then kill "$started_dockerd" 2>/dev/null && wait "$started_dockerd" 2>/dev/null; fi
    return 0
}
trap stop_dockerd EXIT
# Test files run on two workers side by side (pytest-xdist, --dist loadfile: a file's tests stay
# together, in order, in one worker, so module fixtures such as a shared owner are made once). Most of
# the suite's time is spent waiting on what the tests start (owners, servers, containers, a browser),
# not on the CPU. MEMFS_TEST_WORKERS=1 runs every file in this one process, one test at a time.
workers="${MEMFS_TEST_WORKERS:-2}"
if [ "$workers" = 1 ]; then dist=(-p no:xdist); else dist=(-n "$workers" --dist loadfile); fi
set +e
.venv/bin/python -m pytest "${dist[@]}" "$@"
code=$?
set -e
if [ "$code" -eq 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$code"
