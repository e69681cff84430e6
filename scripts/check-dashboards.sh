#!/usr/bin/env bash
# Checks dashboards/*.json against a real Prometheus (Debian's package,
# installed when missing; its own service is not used) scraping a real
# `instancemap run` fed recorded frames by a loopback relay. Every panel
# query must be valid and return series; every metric name must be in
# NAMES (src/metrics.rs). Prints "N passed, M failed"; non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/instancemap-target}"

fail() { echo "check-dashboards: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

if ! command -v prometheus >/dev/null 2>&1; then
    echo "check-dashboards: installing prometheus (Debian package)" >&2
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null 2>&1 ||
        { $sudo apt-get update -qq && $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null; } ||
        fail "could not install prometheus"
fi
scripts/setup.sh
cargo build --quiet --bin instancemap || fail "build failed"
exec python3 scripts/check_dashboards.py --bin "$CARGO_TARGET_DIR/debug/instancemap" --prometheus "$(command -v prometheus)" "$@"
