#!/usr/bin/env bash
# Builds instancemap (release) and runs `instancemap run` on the embedded
# RocksDB default (./instancemap-db), following wss://bsky.network unless
# --relay or INSTANCEMAP_RELAY says otherwise. Extra arguments go to `run`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --release --bin instancemap -- run "$@"
