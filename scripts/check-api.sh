#!/usr/bin/env bash
# Checks the query API and the exports on a database built with the CLI
# (replay of the reference-PDS frames, backfill-plc of the PLC export
# fixture and of a synthetic export of a few thousand accounts, recluster):
# - the Parquet export read with pyarrow and DuckDB (row counts against the
#   NDJSON export, documented columns and types, joins that must agree);
# - the API's answers against the export of the same database;
# - Schemathesis against `instancemap serve`'s /openapi.json: no 5xx,
#   documented status codes, response bodies and content types, 405 for
#   other methods; the admin procedure on a server with a token.
# Python tools (pinned) in a virtualenv under /var/tmp/instancemap-pytools,
# reused between runs. Loopback only. Prints "N passed, M failed".
#
# Known disagreements between /openapi.json and the server (check_api.py's
# DOC_GAPS and KNOWN; `scripts/check-api.sh --strict` shows them):
# - no operation documents 414, which every request longer than 4096
#   characters gets (patched in the fuzzed copy of the document);
# - admin.refreshAccount is documented on every server but served only with
#   --admin-token (otherwise POST answers 501 MethodNotImplemented), and on
#   `serve` (read-only) it can only answer 401 or 501 (excluded without a
#   token; fuzzed with one, without the no-5xx check);
# - positive_data_acceptance: `subject`, `did`, `at`, `from`, `to` and
#   `cursor` are documented as any string up to 2,048 characters, and the
#   server answers 400 to most (they must be a DID/handle/at:// URI, a DID,
#   a date, a cursor it issued);
# - negative_data_rejection: minMembers above 2^63-1 and cursors longer than
#   2,048 characters (leading zeros) are accepted, and a request made long
#   enough gets 414, which Schemathesis does not count as a rejection.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/instancemap-target}"

fail() { echo "check-api: $*" >&2; echo "0 passed, 1 failed"; exit 1; }

tools="${INSTANCEMAP_PYTOOLS:-/var/tmp/instancemap-pytools}"
venv="$tools/venv"
# Pinned: the versions these checks were written against.
py=(schemathesis==4.32.5 pyarrow==26.0.1 duckdb==2.0.1)
stamp="$venv/.check-api-$(echo "${py[*]}" | sha256sum | cut -c1-12)"
if [ ! -e "$stamp" ]; then
    echo "check-api: installing ${py[*]} (PyPI) into $venv" >&2
    python3 -m venv "$venv" || fail "could not create a virtualenv in $venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "${py[@]}" >/dev/null 2>&1 ||
        fail "could not install ${py[*]}"
    touch "$stamp"
fi
scripts/setup.sh
cargo build --quiet --bin instancemap || fail "build failed"
exec "$venv/bin/python" scripts/check_api.py --bin "$CARGO_TARGET_DIR/debug/instancemap" \
    --schemathesis "$venv/bin/schemathesis" "$@"
