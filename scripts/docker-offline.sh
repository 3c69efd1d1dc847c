#!/usr/bin/env bash
# Build the memfs image without an image registry (issue #23): the base image from Debian's packages
# (debootstrap bookworm + python3 + python3-venv, `docker import`), the Python packages from a
# wheelhouse built with this host's pip (its index settings decide where the CPU torch comes from).
# Both are cached in $MEMFS_DOCKER_CACHE (default /var/cache/memfs-docker, ~/.cache/memfs-docker when
# not root) and reused; only the memfs layers are rebuilt when the code changes.
#
#   scripts/docker-offline.sh [IMAGE]          (default memfs:latest)
#
# Needs: docker (an engine running), debootstrap (root) for the first run, and a Python with pip
# ($PYTHON, default .venv/bin/python). The build runs on the host network (the wheelhouse is served
# on 127.0.0.1 while it runs); nothing else is fetched.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-memfs:latest}"
base="${MEMFS_BASE_IMAGE:-memfs-base:bookworm}"
if [ "$(id -u)" = 0 ]; then default_cache=/var/cache/memfs-docker; else default_cache="$HOME/.cache/memfs-docker"; fi
cache="${MEMFS_DOCKER_CACHE:-$default_cache}"
python="${PYTHON:-.venv/bin/python}"
mkdir -p "$cache/wheels"
say() { echo "docker-offline: $*" >&2; }

# 1. The base image: Debian bookworm minbase with python3 and a venv at /opt/venv on PATH (pip
#    installs there, as it does into /usr/local on python:3.11-slim).
# Built under umask 022 whatever the caller's: the image runs as uid 1000, which must read and run
# what root installs (under 077, /opt/venv was 0700 and the container found no python).
if ! docker image inspect "$base" >/dev/null 2>&1; then
    if [ ! -f "$cache/base-rootfs.tar" ]; then
        umask 022
        say "debootstrap bookworm (once; a few minutes)"
        rootfs="$cache/rootfs.tmp"
        rm -rf "$rootfs"
        nice debootstrap --variant=minbase --include=python3,python3-venv bookworm "$rootfs" \
            "${DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$cache/debootstrap.log" 2>&1 \
            || { say "debootstrap failed; see $cache/debootstrap.log"; exit 3; }
        chroot "$rootfs" /usr/bin/python3 -m venv /opt/venv
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
               "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
        tar -C "$rootfs" --numeric-owner -cf "$cache/base-rootfs.tar.partial" .
        mv "$cache/base-rootfs.tar.partial" "$cache/base-rootfs.tar"
        rm -rf "$rootfs"
    fi
    say "importing $base from $cache/base-rootfs.tar"
    docker import --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$cache/base-rootfs.tar" "$base" >/dev/null
fi

# 2. The wheelhouse: every pinned dependency (and setuptools to build memfs), for this Python.
reqs="$cache/requirements.txt"
"$python" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"] + ["setuptools>=68", "wheel"]))' >"$reqs.new"
if ! cmp -s "$reqs.new" "$cache/wheels/.requirements"; then
    say "building the wheelhouse in $cache/wheels (once per change of dependencies)"
    (cd /tmp && nice "$python" -m pip wheel -q --find-links "$cache/wheels" -r "$reqs.new" -w "$cache/wheels") \
        2> >(grep -v "^WARNING: Location" >&2)
    cp "$reqs.new" "$cache/wheels/.requirements"
fi

# 3. The image, from docker/Dockerfile with the base and the wheelhouse (served on loopback meanwhile).
# A fixed port: the classic builder keys its layer cache on the build arguments a RUN sees, so a new
# port each time would reinstall every dependency on every build.
port="${MEMFS_WHEELHOUSE_PORT:-52745}"
if ! "$python" -c "import socket, sys; socket.create_server(('127.0.0.1', int(sys.argv[1]))).close()" "$port" 2>/dev/null; then
    say "port $port on 127.0.0.1 is in use; set MEMFS_WHEELHOUSE_PORT to a free one (a new port rebuilds the dependency layer once)"
    exit 3
fi
"$python" -m http.server --bind 127.0.0.1 --directory "$cache/wheels" "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
say "building $image on $base"
DOCKER_BUILDKIT=0 nice docker build -q --network host -f docker/Dockerfile -t "$image" \
    --build-arg BASE="$base" --build-arg PIP_NO_INDEX=1 \
    --build-arg PIP_FIND_LINKS="http://127.0.0.1:$port/" . >/dev/null
say "built $image ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
