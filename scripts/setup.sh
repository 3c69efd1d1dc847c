#!/usr/bin/env bash
# Create .venv and install memfs with its dev extras. Safe to run again: skips work already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.memfs-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    # torch==2.13.0 is pinned in pyproject.toml: the CPU build, not a multi-GB CUDA one.
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    touch "$stamp"
fi
