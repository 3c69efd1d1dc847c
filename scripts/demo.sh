#!/usr/bin/env bash
# Command 1: from a fresh clone, set up, create ./memory-system with sample memories, and search it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export MEMFS_ROOT="${MEMFS_ROOT:-./memory-system}"
memfs=.venv/bin/memfs
$memfs init
# Sample memories are dropped in as files, the way a person or a script would.
mkdir -p "$MEMFS_ROOT/data/memories/examples"
cp -n examples/memories/*.json "$MEMFS_ROOT/data/memories/examples/"
$memfs reindex
$memfs add "The on-call rotation changes every Monday at 09:00 UTC" --tag ops --tag oncall
echo; echo '$ memfs search "what colour scheme does the user like" -k 3'
$memfs search "what colour scheme does the user like" -k 3
echo; echo '$ memfs search E4417 --mode keyword'
$memfs search E4417 --mode keyword
echo; echo '$ memfs stats'
$memfs stats
