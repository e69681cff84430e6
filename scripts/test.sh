#!/usr/bin/env bash
# Runs the whole test suite: the Rust tests (unit, corpus, fake relay, fake
# PLC/DNS/HTTP servers, restart, bad input; loopback only, fixtures in
# tests/fixtures/), then the end-to-end suite against the reference PLC
# directory and two reference PDSes on loopback (tests/peers/suite.sh; it
# installs them from the npm registry and PostgreSQL from Debian's packages
# the first time). INSTANCEMAP_SKIP_PEERS=1 skips the second part.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo test --lib --bins --tests "$@"
if [ "${INSTANCEMAP_SKIP_PEERS:-0}" != 1 ]; then
    tests/peers/suite.sh
fi
