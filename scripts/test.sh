#!/usr/bin/env bash
# Runs the whole test suite (unit, corpus, fake relay, restart, bad input).
# Tests reach only loopback; fixtures are in tests/fixtures/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo test --lib --bins --tests "$@"
