#!/usr/bin/env bash
# Peer benchmark: firehose frame decoding throughput (frames/s, single thread) of the
# Python atproto SDK and of raw libipld, over the repo's frame-log fixtures.
# Sets up a virtualenv with pinned versions, then runs decode_peers.py; arguments
# are passed through (--reference-pds PATH, --jetstream PATH, --json OUT, --reps N,
# --min-time S). Run from anywhere, e.g. `bash benches/peers/run.sh --json out.json`.
set -euo pipefail

ATPROTO_VERSION=0.0.73
LIBIPLD_VERSION=3.5.0
PYDANTIC_VERSION=2.14.4 # the SDK's model layer; pinned for comparable figures

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${TMPDIR:-/tmp}/instancemap-peers-venv"

[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    "atproto==$ATPROTO_VERSION" "libipld==$LIBIPLD_VERSION" "pydantic==$PYDANTIC_VERSION"

exec "$venv/bin/python" "$here/decode_peers.py" "$@"
