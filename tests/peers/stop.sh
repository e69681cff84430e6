#!/usr/bin/env bash
# Stops the peers that start.sh started (the pids listed in STATE_DIR/pids),
# then removes STATE_DIR (data, logs, peers.json) unless INSTANCEMAP_PEERS_KEEP=1.
# Usage: tests/peers/stop.sh STATE_DIR   (or $INSTANCEMAP_PEERS_STATE)
set -euo pipefail

state="${1:-${INSTANCEMAP_PEERS_STATE:-}}"
[ -n "$state" ] || { echo "usage: stop.sh STATE_DIR" >&2; exit 2; }
[ -d "$state" ] || exit 0
log() { echo "peers/stop: $*" >&2; }

# Only signal a pid that is still the process we started (pids get reused).
ours() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -qE 'launch\.mjs|postgres'; }

if [ -f "$state/pids" ]; then
    # Node services first (SIGTERM: clean shutdown), postgres last (SIGINT: fast shutdown).
    pids=()
    while read -r name pid; do
        [ -n "${pid:-}" ] && ours "$pid" || continue
        if [ "$name" = postgres ]; then continue; fi
        kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    done <"$state/pids"
    wait_gone() { # wait_gone PID...: up to 10 s, then SIGKILL
        for _ in $(seq 1 50); do
            local alive=0
            for p in "$@"; do ours "$p" && alive=1; done
            [ $alive = 0 ] && return 0
            sleep 0.2
        done
        for p in "$@"; do ours "$p" && { log "killing $p"; kill -KILL "$p" 2>/dev/null || true; }; done
    }
    [ ${#pids[@]} = 0 ] || wait_gone "${pids[@]}"
    pg="$(awk '$1 == "postgres" { print $2 }' "$state/pids")"
    if [ -n "$pg" ] && ours "$pg"; then
        kill -INT "$pg" 2>/dev/null || true
        wait_gone "$pg"
    fi
fi

if [ "${INSTANCEMAP_PEERS_KEEP:-0}" = 1 ]; then
    rm -f "$state/pids"
    log "stopped; kept $state"
else
    rm -rf "$state"
    log "stopped; removed $state"
fi
