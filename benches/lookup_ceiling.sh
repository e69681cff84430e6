#!/usr/bin/env bash
# The lookup against its ceiling, side by side in one run (benches/README.md,
# "Query API load"): `instancemap serve --rate-limit 0` on the api_load
# bench's store, and nginx serving one lookup answer of that store as a
# static file (the fastest an HTTP server here can answer that many bytes),
# each measured by wrk (closed loop) and by the api_load client (closed loop
# and open loop at fixed rates, latency from the scheduled send time).
#
# Installs what it needs that a fresh machine lacks: Debian's nginx-light
# and wrk (apt-get; as root, or through sudo).
#
# Usage: benches/lookup_ceiling.sh
# Env:   INSTANCEMAP_BENCH_DB        the store (default /var/tmp/apiload-1m; built once)
#        INSTANCEMAP_BENCH_ACCOUNTS  its size (default 1000000)
#        CONNS                       closed-loop connections (default 8)
#        RATES                       open-loop rates, requests/s (default "2000 5000 10000")
#        RUN_SECONDS                 per run (default 10)
#        CARGO_TARGET_DIR            as for cargo
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
db="${INSTANCEMAP_BENCH_DB:-/var/tmp/apiload-1m}"
accounts="${INSTANCEMAP_BENCH_ACCOUNTS:-1000000}"
conns="${CONNS:-8}"
rates="${RATES:-2000 5000 10000}"
seconds="${RUN_SECONDS:-10}"
target="${CARGO_TARGET_DIR:-$repo/target}"
work="$(mktemp -d /tmp/lookup-ceiling.XXXXXX)"
chmod 755 "$work" # nginx's workers (not root) read the file under it
log() { echo "lookup_ceiling: $*" >&2; }

need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    sudo_=""
    [ "$(id -u)" = 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq "${need[@]}"
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"

pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT

cd "$repo"
log "building (release)"
cargo build --release --bin instancemap -q
bench_bin() { ls -t "$target"/release/deps/api_load-* 2>/dev/null | grep -v '\.d$' | head -n 1; }
cargo bench --bench api_load --no-run -q 2>/dev/null
load="$(bench_bin)"
[ -x "$load" ] || { log "no api_load bench binary"; exit 1; }

# the store (the bench builds it once; a short run)
INSTANCEMAP_BENCH_DB="$db" INSTANCEMAP_BENCH_ACCOUNTS="$accounts" INSTANCEMAP_BENCH_CONNECTIONS=1 \
    INSTANCEMAP_BENCH_SECONDS=1 "$load" --bench >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p_serve=$(free_port)
"$target/release/instancemap" serve --db "$db" --listen "127.0.0.1:$p_serve" --rate-limit 0 >"$work/serve.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$p_serve/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
# serve reads the lookup's families into its block cache when they fit:
# measured once that is done (steady state)
for _ in $(seq 1 600); do grep -q "block cache" "$work/serve.log" && break; sleep 0.5; done
log "$(grep -o 'block cache.*' "$work/serve.log" | sed 's/\x1b\[[0-9;]*m//g')"

# one answer of the store as nginx's file: did(12345) of the bench
did="did:plc:aaaaaaaaaaaa$(python3 -c '
n=12345; b="abcdefghijklmnopqrstuvwxyz234567"; t=""
for _ in range(12): t=b[n%32]+t; n//=32
print(t)')"
mkdir -p "$work/root"
curl -sf "http://127.0.0.1:$p_serve/xrpc/dev.instancemap.lookup?subject=$did" >"$work/root/lookup.json"
bytes=$(wc -c <"$work/root/lookup.json")
p_nginx=$(free_port)
cat >"$work/nginx.conf" <<EOF
daemon off;
worker_processes auto;
pid $work/nginx.pid;
error_log $work/nginx.err error;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $work/tmp;
    proxy_temp_path $work/tmp;
    fastcgi_temp_path $work/tmp;
    uwsgi_temp_path $work/tmp;
    scgi_temp_path $work/tmp;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$p_nginx;
        root $work/root;
        location / { default_type application/json; }
    }
}
EOF
mkdir -p "$work/tmp"
"$nginx_bin" -c "$work/nginx.conf" -p "$work" &
pids+=($!)
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$p_nginx/lookup.json" >/dev/null 2>&1 && break; sleep 0.1; done

echo "lookup ceiling: $accounts accounts, answer $bytes bytes, $seconds s per run, $(nproc) cores, $(date -u +%FT%TZ)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
wrk_run() { # name url [script]
    local out
    if [ -n "${3:-}" ]; then
        out=$(ACCOUNTS=$accounts wrk -t1 -c"$conns" -d"${seconds}s" --latency -s "$3" "$2")
    else
        out=$(wrk -t1 -c"$conns" -d"${seconds}s" --latency "$2")
    fi
    echo "$out" >"$work/wrk-$1.txt"
    if grep -q "Non-2xx" <<<"$out"; then
        log "$1: answers that are not 200: $(grep Non-2xx <<<"$out")"
        exit 1
    fi
    local rps p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    printf '%-8s wrk -t1 -c%-3s %12s req/s   p99 %s\n' "$1" "$conns" "$rps" "$p99"
    echo "$rps" >"$work/rps-$1"
}
wrk_run serve "http://127.0.0.1:$p_serve" "$repo/benches/wrk/lookup.lua"
wrk_run nginx "http://127.0.0.1:$p_nginx/lookup.json"
python3 -c "print(f'ratio serve / nginx (wrk): {float(open(\"$work/rps-serve\").read()) / float(open(\"$work/rps-nginx\").read()):.2f}')"

client() { # name addr [path] [rate]
    env INSTANCEMAP_BENCH_TARGET="$2" ${3:+INSTANCEMAP_BENCH_PATH="$3"} INSTANCEMAP_BENCH_RATE="${4:-0}" \
        INSTANCEMAP_BENCH_CONNECTIONS="$conns" INSTANCEMAP_BENCH_SECONDS="$seconds" \
        INSTANCEMAP_BENCH_ACCOUNTS="$accounts" "$load" --bench | sed "s/^/$1 ${4:+@$4\/s }/"
}
client serve "127.0.0.1:$p_serve"
client nginx "127.0.0.1:$p_nginx" /lookup.json
for r in $rates; do
    client serve "127.0.0.1:$p_serve" "" "$r" | tail -n 1
    client nginx "127.0.0.1:$p_nginx" /lookup.json "$r" | tail -n 1
done
log "logs in $work"
